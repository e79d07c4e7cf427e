"""training.cpu_malloc: with 'cached', a CPU process reuses freed tensors' pages instead of faulting them in again."""
import subprocess
import sys
import textwrap

import pytest

from gan3d.errors import ConfigError
from gan3d.training import allocator

# In a fresh process (mallopt changes the whole process): the page faults of allocating, filling and freeing
# a 64 MB tensor eight times, after two first ones that grow the heap.
_PROBE = textwrap.dedent("""
    import resource, sys, torch
    from gan3d.training.allocator import use_cpu_malloc
    print(use_cpu_malloc(sys.argv[1]), file=sys.stderr)
    for _ in range(2):
        torch.empty(16 * 2**20).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        torch.empty(16 * 2**20).fill_(1.0)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(allocator._glibc() is None, reason="needs glibc (Linux): elsewhere 'auto' leaves malloc alone")
def test_cached_malloc_reuses_freed_pages():
    pages = 8 * 64 * 2**20 // 4096
    system, cached = _faults("system"), _faults("cached")
    assert system > pages // 2  # the system default unmaps a freed 64 MB block and faults it in again
    assert cached <= pages // 4  # cached: the same pages again (glibc may still grow its heap once or twice)


def test_cached_malloc_without_glibc_is_one_config_error(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(ConfigError, match=r"^key 'training.cpu_malloc' = 'cached' needs glibc's mallopt"):
        allocator.use_cpu_malloc("cached")
    assert allocator.use_cpu_malloc("auto").startswith("system malloc")  # auto leaves other platforms alone
