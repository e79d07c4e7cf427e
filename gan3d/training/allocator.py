"""How a CPU training process gets its memory back (`training.cpu_malloc`).

A training step allocates and frees the same large tensors every iteration (activations, their gradients,
the tri-plane gradients: 8-50 MB each). glibc's malloc serves blocks above its mmap threshold with fresh
mmap()s and unmaps them on free, so every step faults every page of them in again: on bench_ref that is
~600k page faults and 1.3-1.7 s of kernel time per step on 2 cores (docs/PERF.md). PyTorch caches GPU memory
for this reason, but on CPU it calls the system malloc. `cached` asks glibc (mallopt) to serve every block from
its heap and to keep freed memory for reuse, as PyTorch's CPU tuning guides do by preloading jemalloc or
tcmalloc. The values computed are the same; the process keeps its peak heap instead of shrinking after it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Optional

from gan3d.errors import ConfigError

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc malloc.h
CACHED = "glibc heap, freed blocks kept for reuse (mallopt)"


def _glibc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    # musl and others have no mallopt tunables of this meaning; gnu_get_libc_version marks glibc
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def use_cpu_malloc(mode: str) -> str:
    """Apply training.cpu_malloc ('auto' | 'cached' | 'system') to this process (idempotent); returns what it does,
    in words. 'cached' where glibc is missing is an error naming the key, never a silent fallback."""
    if mode == "system":
        return "system malloc"
    libc = _glibc()
    if libc is None:
        if mode == "cached":
            raise ConfigError("key 'training.cpu_malloc' = 'cached' needs glibc's mallopt (Linux): expected 'auto' or"
                              " 'system' on this platform")
        return "system malloc (no glibc here)"
    # every block from the heap (no mmap), and freed memory stays there (trim only above 2 GiB of free top)
    if libc.mallopt(M_MMAP_MAX, 0) != 1 or libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) != 1:
        raise ConfigError(f"key 'training.cpu_malloc' = {mode!r}: glibc refused mallopt; expected 'system' here")
    return CACHED
