"""inferline: serve trained models online, in batch and on streams."""

__version__ = "0.1.0"
