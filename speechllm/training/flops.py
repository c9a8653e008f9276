"""Model FLOPs utilisation: the FLOPs a training step runs, counted by torch's FlopCounterMode, over the
machine's matmul peak, measured. Both are measured in the process that trains, with its thread count."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _attention_backward(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)


# torch counts its GPU attention kernels but not the one scaled_dot_product_attention runs on a CPU, which would
# leave every attention product of a CPU step uncounted.
CPU_ATTENTION = {
    aten._scaled_dot_product_flash_attention_for_cpu: _attention,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _attention_backward,
}


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode (no printed table) that also counts the CPU attention kernel. Matmuls, convolutions and
    attention are counted, forward and backward; a frozen weight's gradient is never computed, so never counted."""
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION)


@contextlib.contextmanager
def flops_per_optimizer_step() -> Iterator[list[int]]:
    """Count the FLOPs of everything run inside, split at each optimiser step: yields a list that gains, whenever
    an optimiser steps, the FLOPs since the previous step (data, forward and backward of that training step)."""
    counter, steps = flop_counter(), []

    def split(optimizer, args, kwargs):
        steps.append(counter.get_total_flops() - sum(steps))

    handle = register_optimizer_step_post_hook(split)
    try:
        with counter:
            yield steps
    finally:
        handle.remove()


def matmul_peak(dtype: torch.dtype, device: str | torch.device = "cpu", sizes=(1024, 2048, 4096),
                seconds: float = 0.5) -> float:
    """The best sustained FLOP/s of square matmuls in `dtype` on `device`: each size is multiplied repeatedly
    for at least `seconds` after one warm-up product, with torch's current thread count; the best size wins."""
    device = torch.device(device)

    def wait():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    best = 0.0
    for n in sizes:
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        out = torch.empty(n, n, device=device, dtype=dtype)
        torch.matmul(a, b, out=out)
        wait()
        reps, start, elapsed = 0, time.perf_counter(), 0.0
        while elapsed < seconds:
            torch.matmul(a, b, out=out)
            wait()
            reps, elapsed = reps + 1, time.perf_counter() - start
        best = max(best, 2 * n**3 * reps / elapsed)
    return best
