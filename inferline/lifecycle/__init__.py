"""Model lifecycle: register, promote, roll back, follow the registry, serve a folder.

Every version that takes traffic is loaded by :func:`load_checked` (artifact
checked, loaded, warmed up), whichever way it arrives.
"""

from inferline.lifecycle.changes import profile_reference, promote, register, rollback
from inferline.lifecycle.folder import serve_folder, unload_folder_model
from inferline.lifecycle.loading import guess_runtime, load_checked, load_version, warm_up
from inferline.lifecycle.serving import ServingPlane, Unserved
from inferline.lifecycle.sync import RegistrySync

__all__ = [
    "RegistrySync",
    "ServingPlane",
    "Unserved",
    "guess_runtime",
    "load_checked",
    "load_version",
    "profile_reference",
    "promote",
    "register",
    "rollback",
    "serve_folder",
    "unload_folder_model",
    "warm_up",
]
