"""HPACK (RFC 7541) for the native gRPC server: a decoder built for speed, a tiny encoder.

Why not the ``hpack`` package's ``Decoder``: it costs tens of microseconds per
header block in pure Python, more than the rest of a request's transport work.
This decoder keeps names and values as ``str`` (latin-1, so a length in
characters is a length in bytes, which the table-size arithmetic needs) and
reports whether a block changed the dynamic table; a block that did not can be
cached by the connection, keyed by its bytes and the table's generation.
Huffman-coded strings go through ``hpack``'s table-driven decoder, with a small
bounded cache because clients repeat the same values.

The encoder writes literals without indexing only (§6.2.2): responses never
touch the client's dynamic table, so there is no encoder state to keep.
"""

from __future__ import annotations

from collections import deque

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman

__all__ = ["Decoder", "HeaderBomb", "HpackError", "integer", "literal", "literal_value"]

Header = tuple[str, str]

# RFC 7541 Appendix A.
STATIC_TABLE: tuple[Header, ...] = (
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
)
_STATIC_SIZE = len(STATIC_TABLE)
#: Entry overhead in the table-size accounting (§4.1).
_ENTRY_OVERHEAD = 32
#: Huffman-decoded strings kept, bytes -> str; only short ones, so the cache's bytes
#: are bounded (512 x (64 + 102) bytes of text).
_HUFFMAN_CACHE_SIZE = 512
_HUFFMAN_CACHE_STRING = 64
_huffman_cache: dict[bytes, str] = {}


class HpackError(Exception):
    """The header block cannot be decoded: a connection error (COMPRESSION_ERROR)."""


class HeaderBomb(HpackError):
    """The block decodes to a header list ``BOMB_FACTOR`` times the limit or more: an
    attack, not a mistake (a connection error, ENHANCE_YOUR_CALM)."""


#: A header list this many times over the limit stops decoding at once.
BOMB_FACTOR = 16


class Decoder:
    """Decodes header blocks of one connection, in order (they share a dynamic table)."""

    __slots__ = ("_entries", "_max_size", "_size", "generation", "limit")

    def __init__(self, limit: int = 4096) -> None:
        #: The most the peer may set the table to: our SETTINGS_HEADER_TABLE_SIZE.
        self.limit = limit
        self._max_size = limit
        self._size = 0
        self._entries: deque[Header] = deque()  # newest first: index 62 is [0]
        #: Bumped on every change of the dynamic table; a cache key for pure blocks.
        self.generation = 0

    def decode(self, data: bytes, limit: int = 1 << 62) -> tuple[list[Header], bool, int]:
        """The block's headers, whether decoding left the dynamic table unchanged, and the
        header list's size (name + value + 32 per field, RFC 9113 §6.5.2).

        Past ``limit`` bytes of header list, fields are no longer kept (the block is still
        decoded to the end, so the dynamic table stays in step with the client's, and the
        stream is answered 431); past ``BOMB_FACTOR`` times the limit (a small block of
        one-byte references to a large table entry), decoding stops with
        :class:`HeaderBomb`, so neither memory nor time grows with what the block claims.
        """
        headers: list[Header] = []
        pure = True
        size = 0
        bomb = limit * BOMB_FACTOR
        pos, end = 0, len(data)
        entries = self._entries
        while pos < end:
            byte = data[pos]
            if byte & 0x80:  # indexed field (§6.1)
                index = byte & 0x7F
                if index == 0x7F:
                    index, pos = _integer(data, pos, 0x7F)
                else:
                    pos += 1
                if 0 < index <= _STATIC_SIZE:
                    field = STATIC_TABLE[index - 1]
                elif _STATIC_SIZE < index <= _STATIC_SIZE + len(entries):
                    field = entries[index - _STATIC_SIZE - 1]
                else:
                    raise HpackError(f"header index {index} out of range")
                size += len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
                if size <= limit:
                    headers.append(field)
                elif size > bomb:
                    raise HeaderBomb(f"header list of over {bomb} bytes")
                continue
            if byte & 0x40:  # literal with incremental indexing (§6.2.1)
                mask = 0x3F
            elif byte & 0x20:  # dynamic table size update (§6.3)
                if headers:
                    raise HpackError("table size update after a header field")
                size = byte & 0x1F
                if size == 0x1F:
                    size, pos = _integer(data, pos, 0x1F)
                else:
                    pos += 1
                if size > self.limit:
                    raise HpackError(f"table size update to {size} over the limit {self.limit}")
                self._max_size = size
                self._evict(0)
                self.generation += 1
                pure = False
                continue
            else:  # literal without indexing / never indexed (§6.2.2, §6.2.3)
                mask = 0x0F
            index = byte & mask
            if index == mask:
                index, pos = _integer(data, pos, mask)
            else:
                pos += 1
            if index:
                if index <= _STATIC_SIZE:
                    name = STATIC_TABLE[index - 1][0]
                elif index <= _STATIC_SIZE + len(entries):
                    name = entries[index - _STATIC_SIZE - 1][0]
                else:
                    raise HpackError(f"header name index {index} out of range")
            else:
                name, pos = _string(data, pos)
            value, pos = _string(data, pos)
            header = (name, value)
            size += len(name) + len(value) + _ENTRY_OVERHEAD
            if size <= limit:
                headers.append(header)
            elif size > bomb:
                raise HeaderBomb(f"header list of over {bomb} bytes")
            if mask == 0x3F:
                self._add(header)
                pure = False
        return headers, pure, size

    def _add(self, header: Header) -> None:
        size = len(header[0]) + len(header[1]) + _ENTRY_OVERHEAD
        self.generation += 1
        if size > self._max_size:  # an entry bigger than the table empties it (§4.4)
            self._entries.clear()
            self._size = 0
            return
        self._evict(size)
        self._entries.appendleft(header)
        self._size += size

    def _evict(self, room: int) -> None:
        entries = self._entries
        while entries and self._size + room > self._max_size:
            name, value = entries.pop()
            self._size -= len(name) + len(value) + _ENTRY_OVERHEAD


