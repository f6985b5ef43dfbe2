"""One writer per run store: a lock file inside the store naming its owner.

``<store>/mosaicflow.lock`` holds JSON: ``owner`` (user), ``host``, ``pid``, ``started``,
``expires`` (a lease the holder renews while it runs) and a random ``token``. A second run on
the same store is refused with a message naming the holder. A lock is *stale* when its process
is gone (same host, the pid is not running) or its lease has expired (the holder stopped
renewing it, e.g. a driver killed on another machine); a stale lock is reported and broken
only when asked (``--break-lock``), never silently, and a live lock is never broken.

On a local disk the lock file is created with ``O_CREAT | O_EXCL`` (atomic); on object storage
it is written and read back, and the token must be ours.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import os
import socket
import threading
import uuid
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from mosaicflow.errors import StoreError
from mosaicflow.io.layout import LOCK_NAME

#: Seconds a lock stays valid without renewal; the holder renews it every third of that.
LEASE_S = 300.0


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def stale_reason(info: dict[str, Any], *, now: _dt.datetime | None = None) -> str | None:
    """Why the lock described by ``info`` is stale, or None while its holder may be alive."""
    now = now or _now()
    if info.get("host") == socket.gethostname() and not _pid_running(int(info.get("pid", -1))):
        return f"process {info.get('pid')} on this host is no longer running"
    try:
        expires = _dt.datetime.fromisoformat(str(info["expires"]))
    except (KeyError, ValueError):
        return "the lock file is unreadable"
    if expires < now:
        return f"its lease expired at {expires.isoformat(timespec='seconds')}"
    return None


def describe(info: dict[str, Any]) -> str:
    """``user@host (pid N) since T`` for messages."""
    return (
        f"{info.get('owner', '?')}@{info.get('host', '?')} (pid {info.get('pid', '?')}) since "
        f"{info.get('started', '?')}"
    )


class StoreLock:
    """The lock of the run store at ``url`` (held by this process once :meth:`acquire` returns).

    Parameters
    ----------
    url : str
        The run store's path or fsspec URL (the lock file goes inside it).
    storage_options : dict, optional
        fsspec options for a remote store.
    lease_s : float
        Lease length; :meth:`start_renewing` keeps it fresh while the run works.
    """

    def __init__(
        self, url: str, *, storage_options: dict[str, Any] | None = None, lease_s: float = LEASE_S
    ) -> None:
        self.url = str(url).rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        self.root = root.rstrip("/")
        self.path = f"{self.root}/{LOCK_NAME}"
        self.lease_s = float(lease_s)
        self.token: str | None = None
        self._started: _dt.datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading --------------------------------------------------------------------------
    def holder(self) -> dict[str, Any] | None:
        """The lock's contents, or None when the store is not locked."""
        try:
            with self.fs.open(self.path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        try:
            info = json.loads(data)
        except ValueError:
            info = {}
        return info if isinstance(info, dict) else {}

    def check(self) -> None:
        """Refuse (without writing) when another run holds the lock; a stale lock is named as
        such with the way to break it."""
        info = self.holder()
        if info is None or (self.token and info.get("token") == self.token):
            return
        raise StoreError(self._refusal(info, stale_reason(info)))

    def _refusal(self, info: dict[str, Any], stale: str | None) -> str:
        if stale:
            return (
                f"run store {self.url!r} is locked by a run that is not running any more "
                f"({describe(info)}; {stale}): if so, run again with --break-lock (the store's "
                "unfinished stages are then resumed or redone)"
            )
        return (
            f"run store {self.url!r} is being written by another run: {describe(info)}; wait "
            "for it to finish or choose another --out"
        )

    # -- holding --------------------------------------------------------------------------
    def _payload(self) -> bytes:
        now = _now()
        info = {
            "owner": getpass.getuser(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": (self._started or now).isoformat(timespec="seconds"),
            "expires": (now + _dt.timedelta(seconds=self.lease_s)).isoformat(
                timespec="milliseconds"
            ),
            "token": self.token,
        }
        return json.dumps(info, indent=1).encode()

    def _create(self) -> bool:
        """Write the lock file if there is none; whether it is now ours."""
        self.fs.makedirs(self.root, exist_ok=True)
        if isinstance(self.fs, LocalFileSystem):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(self._payload())
            return True
        if self.fs.exists(self.path):
            return False
        with self.fs.open(self.path, "wb") as fh:
            fh.write(self._payload())
        info = self.holder() or {}
        return info.get("token") == self.token

    def acquire(self, *, break_stale: bool = False) -> None:
        """Take the lock, or raise :class:`StoreError` naming its holder.

        ``break_stale`` removes a stale lock first (never a live one).
        """
        self.token = uuid.uuid4().hex
        self._started = _now()
        for _ in range(2):
            if self._create():
                return
            info = self.holder()
            if info is None:
                continue  # released meanwhile
            stale = stale_reason(info)
            if stale and break_stale:
                self.fs.rm(self.path)
                continue
            self.token = None
            raise StoreError(self._refusal(info, stale))
        self.token = None
        raise StoreError(f"run store {self.url!r}: could not take the lock; try again")

    def renew(self) -> None:
        """Push the lease forward (only while the lock is still ours)."""
        if self.token is None:
            return
        info = self.holder()
        if info is None or info.get("token") != self.token:
            return
        with self.fs.open(self.path, "wb") as fh:
            fh.write(self._payload())

    def start_renewing(self) -> None:
        """Renew the lease every third of its length, in a daemon thread, until released."""

        def loop() -> None:
            while not self._stop.wait(self.lease_s / 3):
                try:
                    self.renew()
                except OSError:
                    pass  # a transient storage error; the next renewal tries again

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name="mosaicflow-lock", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and remove the lock file if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.token is None:
            return
        info = self.holder()
        if info is not None and info.get("token") == self.token:
            self.fs.rm(self.path)
        self.token = None

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
