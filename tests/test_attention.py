"""Grad-CAM of an ensemble: the stacked path (one pass for all models) equals MONAI's per model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarcograde import model as model_lib
from sarcograde.attention import cam_explainers, ensemble_cam, stacked_cam
from sarcograde.stacked import StackedDenseNet

TINY = {"architecture": "densenet", "init_features": 8, "growth_rate": 4, "block_config": [2, 2]}
META = model_lib.input_meta(32, pretrained=False)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_models(k: int = 3) -> list[torch.nn.Module]:
    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        net = model_lib.build_model(TINY).eval()
        for module in net.modules():   # running statistics that differ from the identity
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
        nets.append(net)
    return nets


def images(n: int = 7) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((n, 32, 32)).astype(np.float32)


def assert_same_maps(ours: np.ndarray, reference: np.ndarray) -> None:
    scale = np.abs(reference).max()
    assert scale > 0
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("target", [0, 1])
def test_stacked_ensemble_cam_equals_monai_per_model(method, target):
    nets = tiny_models()
    explainers = cam_explainers(nets, method)
    reference = ensemble_cam(explainers, images(), target, META, batch_size=4, stacked=False)
    stacked = ensemble_cam(explainers, images(), target, META, batch_size=4, stacked=True)
    assert_same_maps(stacked, reference)
    np.testing.assert_allclose(stacked.sum(axis=(1, 2)), 1.0, rtol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("channels_last", [False, True])   # True: the stack's layout on a GPU
def test_each_members_raw_map_is_its_monai_map(method, channels_last):
    nets = tiny_models()
    x = model_lib.prepare_input(torch.from_numpy(images(5)), META)
    maps = stacked_cam(StackedDenseNet(nets, channels_last=channels_last), x, 1, method)
    assert maps.shape == (5, 3, 32, 32)
    for k, explainer in enumerate(cam_explainers(nets, method)):
        with torch.enable_grad():
            reference = explainer(x.clone().requires_grad_(True), class_idx=1)[:, 0].detach()
        assert_same_maps(maps[:, k].numpy(), reference.numpy())


def test_the_models_still_work_one_by_one_after_a_stacked_cam():
    nets = tiny_models()
    x = model_lib.prepare_input(torch.from_numpy(images(4)), META)
    with torch.no_grad():
        before = [net(x) for net in nets]
    explainers = cam_explainers(nets, "gradcam")
    ensemble_cam(explainers, images(4), 1, META, stacked=True)
    with torch.no_grad():
        for net, logits in zip(nets, before):
            torch.testing.assert_close(net(x), logits)
    for net in nets:        # no gradient left on the models, no module left in training mode
        assert all(p.grad is None for p in net.parameters())
        assert not any(m.training for m in net.modules())
    reference = ensemble_cam(explainers, images(4), 1, META, stacked=False)  # MONAI hooks intact
    assert_same_maps(ensemble_cam(explainers, images(4), 1, META, stacked=True), reference)


def test_the_stack_is_built_once_and_shared_with_the_ensembles():
    nets = tiny_models()
    stack = StackedDenseNet(nets)
    assert StackedDenseNet.of(nets) is stack
    assert StackedDenseNet.of(nets, channels_last=True) is not stack   # another layout
    assert StackedDenseNet.of(nets[:2]) is not stack                    # other members
    again = StackedDenseNet.of(nets)   # the models now point at the channels-last stack
    assert again is not stack and StackedDenseNet.of(nets) is again


def test_cpu_keeps_the_per_model_path_by_default(monkeypatch):
    nets = tiny_models(2)
    monkeypatch.setattr("sarcograde.attention.stacked_cam",
                        lambda *a, **k: pytest.fail("stacked on a CPU by default"))
    ensemble_cam(cam_explainers(nets), images(2), 1, META)


def test_capturing_an_unknown_layer_is_refused():
    stack = StackedDenseNet(tiny_models(2))
    with pytest.raises(ValueError, match="features.norm9"):
        stack(torch.zeros(1, 2, 3, 32, 32), capture="features.norm9")
    assert torch.is_grad_enabled()
