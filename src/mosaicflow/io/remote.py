"""Files at fsspec URLs (``s3://bucket/acq/Tile_001-001.tif``) for the tile readers: a path
type that carries its storage options to the workers, and clear errors where the storage refuses
access.

Local paths stay :class:`pathlib.Path`; a URL becomes a :class:`RemotePath`, which offers the
part of the ``pathlib`` interface the readers use, through the URL's fsspec file system.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import fsspec

from mosaicflow.errors import MosaicflowError

__all__ = [
    "RemotePath",
    "access_error",
    "as_path",
    "check_access",
    "is_url",
    "listdir",
    "register_options",
    "registered_options",
    "storage_errors",
]

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
#: Storage options the pipeline registered per URL prefix in this process (see
#: :func:`register_options`).
_REGISTRY: dict[str, dict[str, Any]] = {}


def is_url(path: Any) -> bool:
    """Whether ``path`` is an fsspec URL (``protocol://...``) rather than a local path."""
    return isinstance(path, str) and _URL.match(path) is not None


def register_options(url: str, options: dict[str, Any] | None) -> None:
    """Remember the storage options of ``url`` (and everything under it) in this process.

    A :class:`~mosaicflow.io.tiles.TileSet` rebuilt from a run store's metadata (which never
    holds credentials) takes its options from here; the pipeline registers its input's.
    """
    if is_url(url):
        _REGISTRY[url.rstrip("/")] = dict(options or {})


def registered_options(url: str) -> dict[str, Any]:
    """The options registered for the longest prefix of ``url`` (empty when none is)."""
    url = str(url).rstrip("/")
    best = max((p for p in _REGISTRY if url == p or url.startswith(p + "/")), key=len, default=None)
    return dict(_REGISTRY[best]) if best is not None else {}


class RemotePath(str):
    """A file or folder at an fsspec URL, with the storage options that open it.

    It *is* the URL as a string (``str()``, ``repr()``, JSON, Parquet and messages show the URL
    only, never the options), and offers the ``pathlib`` subset the tile readers use
    (``name``, ``suffix``, ``parent``, ``/``, ``exists``, ``is_file``, ``is_dir``, ``open``,
    ``read_bytes``, ``read_text``, ``stat``). Pickled (to a Dask worker) it keeps its options.

    Parameters
    ----------
    url : str
        ``protocol://bucket/key``; a trailing slash is dropped.
    storage_options : dict, optional
        fsspec options (endpoint, credentials); default: those registered for the URL.
    """

    storage_options: dict[str, Any]

    def __new__(cls, url: str, storage_options: dict[str, Any] | None = None) -> RemotePath:
        """The URL ``url`` with ``storage_options`` (else those it carries or registered)."""
        text = str.__str__(url) if isinstance(url, str) else str(url)
        self = super().__new__(cls, text.rstrip("/") if not text.endswith("://") else text)
        if storage_options is None:
            storage_options = getattr(url, "storage_options", None)
        if storage_options is None:
            storage_options = registered_options(text)
        self.storage_options = dict(storage_options)
        self._fs: Any = None
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str.__str__(self), self.storage_options))

    def __str__(self) -> str:
        return self  # str(path) keeps the options (the fusion graph takes str() of each path)

    def _split(self) -> tuple[str, str]:
        protocol, rest = str.__str__(self).split("://", 1)
        return protocol + "://", rest

    @property
    def fs(self) -> Any:
        """The fsspec file system (made once per path object)."""
        if self._fs is None:
            self._fs = fsspec.core.url_to_fs(str.__str__(self), **self.storage_options)[0]
        return self._fs

    @property
    def fs_path(self) -> str:
        """The path as the file system names it (no protocol)."""
        return str(self.fs._strip_protocol(str.__str__(self)))

    # -- pure path ------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The last component."""
        return self._split()[1].rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        """The file extension, as ``pathlib`` gives it."""
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> RemotePath:
        """The containing folder (the bucket is its own parent)."""
        protocol, rest = self._split()
        if "/" not in rest:
            return self
        return RemotePath(protocol + rest.rsplit("/", 1)[0], self.storage_options)

    def __truediv__(self, other: Any) -> RemotePath:  # type: ignore[override]
        return RemotePath(f"{str.__str__(self)}/{other}", self.storage_options)

    def relative_to(self, other: Any) -> PurePosixPath:
        """The path below ``other``; ``ValueError`` when it is not below it."""
        base = str.__str__(str(other)).rstrip("/") + "/"
        if not str.__str__(self).startswith(base):
            raise ValueError(f"{str.__str__(self)!r} is not under {base!r}")
        return PurePosixPath(str.__str__(self)[len(base) :])

    def as_posix(self) -> str:
        """The URL."""
        return str.__str__(self)

    def resolve(self) -> RemotePath:
        """The URL itself (already absolute)."""
        return self

    def is_absolute(self) -> bool:
        """Always true."""
        return True

    # -- file system ----------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether a file or folder is at the URL."""
        return bool(self.fs.exists(self.fs_path))

    def is_file(self) -> bool:
        """Whether a file is at the URL."""
        return bool(self.fs.isfile(self.fs_path))

    def is_dir(self) -> bool:
        """Whether a folder (an object prefix) is at the URL."""
        return bool(self.fs.isdir(self.fs_path))

    def open(self, mode: str = "r", **kwargs: Any) -> Any:
        """A file object, text by default as ``pathlib`` opens one (text modes take
        ``encoding`` and ``newline``; fsspec's ``block_size`` and ``cache_type`` pass on)."""
        return self.fs.open(self.fs_path, mode, **kwargs)

    def read_bytes(self) -> bytes:
        """The whole file."""
        return bytes(self.fs.cat_file(self.fs_path))

    def read_text(self, encoding: str = "utf-8") -> str:
        """The whole file, decoded."""
        return self.read_bytes().decode(encoding)

    def stat(self) -> SimpleNamespace:
        """``st_size`` of the file."""
        return SimpleNamespace(st_size=int(self.fs.size(self.fs_path)))

    def listdir(self) -> list[str]:
        """Names of the folder's entries."""
        entries = self.fs.ls(self.fs_path, detail=False)
        base = self.fs_path.rstrip("/")
        return [posixpath.basename(e.rstrip("/")) for e in entries if e.rstrip("/") != base]


