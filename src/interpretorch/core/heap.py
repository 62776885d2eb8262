"""Freed memory kept for the next pass while a batched loop runs (glibc's malloc, Linux).

A CPU forward pass allocates its large feature maps afresh; glibc serves blocks above its mmap threshold (128 KiB
growing to 32 MiB) with fresh pages from the system and gives them back when they are freed, so every pass
faults its pages in again (zeroed by the kernel) and trims the heap on the way out. For EfficientNet-Lite0, 8
rows at 224 px, one thread, that is about 27,000 page faults per pass on the forward-only copy (152 ms of CPU
time against 70 ms without them) and 75,000 on the model itself (384 ms against 132 ms).

``kept_heap`` makes malloc serve every size from its heap and not trim it while the block runs (``mallopt``:
``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD`` at its largest), so a pass reuses the pages the last one freed; on leaving
the outermost block it sets ``M_MMAP_MAX`` back to glibc's 65536 and ``M_TRIM_THRESHOLD`` to 64 MiB, the value
glibc's own rule reaches in a process that frees large blocks (so the next free returns the heap's free top
beyond 64 MiB to the system). Side effects: while a block runs, the process keeps the peak of what it allocated;
setting the parameters ends glibc's own adjustment of its thresholds for the rest of the process. Every loop of ``core.batching`` (``chunks``, ``group_steps``) runs inside it. Nothing happens where
the C library is not glibc, or when ``INTERPRETORCH_KEEP_HEAP=0``.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
import threading
from typing import Iterator

__all__ = ["kept_heap", "heap_kept"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
# glibc's own ceilings: the trim threshold its dynamic rule reaches (twice the 32 MiB mmap threshold maximum)
_DEFAULT_TRIM, _DEFAULT_MMAP_MAX = 64 << 20, 65536
_LOCK = threading.Lock()
_DEPTH = [0]
_LIBC: list = []


def _libc():
    """glibc's handle, or None elsewhere (looked up once)."""
    if not _LIBC:
        lib = None
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            except (OSError, AttributeError):
                lib = None
        _LIBC.append(lib)
    return _LIBC[0]


def heap_kept() -> bool:
    """Whether a ``kept_heap`` block is running now (and glibc's parameters are set)."""
    return _DEPTH[0] > 0 and _libc() is not None


@contextlib.contextmanager
def kept_heap() -> Iterator[None]:
    """Within this block glibc's malloc keeps freed memory for reuse (no fresh pages per pass); nestable."""
    lib = _libc() if os.environ.get("INTERPRETORCH_KEEP_HEAP", "1") != "0" else None
    if lib is None:
        yield
        return
    with _LOCK:
        _DEPTH[0] += 1
        if _DEPTH[0] == 1:
            lib.mallopt(_M_MMAP_MAX, 0)
            lib.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1)
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH[0] -= 1
            if _DEPTH[0] == 0:
                lib.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                lib.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
