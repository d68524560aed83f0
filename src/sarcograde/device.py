"""Where the networks run: the device asked for, host tensors moved to it without waiting, and
batches that fit in its memory."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch

from .console import warn
from .errors import SarcogradeError

# The batch found to fit, by (device, purpose, batch asked for): after an out-of-memory error
# the later calls of a run start from the size that fitted instead of failing again.
_FITTING_BATCH: dict[tuple[str, str, int], int] = {}


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` (a CUDA GPU where torch sees one, else the CPU), `cpu` or `cuda[:k]`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SarcogradeError(f"--device {name!r} is not auto, cpu or cuda[:k]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SarcogradeError("--device cuda asked for, but torch sees no CUDA GPU; "
                              "use --device cpu or auto")
    return device


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`. To a GPU it is copied from pinned memory without waiting: a
    plain `.to("cuda")` of pageable memory waits for every kernel already queued, so the host
    could not queue a training step's next kernels while the GPU runs the last ones."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def batches_that_fit(n: int, batch_size: int, device: torch.device, purpose: str,
                     compute: Callable[[int, int], Any]) -> Iterator[tuple[int, int, Any]]:
    """`(start, stop, compute(start, stop))` for consecutive batches of [0, n).

    When the device runs out of memory (15 stacked DenseNet-161s on a small GPU, say), the batch
    is halved and computed again, down to one slice, with one warning; the size that fitted is
    kept for the later calls of the same purpose. `compute` must have no effect outside its
    result, since a batch may be computed again.
    """
    key = (str(device), purpose, batch_size)
    size = _FITTING_BATCH.get(key, batch_size)
    start = 0
    while start < n:
        stop = min(n, start + size)
        fitted = True
        try:
            result = compute(start, stop)
        except torch.OutOfMemoryError:
            fitted = False  # handled below, once the failed batch's tensors are released
        if not fitted:
            if size == 1:
                raise SarcogradeError(f"{purpose}: out of memory on {device} with batches of one "
                                      "slice; free the GPU, use bf16, or --device cpu")
            size //= 2
            _FITTING_BATCH[key] = size
            torch.cuda.empty_cache()
            warn(f"{purpose}: out of memory on {device}, batches of {size} slices from now on")
            continue
        yield start, stop, result
        start = stop
