"""sarcograde.device: the device asked for, and batches halved until they fit when the GPU runs
out of memory (simulated here by a network that refuses batches larger than it can hold)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarcograde import console, device
from sarcograde import model as model_lib
from sarcograde.attention import cam_explainers, ensemble_cam
from sarcograde.device import batches_that_fit, resolve_device
from sarcograde.ensemble import Ensemble, slice_logits
from sarcograde.errors import SarcogradeError
from sarcograde.train.stacked_densenet import StackedDenseNet

TINY = {"architecture": "densenet", "init_features": 8, "growth_rate": 4, "block_config": [2, 2]}
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def nothing_fitted_yet(monkeypatch):
    monkeypatch.setattr(device, "_FITTING_BATCH", {})


def out_of_memory_above(limit: int):
    """A compute of batch (start, stop) that fails as CUDA does beyond `limit` slices, and the
    list of the batch sizes it was asked for."""
    asked = []

    def compute(start, stop):
        asked.append(stop - start)
        if stop - start > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return list(range(start, stop))
    return compute, asked


def test_batches_cover_the_range_in_order_when_they_fit():
    compute, asked = out_of_memory_above(100)
    got = list(batches_that_fit(10, 4, CPU, "test", compute))
    assert [(a, b) for a, b, _ in got] == [(0, 4), (4, 8), (8, 10)]
    assert sum((r for _, _, r in got), []) == list(range(10))
    assert asked == [4, 4, 2]


def test_a_batch_that_does_not_fit_is_halved_and_the_size_kept_for_the_next_call():
    compute, asked = out_of_memory_above(3)
    with console.recorded() as lines:
        got = list(batches_that_fit(10, 16, CPU, "slice logits", compute))
        again = list(batches_that_fit(10, 16, CPU, "slice logits", compute))
    assert sum((r for _, _, r in got), []) == list(range(10))  # every slice once, in order
    assert asked[:6] == [10, 8, 4, 2, 2, 2]
    assert [b - a for a, b, _ in again] == [2] * 5   # starts where the first call ended up
    assert max(asked[6:]) == 2
    warnings = [m for kind, m in lines if kind == "warn"]
    assert warnings == ["slice logits: out of memory on cpu, batches of 8 slices from now on",
                        "slice logits: out of memory on cpu, batches of 4 slices from now on",
                        "slice logits: out of memory on cpu, batches of 2 slices from now on"]
    # Another purpose, or another batch asked for, starts afresh.
    compute, asked = out_of_memory_above(100)
    list(batches_that_fit(10, 16, CPU, "Grad-CAM", compute))
    assert asked == [10]


def test_out_of_memory_with_one_slice_is_a_one_line_error():
    compute, _ = out_of_memory_above(0)
    with console.recorded(), pytest.raises(SarcogradeError, match="out of memory on cpu with "
                                                                  "batches of one slice"):
        list(batches_that_fit(5, 4, CPU, "slice logits", compute))


def test_other_errors_are_not_retried():
    def compute(start, stop):
        raise RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        list(batches_that_fit(5, 4, CPU, "test", compute))


def tiny_models(k: int = 3) -> list[torch.nn.Module]:
    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        nets.append(model_lib.build_model(TINY).eval())
    return nets


def slices(n: int = 11) -> np.ndarray:
    return np.random.default_rng(2).normal(size=(n, 32, 32)).astype(np.float16)


def test_slice_logits_that_run_out_of_memory_equal_those_that_fit(one_torch_thread):
    meta = model_lib.input_meta(32, pretrained=False)
    ensemble = Ensemble(run_dir=None, names=["a", "b", "c"], models=tiny_models(),
                        metas=[{"input": meta}] * 3, device=CPU, key="k")
    fitting = slice_logits(ensemble, slices(), batch_size=8, stacked=True)
    with console.recorded() as lines:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(StackedDenseNet, "_forward", _limited(StackedDenseNet._forward, 3))
            halved = slice_logits(ensemble, slices(), batch_size=8, stacked=True)
    assert [m for _, m in lines] == [
        "slice logits: out of memory on cpu, batches of 4 slices from now on",
        "slice logits: out of memory on cpu, batches of 2 slices from now on"]
    np.testing.assert_allclose(halved, fitting, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["per-model", "stacked"])
def test_grad_cam_that_runs_out_of_memory_equals_the_one_that_fits(mode, one_torch_thread):
    meta = model_lib.input_meta(32, pretrained=False)
    nets = tiny_models()
    explainers = cam_explainers(nets, "gradcam")
    images = slices(7).astype(np.float32)
    fitting = ensemble_cam(explainers, images, 1, meta, batch_size=8, mode=mode)
    # Per model, the second model is the one short of memory: the first has already given its
    # maps for the batch when it fails, and they must not be counted again on the retry.
    second = nets[1] if mode == "per-model" else None
    with console.recorded() as lines:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(StackedDenseNet, "_forward",
                          _limited(StackedDenseNet._forward, 3, only=second))
            halved = ensemble_cam(explainers, images, 1, meta, batch_size=8, mode=mode)
    assert [m for _, m in lines] == [
        "Grad-CAM: out of memory on cpu, batches of 4 slices from now on",
        "Grad-CAM: out of memory on cpu, batches of 2 slices from now on"]
    np.testing.assert_allclose(halved, fitting, rtol=0, atol=1e-5 * np.abs(fitting).max())


def _limited(forward, limit: int, only: torch.nn.Module | None = None):
    """`StackedDenseNet._forward` failing beyond `limit` slices, as a GPU too small would (in
    the stack of `only` alone, if given)."""
    def limited(self, x):
        if x.shape[0] > limit and (only is None or self.members[0] is only):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return forward(self, x)
    return limited


@pytest.mark.parametrize("name, problem", [("tpu", "is not auto, cpu or cuda"),
                                           ("cuda", "torch sees no CUDA GPU")])
def test_a_device_that_cannot_be_used_is_a_one_line_error(name, problem):
    if name == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(SarcogradeError, match=problem):
        resolve_device(name)

