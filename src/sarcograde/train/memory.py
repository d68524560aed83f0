"""How many folds to train side by side on a GPU (`train.concurrent_folds`): what one fold
needs, measured with a trial step, against the GPU's free memory."""

from __future__ import annotations

import torch

from ..errors import SarcogradeError
from .settings import Settings
from .step import trial_step

GIB = 2 ** 30
# Share of the GPU's free memory that stacked folds may plan to use.
GPU_MEMORY_HEADROOM = 0.85


def fitting_folds(requested: int | None, pending: int, per_fold_bytes: float,
                  free_bytes: float, device: str) -> int:
    """How many folds to stack on a GPU with `free_bytes` free, one fold needing about
    `per_fold_bytes`: `requested` if it fits (else a one-line error), all that fit for auto."""
    fits = max(1, int(GPU_MEMORY_HEADROOM * free_bytes // per_fold_bytes))
    if requested is None:
        return max(1, min(pending, fits))
    if min(requested, pending) > fits:
        raise SarcogradeError(
            f"train.concurrent_folds {requested} does not fit on {device}: one fold needs about "
            f"{per_fold_bytes / GIB:.1f} GiB and {free_bytes / GIB:.1f} GiB is free, room for "
            f"{fits}; use {fits} or fewer, or auto")
    return max(1, min(requested, pending))


def fold_memory(model_cfg: dict, settings: Settings, meta: dict) -> float:
    """Bytes of GPU memory one fold needs: a trial step of a fresh network (weights, Adam state,
    activations at the training batch), measured with torch.cuda.max_memory_allocated."""
    device = settings.device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    trial_step(model_cfg, settings, meta)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return float(peak)


def concurrent_folds(settings: Settings, pending: int, model_cfg: dict, meta: dict) -> int:
    """The number of folds to train side by side (`train.concurrent_folds`, 1 in the presets).

    auto (opt-in until a GPU measurement shows stacking faster): on a GPU, as many of the
    pending folds as its free memory holds; on a CPU one at a time (stacked training is slower
    on CPU cores: benchmarks/README.md). Stacking needs no
    dropout (its random draws are per network) and no fp16 (its loss scaling is per network).
    """
    requested = settings.concurrent_folds
    if pending <= 1 or requested == 1:
        return 1
    blockers = []
    if float(model_cfg.get("dropout", 0.0)) > 0:
        blockers.append("model.dropout > 0")
    if settings.amp_dtype == torch.float16:
        blockers.append("fp16 autocast (use bf16 or fp32)")
    if blockers:
        if requested is not None:
            raise SarcogradeError(f"train.concurrent_folds {requested} cannot be used with "
                                  f"{' and '.join(blockers)}; set it to 1 or auto")
        return 1
    if settings.device.type != "cuda":
        return min(requested or 1, pending)
    free = torch.cuda.mem_get_info(settings.device)[0]
    return fitting_folds(requested, pending, fold_memory(model_cfg, settings, meta), free,
                         str(settings.device))
