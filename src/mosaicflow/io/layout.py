"""What a run store is: the names of its layout, and how a store mosaicflow made is told apart
from anything else at a path (a folder of other files, another program's Zarr store)."""

from __future__ import annotations

from typing import Any

IMAGES = ("mosaic", "denoised", "probability")
#: The instance model's interior probability, stored beside ``probability`` by a run that
#: segments with an instance model (its probability stage's output too).
INTERIOR_IMAGE = "interior"
LABELS = ("particles",)
#: The image at the store's root: the store opens as this OME-Zarr image, its labels under it.
ROOT_IMAGE = "mosaic"
#: Marks a run store's root group (attributes ``mosaicflow.format``); version 2 has the mosaic at
#: the root, version 1 (and stores from before the marker) had it in ``mosaic/``.
RUN_FORMAT = "mosaicflow-run/2"
_OLD_FORMATS = ("mosaicflow-run/1",)
#: The lock file a writing run holds inside its store (``mosaicflow.io.lock``).
LOCK_NAME = "mosaicflow.lock"
#: The entries a run writes at the root of its store (besides the mosaic's level arrays
#: ``0 .. N``); nothing else is ever removed (and the lock only by its holder).
RUN_ENTRIES = frozenset(
    {
        "zarr.json",
        *IMAGES,
        INTERIOR_IMAGE,
        "labels",
        "tables",
        "report",
        "scratch",
        "progress",
        LOCK_NAME,
    }
)
#: The stage that writes each image and table: reads of an unfinished stage's output are refused.
IMAGE_STAGES = {
    "mosaic": "mosaic",
    "denoised": "denoised",
    "probability": "probability",
    "labels/particles": "labels",
}
TABLE_STAGES = {
    "tiles": "tiles",
    "ground_truth": "tiles",
    "pairs": "register",
    "particles": "particles",
}
#: Attribute key of an image group's own provenance (the root's ``mosaicflow`` key is the run's).
IMAGE_ATTRS = "mosaicflow_image"


def root_attrs(fs: Any, path: str) -> dict[str, Any] | None:
    """The ``mosaicflow`` attributes of the Zarr group at ``path``, or None if it is not a run
    store (no group, unreadable metadata, or no attributes of ours)."""
    import json

    meta_path = path.rstrip("/") + "/zarr.json"
    try:
        if not fs.exists(meta_path):
            return None
        with fs.open(meta_path, "rb") as fh:
            meta = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes", {}).get("mosaicflow") if isinstance(meta, dict) else None
    if not isinstance(attrs, dict):
        return None
    # Stores written before the format marker carry the run's version and stage record.
    if attrs.get("format") in (RUN_FORMAT, *_OLD_FORMATS) or {"version", "stages"} <= set(attrs):
        return attrs
    return None


def is_run_entry(name: str) -> bool:
    """Whether a root entry is one a run writes (the mosaic's levels are its digit names)."""
    return name in RUN_ENTRIES or name.isdigit()


def target_state(fs: Any, path: str) -> str:
    """``"run"`` (a run store), ``"empty"`` (nothing there) or ``"foreign"`` (anything else)."""
    if root_attrs(fs, path) is not None:
        return "run"
    if not fs.exists(path):
        return "empty"
    if fs.isfile(path):
        return "foreign"
    # A folder holding only a lock is a store another run is creating right now: not foreign.
    names = {e.rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(path, detail=False)}
    return "foreign" if names - {LOCK_NAME} else "empty"


def foreign_message(fs: Any, path: str, url: str) -> str:
    """Why mosaicflow will not write to ``url``: what is there."""
    if fs.isfile(path):
        return f"output path {url!r} is a file, not a run store; choose another --out"
    if fs.exists(path + "/zarr.json"):
        return (
            f"output path {url!r} is a Zarr store that mosaicflow did not make; it is "
            "left untouched: choose another --out"
        )
    names = sorted(e.rsplit("/", 1)[-1] for e in fs.ls(path, detail=False))
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"output path {url!r} is a folder that is not a run store (it holds "
        f"{len(names)} entries: {shown}); mosaicflow never writes into or deletes it: "
        "choose another --out"
    )


def run_entries(fs: Any, path: str, url: str) -> dict[str, str]:
    """The store's root entries by name, refusing any a run does not write."""
    from mosaicflow.errors import StoreError

    entries = {e.rsplit("/", 1)[-1]: e for e in fs.ls(path, detail=False)}
    foreign = sorted(n for n in entries if not is_run_entry(n))
    if foreign:
        raise StoreError(
            f"run store {url!r} also holds entries a run does not write "
            f"({', '.join(foreign)}); it is not replaced: move them away or choose "
            "another --out"
        )
    return entries
