"""Who is calling: a :class:`Principal` and the roles it holds.

A role grant is written ``role`` or ``role:model`` (``predict:fraud``): the
first grants the role on every model, the second on that model only. API keys
store their grants as such strings, and a token's ``roles`` claim (or OAuth
``scope``) carries them the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from inferline.errors import BadRequest

__all__ = ["ANONYMOUS", "ROLES", "Grants", "Principal", "parse_grants"]

#: Every role, weakest first; ``admin`` may do everything.
ROLES = ("predict", "read", "admin")

#: role -> the models it covers (None: every model).
Grants = Mapping[str, frozenset[str] | None]


def parse_grants(
    values: Iterable[str], *, strict: bool = False
) -> dict[str, frozenset[str] | None]:
    """Grants from ``["predict:fraud", "predict:churn", "read"]``.

    Unknown roles are ignored (an identity provider's token carries other
    scopes too) unless ``strict``, as for a key being created.
    """
    grants: dict[str, frozenset[str] | None] = {}
    for value in values:
        role, _, model = value.strip().partition(":")
        if role not in ROLES:
            if strict:
                raise BadRequest(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
            continue
        if role in grants and grants[role] is None:
            continue  # already on every model
        if not model:
            grants[role] = None
        else:
            grants[role] = frozenset({*(grants.get(role) or ()), model})
    return grants


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its name (for audit and rate limits) and its grants.

    ``name`` never holds a secret: ``key:<key name>``, ``jwt:<subject>``, or
    ``anonymous`` when authentication is off.
    """

    name: str
    kind: Literal["key", "jwt", "anonymous"]
    grants: Grants = field(default_factory=dict)

    def allows(self, roles: tuple[str, ...], model: str | None, model_bound: bool) -> bool:
        """Whether one of ``roles`` (or ``admin``) covers the request.

        On a model-bound route a grant limited to some models covers only those;
        a model-bound route whose model is not known up front needs an unlimited one.
        """
        for role in (*roles, "admin"):
            if role not in self.grants:
                continue
            models = self.grants[role]
            if models is None or not model_bound:
                return True
            if model is not None and model in models:
                return True
        return False

    def describe_grants(self) -> list[str]:
        out = []
        for role, models in self.grants.items():
            out += [role] if models is None else [f"{role}:{m}" for m in sorted(models)]
        return out


#: Every request when authentication is off: it may do anything the route allows.
ANONYMOUS = Principal("anonymous", "anonymous", {"admin": None})
