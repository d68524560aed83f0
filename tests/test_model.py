"""The network, torchvision weight loading, the fold-model file and the input mapping."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sarcograde import model as model_lib
from sarcograde.config import load_config
from sarcograde.errors import SarcogradeError

SMALL = {"architecture": "densenet", "init_features": 16, "growth_rate": 8,
         "block_config": [2, 3, 2], "pretrained": "none"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def torchvision_state_dict(init: int, growth: int, blocks: list[int], old_keys: bool,
                           seed: int = 0, classes: int = 1000) -> dict[str, torch.Tensor]:
    """Random weights in torchvision's DenseNet layout (bn_size 4), written out from
    torchvision/models/densenet.py; `old_keys` spells dense-layer modules "norm.1" as in the
    ImageNet file."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def batch_norm(prefix: str, channels: int) -> None:
        state[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(channels, generator=g)
        state[f"{prefix}.bias"] = 0.1 * torch.randn(channels, generator=g)
        state[f"{prefix}.running_mean"] = 0.1 * torch.randn(channels, generator=g)
        state[f"{prefix}.running_var"] = 0.5 + torch.rand(channels, generator=g)

    def conv(name: str, out: int, inp: int, k: int) -> None:
        state[name] = torch.randn(out, inp, k, k, generator=g) * (2 / (inp * k * k)) ** 0.5

    sep = "." if old_keys else ""
    conv("features.conv0.weight", init, 3, 7)
    batch_norm("features.norm0", init)
    channels = init
    for b, n_layers in enumerate(blocks, start=1):
        for layer in range(1, n_layers + 1):
            p = f"features.denseblock{b}.denselayer{layer}"
            batch_norm(f"{p}.norm{sep}1", channels)
            conv(f"{p}.conv{sep}1.weight", 4 * growth, channels, 1)
            batch_norm(f"{p}.norm{sep}2", 4 * growth)
            conv(f"{p}.conv{sep}2.weight", growth, 4 * growth, 3)
            channels += growth
        if b < len(blocks):
            batch_norm(f"features.transition{b}.norm", channels)
            conv(f"features.transition{b}.conv.weight", channels // 2, channels, 1)
            channels //= 2
    batch_norm("features.norm5", channels)
    state["classifier.weight"] = torch.randn(classes, channels, generator=g)
    state["classifier.bias"] = torch.randn(classes, generator=g)
    return state


def reference_embedding(state: dict, x: torch.Tensor, blocks: list[int], old_keys: bool):
    """torchvision's DenseNet forward up to the pooled features, written with torch.nn.functional."""
    sep = "." if old_keys else ""

    def bn_relu(h, prefix):
        return F.relu(F.batch_norm(h, state[f"{prefix}.running_mean"],
                                   state[f"{prefix}.running_var"], state[f"{prefix}.weight"],
                                   state[f"{prefix}.bias"], training=False, eps=1e-5))

    h = F.conv2d(x, state["features.conv0.weight"], stride=2, padding=3)
    h = F.max_pool2d(bn_relu(h, "features.norm0"), 3, stride=2, padding=1)
    for b, n_layers in enumerate(blocks, start=1):
        for layer in range(1, n_layers + 1):
            p = f"features.denseblock{b}.denselayer{layer}"
            new = F.conv2d(bn_relu(h, f"{p}.norm{sep}1"), state[f"{p}.conv{sep}1.weight"])
            new = F.conv2d(bn_relu(new, f"{p}.norm{sep}2"), state[f"{p}.conv{sep}2.weight"],
                           padding=1)
            h = torch.cat([h, new], 1)
        if b < len(blocks):
            h = F.conv2d(bn_relu(h, f"features.transition{b}.norm"),
                         state[f"features.transition{b}.conv.weight"])
            h = F.avg_pool2d(h, 2, stride=2)
    return F.adaptive_avg_pool2d(bn_relu(h, "features.norm5"), 1).flatten(1)


def test_densenet161_matches_the_published_size():
    net = model_lib.build_model(load_config("paper")["model"])
    n_params = sum(p.numel() for p in net.parameters())
    # torchvision's densenet161: 28,681,000 parameters with its 2208 x 1000 ImageNet head.
    assert n_params == 28_681_000 - (2208 * 1000 + 1000) + (2208 * 2 + 2)
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 2)


def test_build_model_rejects_bad_configs():
    with pytest.raises(SarcogradeError, match="unknown model architecture"):
        model_lib.build_model({"architecture": "resnet50"})
    with pytest.raises(SarcogradeError, match="densenet161 is"):
        model_lib.build_model({"architecture": "densenet161", "growth_rate": 32})
    with pytest.raises(SarcogradeError, match="lacks block_config"):
        model_lib.build_model({"architecture": "densenet", "init_features": 8, "growth_rate": 4})


@pytest.mark.parametrize("old_keys", [False, True])
def test_torchvision_weights_reproduce_the_network(tmp_path, old_keys):
    blocks = SMALL["block_config"]
    state = torchvision_state_dict(16, 8, blocks, old_keys)
    path = tmp_path / "densenet.pth"
    torch.save(state, path)
    torch.manual_seed(0)
    net = model_lib.load_pretrained(model_lib.build_model(SMALL), path).eval()
    x = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference_embedding(state, x, blocks, old_keys)
        embedding = net.class_layers.flatten(net.class_layers.pool(
            net.class_layers.relu(net.features(x))))
        logits = net(x)
    torch.testing.assert_close(embedding, expected, rtol=0, atol=0)
    # The ImageNet head is dropped for a fresh two-class head on the same features.
    head = net.class_layers.out
    assert head.weight.shape == (2, expected.shape[1])
    torch.testing.assert_close(logits, expected @ head.weight.T + head.bias, rtol=0, atol=0)


def test_densenet161_loads_every_torchvision_key(tmp_path):
    paper = load_config("paper")["model"]
    state = torchvision_state_dict(96, 48, paper["block_config"], old_keys=True)
    torch.save(state, tmp_path / "w.pth")
    net = model_lib.load_pretrained(model_lib.build_model(paper), tmp_path / "w.pth")
    loaded = net.state_dict()
    for key, value in state.items():
        if not key.startswith("classifier."):
            assert torch.equal(loaded[model_lib.torchvision_to_monai_key(key)], value), key


def test_weights_that_do_not_fit_are_refused(tmp_path):
    state = torchvision_state_dict(16, 8, SMALL["block_config"], old_keys=False)
    net = model_lib.build_model(SMALL)
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "features.norm5.bias"},
                    r"1 model weights missing from the file: features\.norm5\.bias"),
        "extra": ({**state, "features.denseblock9.conv.weight": torch.zeros(1)},
                  r"1 keys the model does not have: features\.denseblock9\.conv\.weight"),
        "shape": (torchvision_state_dict(16, 12, SMALL["block_config"], old_keys=False),
                  "keys with a different shape"),
    }
    for name, (bad, message) in cases.items():
        torch.save(bad, tmp_path / f"{name}.pth")
        with pytest.raises(SarcogradeError, match=message) as err:
            model_lib.load_pretrained(net, tmp_path / f"{name}.pth")
        assert f"{name}.pth" in str(err.value)
    with pytest.raises(SarcogradeError, match="not found"):
        model_lib.load_pretrained(net, tmp_path / "absent.pth")


