"""What the benchmark workers measure with: device sync, memory now / peak (CUDA allocator,
or the process's RSS and its high-water mark on CPU), timed repeats, the device's name, and
whether Liger's kernels can run."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def memory_now(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak(device: str) -> None:
    """Forget earlier peaks (imports, making the inputs) so only the measured step counts."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    with open("/proc/self/clear_refs", "w") as clear_refs:  # "5" resets the peak RSS (VmHWM)
        clear_refs.write("5")


def memory_peak(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def timed_repeats(run: Callable[[], object], device: str, repeats: int) -> tuple[object, float | None]:
    """``run()`` ``repeats`` times, each between device syncs: its last result (None when
    ``repeats`` is 0) and the median wall time in ms (rounded to 0.01; None when 0)."""
    result, times = None, []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = run()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return result, round(statistics.median(times), 2) if times else None


def liger_unavailable(on_cuda: bool) -> str | None:
    """Why Liger-Kernel's kernels cannot run here, or None."""
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        return "liger-kernel is not installed (pip install 'dft_mm[liger]')"
    return None if on_cuda else "Liger kernels need a CUDA device"


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
