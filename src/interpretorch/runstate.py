"""What resumable jobs (``--data`` runs, ``dissect``) share to keep finished work and never mix two runs:

* :class:`OutputLock` - one writer per output folder: a lock file holding the writer's pid, locked with
  ``fcntl.flock`` (the kernel drops the lock when its process dies, so a stale file left by a killed run is
  simply taken over); a second writer is refused with a :class:`FolderBusy` error naming the pid.
* :func:`model_fingerprint`, :func:`files_fingerprint`, :func:`digest` - hashes of the model's weights, of
  data files (path, size, modification time) and of settings, for a checkpoint's fingerprint.
* :func:`terminate_as_interrupt` - SIGTERM handled as Ctrl-C, so a killed job takes its clean-stop path.
* :func:`writable_folder` - an output folder, created and tried with a file before any work starts.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from interpretorch.core.distributed import world
from interpretorch.core.fingerprint import model_fingerprint

__all__ = ["FolderBusy", "NotWritable", "OutputLock", "Terminated", "digest", "files_fingerprint", "lock_output",
           "model_fingerprint", "terminate_as_interrupt", "writable_folder"]

LOCK_NAME = ".interpretorch.lock"


class FolderBusy(ValueError):
    """Another live process is writing into the output folder."""


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (handled like Ctrl-C: finished work is kept, then the run stops)."""


class NotWritable(ValueError):
    """An output path that is not a folder this process can write into."""


def writable_folder(path: str | Path) -> Path:
    """``path`` as a folder to write into, created if missing; :class:`NotWritable` when it is empty, an existing
    file, or a folder that cannot be created or written (a file is created and removed to find out)."""
    import tempfile

    out = Path(path)
    if not str(path).strip():
        raise NotWritable("is empty; give a folder")
    if out.exists() and not out.is_dir():
        raise NotWritable(f"{str(path)!r} is an existing file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise NotWritable(f"{str(path)!r} cannot be written: {e.strerror or e}") from None
    return out


class OutputLock:
    """An exclusive, process-wide lock on an output folder (``with OutputLock(folder): ...``).

    The lock file ``.interpretorch.lock`` holds ``pid host``; it is removed on release. A lock file whose
    process is gone is not locked any more (``flock`` locks die with their process) and is taken over.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        """Take the lock or raise :class:`FolderBusy` naming the process that holds it."""
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise FolderBusy(f"{str(self.folder)!r} is in use by another interpretorch run "
                                 f"({self._holder()}); wait for it to finish or choose another --out") from None
            try:  # the file may have been removed by its previous holder between our open and our lock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def _holder(self) -> str:
        try:
            pid, _, host = self.path.read_text().strip().partition(" ")
        except OSError:
            return "pid unknown"
        return f"pid {pid}" + (f" on {host}" if host else "") if pid else "pid unknown"

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_output(folder: str | Path) -> OutputLock:
    """Lock ``folder`` for this run: rank 0 takes the lock (the caller releases it) and, under torch.distributed,
    every rank learns whether it could; a busy folder raises :class:`FolderBusy` on every rank."""
    import torch

    dist = torch.distributed
    rank, size = world()
    lock = OutputLock(folder)
    message = None
    if rank == 0:
        try:
            lock.acquire()
        except FolderBusy as e:
            message = str(e)
    if size > 1:
        box = [message]
        dist.broadcast_object_list(box, src=0)
        message = box[0]
    if message is not None:
        raise FolderBusy(message)
    return lock


def digest(value: Any) -> str:
    """SHA-256 of a JSON-ready value (keys sorted), e.g. a run's settings."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def files_fingerprint(paths: Iterable[str | Path], root: str | Path | None = None) -> str:
    """SHA-256 of a list of files: each one's name (relative to ``root``), size and modification time (ns);
    a missing file counts as such. A replaced, grown or touched file changes it."""
    h = hashlib.sha256()
    base = Path(root) if root is not None else None
    for p in paths:
        p = Path(p)
        name = str(p.relative_to(base)) if base is not None and p.is_relative_to(base) else str(p)
        try:
            st = p.stat()
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{name}\0missing\n".encode())
    return h.hexdigest()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread, so the
    job stops as on Ctrl-C, keeping its finished work; the previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:  # a forked DataLoader worker inherited the handler: die as before
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
