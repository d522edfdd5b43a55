"""What the benchmark workers measure with: device sync, memory now / peak (CUDA allocator,
or the process's RSS and its high-water mark on CPU), the device's name."""

from __future__ import annotations

import os
import platform

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


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
