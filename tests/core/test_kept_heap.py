"""``kept_heap``: while a batched loop runs, glibc keeps freed memory for the next pass instead of faulting in
fresh pages (measured in page faults of a child process, whose malloc parameters the test may change)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

from interpretorch.core.batching import chunks, group_steps
from interpretorch.core.heap import heap_kept

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

CHURN = """
import resource, torch
from interpretorch.core.heap import heap_kept, kept_heap

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def one_pass():  # a forward pass's pattern: several large maps alive at once, then all freed
    f0 = faults()
    maps = [torch.empty(24 << 18).fill_(1.0) for _ in range(6)]  # 6 x 24 MiB of float32
    del maps
    return faults() - f0

outside = [one_pass() for _ in range(5)]
with kept_heap():
    kept = heap_kept()
    inside = [one_pass() for _ in range(5)]
print(sum(outside[1:]), sum(inside[1:]), kept, heap_kept())
"""


def _churn(env: dict | None = None) -> tuple[int, int, str, str]:
    out = subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    a, b, kept, left = out.stdout.split()
    return int(a), int(b), kept, left


PASS_PAGES = 6 * (24 << 20) // 4096  # the pages one pass touches


def test_a_pass_reuses_the_last_pass_pages_inside():
    outside, inside, kept, left = _churn()
    # glibc's own rule may return the freed maps (more than its trim threshold) to the system after each pass, so
    # that every pass faults them in again, or not, depending on what the process allocated before (both seen:
    # 1 or 4 of the 4 later passes); kept, the 4 later passes reuse the first one's pages
    if GLIBC:
        assert inside < PASS_PAGES, (outside, inside)
    # elsewhere the block is a documented no-op: malloc is left alone and the block says it is not kept
    assert (kept, left) == (str(GLIBC), "False")


def test_opt_out_leaves_malloc_alone():
    _, _, kept, left = _churn({"INTERPRETORCH_KEEP_HEAP": "0"})
    assert (kept, left) == ("False", "False")


def test_batched_loops_run_inside_it_and_nest():
    assert not heap_kept()
    seen = []
    for _ in chunks(10, 3):
        seen.append(heap_kept())
        for _ in chunks(4, 2):  # nested: the outer block stays
            seen.append(heap_kept())
        seen.append(heap_kept())
    assert seen == [GLIBC] * len(seen) and not heap_kept()  # kept only where glibc's parameters exist
    for _ in group_steps(5, 2, 3):
        seen.append(heap_kept())
    assert seen == [GLIBC] * len(seen) and not heap_kept()
    it = chunks(10, 3)
    next(it)
    assert heap_kept() == GLIBC
    it.close()  # a loop left early ends the block
    assert not heap_kept()
