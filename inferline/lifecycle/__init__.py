"""Model lifecycle over the registry: register, promote, roll back, and follow live."""

from inferline.lifecycle.changes import profile_reference, promote, register, rollback
from inferline.lifecycle.loading import guess_runtime, load_version, warm_up
from inferline.lifecycle.sync import RegistrySync

__all__ = [
    "RegistrySync",
    "guess_runtime",
    "load_version",
    "profile_reference",
    "promote",
    "register",
    "rollback",
    "warm_up",
]
