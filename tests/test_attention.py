"""Grad-CAM of an ensemble: the per-model short-backward path (the CPU default) and the stacked
path (one pass for all models) equal MONAI's per model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sarcograde import model as model_lib
from sarcograde import attention
from sarcograde.attention import CAM_MODES, cam_explainers, ensemble_cam, stacked_cam
from sarcograde.train.stacked_densenet import StackedDenseNet

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
@pytest.mark.parametrize("mode", [None, "per-model", "stacked"])   # None: the CPU default
def test_ensemble_cam_equals_monai_per_model(method, target, mode):
    nets = tiny_models()
    explainers = cam_explainers(nets, method)
    reference = ensemble_cam(explainers, images(), target, META, batch_size=4)
    ours = ensemble_cam(explainers, images(), target, META, batch_size=4, mode=mode)
    assert_same_maps(ours, reference)
    np.testing.assert_allclose(ours.sum(axis=(1, 2)), 1.0, rtol=1e-5)


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


@pytest.mark.parametrize("mode", ["per-model", "stacked"])
def test_the_models_still_work_one_by_one_after_a_stacked_cam(mode):
    nets = tiny_models()
    x = model_lib.prepare_input(torch.from_numpy(images(4)), META)
    with torch.no_grad():
        before = [net(x) for net in nets]
    explainers = cam_explainers(nets, "gradcam")
    ensemble_cam(explainers, images(4), 1, META, mode=mode)
    with torch.no_grad():
        for net, logits in zip(nets, before):
            torch.testing.assert_close(net(x), logits)
    for net in nets:        # no gradient left on the models, no module left in training mode
        assert all(p.grad is None for p in net.parameters())
        assert not any(m.training for m in net.modules())
    reference = ensemble_cam(explainers, images(4), 1, META, mode="monai")  # MONAI hooks intact
    assert_same_maps(ensemble_cam(explainers, images(4), 1, META, mode=mode), reference)


def test_per_model_maps_leave_the_ensembles_stack_in_place():
    """A stack of one shares its model's tensors: the K-model stack that `slice_logits` builds
    (on a GPU) keeps holding the models, is handed out again and gives the same logits."""
    nets = tiny_models()
    stack = StackedDenseNet(nets).eval()
    x = model_lib.prepare_input(torch.from_numpy(images(4)), META)
    with torch.no_grad():
        before = stack(x[:, None].expand(-1, 3, -1, -1, -1))
    pointers = [p.data_ptr() for net in nets for p in net.parameters()]
    explainers = cam_explainers(nets, "gradcam++")
    per_model = ensemble_cam(explainers, images(4), 0, META, mode="per-model")
    assert [p.data_ptr() for net in nets for p in net.parameters()] == pointers
    assert StackedDenseNet.of(nets) is stack
    with torch.no_grad():
        torch.testing.assert_close(stack(x[:, None].expand(-1, 3, -1, -1, -1)), before)
    assert_same_maps(ensemble_cam(explainers, images(4), 0, META, mode="stacked"), per_model)


def test_the_stack_is_built_once_and_shared_with_the_ensembles():
    nets = tiny_models()
    stack = StackedDenseNet(nets)
    assert StackedDenseNet.of(nets) is stack
    assert StackedDenseNet.of(nets, channels_last=True) is not stack   # another layout
    assert StackedDenseNet.of(nets[:2]) is not stack                    # other members
    again = StackedDenseNet.of(nets)   # the models now point at the channels-last stack
    assert again is not stack and StackedDenseNet.of(nets) is again


def test_cpu_runs_each_model_alone_by_default(monkeypatch):
    nets = tiny_models(2)
    sizes = []
    run = attention.stacked_cam
    monkeypatch.setattr("sarcograde.attention.stacked_cam",
                        lambda stack, *a, **k: sizes.append(stack.k) or run(stack, *a, **k))
    monkeypatch.setattr(attention.MarginHooks, "__call__",     # MONAI's own pass is not run
                        lambda *a, **k: pytest.fail("MONAI's forward and full backward"))
    ensemble_cam(cam_explainers(nets), images(5), 1, META, batch_size=4)
    assert sizes == [1, 1, 1, 1]   # two batches x two models, each a stack of one
    assert attention.default_cam_mode("cpu") == "per-model"
    assert attention.default_cam_mode("cuda") == "stacked"


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="per-model"):
        ensemble_cam(cam_explainers(tiny_models(1)), images(2), 1, META, mode="fast")
    assert set(CAM_MODES) == {"monai", "per-model", "stacked"}


def test_capturing_an_unknown_layer_is_refused():
    stack = StackedDenseNet(tiny_models(2))
    with pytest.raises(ValueError, match="features.norm9"):
        stack(torch.zeros(1, 2, 3, 32, 32), capture="features.norm9")
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("target", [0, 1])
def test_forward_gradcam_equals_monai_for_each_model(target):
    """The map from one forward pass (the head's weights and the ReLU's mask) is MONAI's Grad-CAM
    of the margin, with its backward pass, model by model and for the ensemble."""
    nets = tiny_models()
    x = model_lib.prepare_input(torch.from_numpy(images(5)), META)
    signed = []
    for net, explainer in zip(nets, cam_explainers(nets, "gradcam")):
        with torch.no_grad():
            logits, model_signed = attention.ForwardGradCam(net)(x)
            torch.testing.assert_close(logits, net(x))
        with torch.enable_grad():
            reference = explainer(x.clone().requires_grad_(True), class_idx=target)[:, 0]
        ours = attention.class_map(model_signed, target, (32, 32))
        assert (ours > 0).any() and (reference.detach() == 0).any()   # ReLU cuts somewhere
        assert_same_maps(ours.numpy(), reference.detach().numpy())
        signed.append(model_signed.numpy())
    ensemble = ensemble_cam(cam_explainers(nets, "gradcam"), images(5), target, META,
                            mode="monai")
    assert_same_maps(attention.forward_cam(np.stack(signed), target, 32), ensemble)


def test_forward_gradcam_needs_relu_pooling_and_a_linear_head():
    net = tiny_models(1)[0]
    net.class_layers = torch.nn.Sequential(torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(),
                                           torch.nn.Linear(16, 2))
    with pytest.raises(ValueError, match="linear head"):
        attention.ForwardGradCam(net)