def as_path(path: Any, storage_options: dict[str, Any] | None = None) -> Any:
    """A :class:`RemotePath` for a URL (with ``storage_options``, else those it carries or were
    registered), a :class:`pathlib.Path` for anything else."""
    if isinstance(path, RemotePath) and storage_options is None:
        return path
    if is_url(path):
        return RemotePath(path, storage_options)
    return Path(path)


def listdir(folder: Any) -> list[str]:
    """Names in a local folder or at a folder URL."""
    if isinstance(folder, RemotePath):
        return folder.listdir()
    import os

    return os.listdir(folder)


def access_error(
    exc: BaseException, url: str, what: str, error: type[MosaicflowError] = MosaicflowError
) -> MosaicflowError | None:
    """A clear ``error`` for a storage refusal (wrong or missing credentials, access denied,
    unreachable endpoint) met at ``url``, or None for any other error; ``what`` names the
    place (``"run store"``, ``"acquisition folder"``). Never shows the credentials."""
    module = type(exc).__module__ or ""
    if isinstance(exc, PermissionError):
        reason = "access denied"
    elif module.startswith(("botocore", "aiobotocore")):
        name = type(exc).__name__
        reason = {
            "NoCredentialsError": "no credentials",
            "EndpointConnectionError": "the endpoint cannot be reached",
        }.get(name, name)
    else:
        return None
    return error(
        f"{what} {url!r}: {reason} ({exc}); check the storage options (endpoint_url, key, "
        "secret: --storage-option KEY=VALUE or the storage section of the configuration)"
    )


@contextlib.contextmanager
def storage_errors(
    url: str, what: str, error: type[MosaicflowError] = MosaicflowError
) -> Iterator[None]:
    """Turn a storage refusal inside the block into a clear ``error`` naming ``url`` (see
    :func:`access_error`); any other exception passes unchanged."""
    try:
        yield
    except Exception as exc:
        found = access_error(exc, url, what, error)
        if found is None:
            raise
        raise found from None


def check_access(
    fs: Any, path: str, url: str, what: str, error: type[MosaicflowError] = MosaicflowError
) -> bool:
    """Whether something is at ``path`` of ``fs``, raising a clear ``error`` (see
    :func:`access_error`) where the storage refuses the request."""
    with storage_errors(url, what, error):
        return bool(fs.exists(path))
    raise AssertionError("unreachable")  # pragma: no cover
