"""Peak memory actually allocated while a block of work runs: what a memory plan is compared with.

* On a GPU: ``torch.cuda.max_memory_allocated`` since the block began (tensors only, not the allocator's cache).
* On CPU: bytes handed out by ``malloc`` and not yet freed (glibc's ``mallinfo2``: in-use heap chunks plus mmapped
  chunks; tcmalloc's or jemalloc's own counter when one of them is preloaded, as the benchmarks and ``make demo``
  run), sampled by a background thread every ``period_s``, minus the value when the block began. This is the CPU
  counterpart of allocated CUDA memory; the resident set (RSS) is not, because glibc keeps freed arenas and RSS only
  grows across stages. Where no allocator answers the sampler falls back to RSS and says so.

Written by hand: PyTorch has no peak-allocation counter for CPU tensors.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

import psutil
import torch

from redwhale.core.environment import malloc_loaded

MIB = 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def _mallinfo_reader():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None

    def read() -> int:
        info = libc.mallinfo2()
        return int(info.uordblks + info.hblkhd)

    return read


def _tcmalloc_reader():
    """tcmalloc's bytes in use by the application (its ``generic.current_allocated_bytes``)."""
    try:
        get = ctypes.CDLL(None).MallocExtension_GetNumericProperty
    except (OSError, AttributeError):
        return None
    get.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t)]
    get.restype = ctypes.c_int

    def read() -> int:
        value = ctypes.c_size_t(0)
        get(b"generic.current_allocated_bytes", ctypes.byref(value))
        return int(value.value)

    return read if _works(read) else None


def _jemalloc_reader():
    """jemalloc's bytes allocated by the application (``stats.allocated``, refreshed through ``epoch``)."""
    try:
        mallctl = ctypes.CDLL(None).mallctl
    except (OSError, AttributeError):
        return None
    mallctl.restype = ctypes.c_int

    def read() -> int:
        epoch, value = ctypes.c_uint64(1), ctypes.c_size_t(0)
        size = ctypes.c_size_t(ctypes.sizeof(epoch))
        mallctl(b"epoch", None, None, ctypes.byref(epoch), size)
        size = ctypes.c_size_t(ctypes.sizeof(value))
        if mallctl(b"stats.allocated", ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)) != 0:
            return 0
        return int(value.value)

    return read if _works(read) else None


def _works(read) -> bool:
    try:
        return read() > 0
    except OSError:
        return False


def allocated_reader():
    """A function giving the bytes malloc has handed out and not taken back, from the allocator this process runs on
    (tcmalloc or jemalloc preloaded, as the benchmarks and ``malloc_advice`` run training, else glibc's
    ``mallinfo2``: glibc's own counters read ~0 under another allocator), with its name; (None, "") where none
    answers."""
    make, counter = _READERS.get(malloc_loaded(), (_mallinfo_reader, "mallinfo2"))
    read = make()
    return (read, f"malloc in use ({counter})") if read is not None else (None, "")


_READERS = {
    "tcmalloc": (_tcmalloc_reader, "tcmalloc's current_allocated_bytes"),
    "jemalloc": (_jemalloc_reader, "jemalloc's stats.allocated"),
}


def _rss() -> int:
    return psutil.Process(os.getpid()).memory_info().rss


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.mib``: the peak allocated during the block (MiB)."""

    def __init__(self, device: torch.device, period_s: float = 0.02):
        self.device, self.period_s = device, period_s
        self._read, name = allocated_reader() if device.type != "cuda" else (None, "")
        self.measure = (
            "cuda max_memory_allocated"
            if device.type == "cuda"
            else (name if self._read else "process RSS (no allocator counter here)")
        )
        self._start = self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.period_s):
            self._peak = max(self._peak, (self._read or _rss)())

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._start = self._peak = (self._read or _rss)()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, (self._read or _rss)())

    def now_mib(self) -> float:
        """Memory allocated right now (MiB)."""
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / MIB
        return (self._read or _rss)() / MIB

    @property
    def mib(self) -> float:
        """Peak allocated during the block (MiB), everything included (what was allocated before it, too)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / MIB
        return self._peak / MIB

    @property
    def added_mib(self) -> float:
        """Peak allocated during the block above what was allocated when it began (MiB)."""
        return self.mib - self._start / MIB
