"""How many images per model call, and how many processes decode them, when the user says nothing."""

from __future__ import annotations

import os

import torch

# Batches stop getting faster per image beyond these sizes (CPU: two cores are kept busy by 8-16).
MAX_AUTO_BATCH = {"cpu": 16, "cuda": 128}


def available_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device`` now (CUDA: free device memory; CPU: ``MemAvailable``)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def auto_batch_size(device: torch.device, per_image_bytes: int) -> int:
    """The most images that fit in a quarter of the memory free now, given what one image costs
    (a grounder's ``per_image_memory_bytes``), capped where bigger batches stop paying off (16 on
    CPU, 128 on CUDA), and at least 1."""
    cap = MAX_AUTO_BATCH["cuda" if device.type == "cuda" else "cpu"]
    budget = available_memory_bytes(device) // 4
    return int(max(1, min(cap, budget // max(1, per_image_bytes))))


def auto_workers(num_images: int, batch_size: int) -> int:
    """Decoding processes: none for a single batch or a single core, else up to 4, leaving a core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if num_images <= batch_size or cores < 2:
        return 0
    return min(4, cores - 1)