def test_imagenet_lookup_uses_torch_checkpoint_folder_or_says_where(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    net = model_lib.build_model(SMALL)
    with pytest.raises(SarcogradeError) as err:
        model_lib.load_pretrained(net, "imagenet")
    message = str(err.value)
    assert model_lib.IMAGENET_FILE in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "--pretrained none" in message and "no network" in message

    state = torchvision_state_dict(16, 8, SMALL["block_config"], old_keys=True)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / model_lib.IMAGENET_FILE)
    model_lib.load_pretrained(net, "imagenet")
    assert torch.equal(net.features.conv0.weight, state["features.conv0.weight"])


def test_prepare_input_maps_z_scores_to_imagenet_grey():
    z = np.random.default_rng(0).normal(size=(4, 16, 16)).astype(np.float16)
    scratch = model_lib.prepare_input(z, model_lib.input_meta(16, pretrained=False))
    assert scratch.shape == (4, 3, 16, 16) and scratch.dtype == torch.float32
    for c in range(3):
        assert torch.equal(scratch[:, c], torch.from_numpy(z.astype(np.float32)))
    pretrained = model_lib.prepare_input(z, model_lib.input_meta(16, pretrained=True))
    # Body mean (z = 0) becomes ImageNet's mean grey 0.449, one SD 0.226, then per channel
    # torchvision's Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)).
    grey = 0.449 + 0.226 * z.astype(np.float64)
    for c, (m, s) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        np.testing.assert_allclose(pretrained[:, c].numpy(), (grey - m) / s, rtol=1e-5, atol=1e-5)


def test_fold_model_round_trip(tmp_path):
    torch.manual_seed(0)
    net = model_lib.build_model(SMALL)
    net.train()
    net(torch.randn(8, 3, 32, 32))  # move the batch-norm statistics away from their defaults
    meta = model_lib.input_meta(32, pretrained=False)
    model_lib.save_fold_model(tmp_path / "fold_03" / "model.pt", net, model_cfg=SMALL,
                              input_meta=meta, preprocess_cfg={"size": 32}, best_epoch=4,
                              repeat=0, fold=3)
    assert sorted(p.name for p in (tmp_path / "fold_03").iterdir()) == ["model.pt"]
    loaded, info = model_lib.load_fold_model(tmp_path / "fold_03" / "model.pt")
    assert not loaded.training
    assert info["classes"] == ["low", "high"] and info["best_epoch"] == 4 and info["fold"] == 3
    assert info["input"] == meta and info["model"] == SMALL
    x = model_lib.prepare_input(np.random.default_rng(1).normal(size=(5, 32, 32)), meta)
    with torch.no_grad():
        assert torch.equal(loaded(x), net.eval()(x))
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(SarcogradeError, match="bad.pt: not a readable"):
        model_lib.load_fold_model(tmp_path / "bad.pt")


def test_gradcam_layer_gives_a_map():
    from monai.visualize import GradCAM

    net = model_lib.build_model(SMALL).eval()
    cam = GradCAM(net, target_layers=model_lib.GRADCAM_LAYER)
    x = model_lib.prepare_input(np.random.default_rng(2).normal(size=(2, 32, 32)),
                                model_lib.input_meta(32, pretrained=False))
    heat = cam(x)
    assert heat.shape == (2, 1, 32, 32) and torch.isfinite(heat).all()