def _integer(data: bytes, pos: int, mask: int) -> tuple[int, int]:
    """An integer whose prefix (``mask`` bits) is full, so continuation bytes follow (§5.1)."""
    value, shift = mask, 0
    pos += 1
    end = len(data)
    while True:
        if pos >= end:
            raise HpackError("truncated integer")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:  # over 2**32: no index, length or size is that large here
            raise HpackError("integer too large")


def _string(data: bytes, pos: int) -> tuple[str, int]:
    """A string literal (§5.2), as latin-1 ``str``."""
    if pos >= len(data):
        raise HpackError("truncated string")
    first = data[pos]
    size = first & 0x7F
    if size == 0x7F:
        size, pos = _integer(data, pos, 0x7F)
    else:
        pos += 1
    stop = pos + size
    if stop > len(data):
        raise HpackError("string runs past the header block")
    raw = data[pos:stop]
    if not first & 0x80:
        return raw.decode("latin-1"), stop
    text = _huffman_cache.get(raw)
    if text is None:
        try:
            text = decode_huffman(raw).decode("latin-1")
        except HPACKDecodingError as exc:
            raise HpackError(f"bad Huffman code: {exc}") from None
        if len(raw) <= _HUFFMAN_CACHE_STRING:
            if len(_huffman_cache) >= _HUFFMAN_CACHE_SIZE:
                _huffman_cache.clear()
            _huffman_cache[raw] = text
    return text, stop


def integer(value: int, mask: int, flags: int) -> bytes:
    """``value`` with a prefix of ``mask`` bits, ``flags`` in the first byte's high bits."""
    if value < mask:
        return bytes((flags | value,))
    out = bytearray((flags | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: str, value: str) -> bytes:
    """One header as a literal without indexing, new name, no Huffman (§6.2.2)."""
    raw_name = name.encode("latin-1", "replace")
    raw_value = value.encode("latin-1", "replace")
    return (
        b"\x00"
        + integer(len(raw_name), 0x7F, 0)
        + raw_name
        + integer(len(raw_value), 0x7F, 0)
        + raw_value
    )


def literal_value(value: str) -> bytes:
    """A string literal alone: the value part after a precomputed name."""
    raw = value.encode("latin-1", "replace")
    return integer(len(raw), 0x7F, 0) + raw
