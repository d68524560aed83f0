"""`sarcograde explain` and sarcograde.attention: Grad-CAM with a known answer, shares, ring in mm.

The known answer: a one-block DenseNet (16 x 16 feature map at 64 x 64) trained for a few steps
to call a slice high grade when a bright square sits in its top-left quadrant.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from matplotlib.image import imread

from sarcograde import model as model_lib
from sarcograde.attention import (cam_explainers, ensemble_cam, normalise_per_slice,
                                  patient_shares, slice_shares)
from sarcograde.cli import main
from sarcograde.explain import montage_slices
from fakes import PREPROCESS, write_cache, write_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64
SQUARE = (slice(4, 24), slice(4, 24))          # the evidence: top-left quadrant
ELSEWHERE = (slice(40, 60), slice(40, 60))     # a tumour far from it: bottom-right
MODEL_CFG = {"architecture": "densenet", "init_features": 8, "growth_rate": 4,
             "block_config": [2], "pretrained": "none"}
META = model_lib.input_meta(SIZE, pretrained=False)


def slices(rng: np.random.Generator, n: int, square: bool) -> np.ndarray:
    image = rng.normal(size=(n, SIZE, SIZE))
    if square:
        image[(slice(None), *SQUARE)] += 3.0
    return image.astype(np.float16)


def square_mask(n: int, where) -> np.ndarray:
    mask = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    mask[(slice(None), *where)] = 1
    return mask


@pytest.fixture(scope="module")
def square_model(one_torch_thread):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = model_lib.build_model(MODEL_CFG)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(30):
        labels = rng.integers(0, 2, 32)
        images = np.concatenate([slices(rng, 1, bool(y)) for y in labels])
        loss = F.cross_entropy(net(model_lib.prepare_input(images, META)),
                               torch.as_tensor(labels))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return net.eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, square_model):
    return write_run(tmp_path_factory.mktemp("run"), [square_model],
                     preprocess={**PREPROCESS, "size": SIZE}, model_cfg=MODEL_CFG)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    rng = np.random.default_rng(1)
    evidence = slices(rng, 15, square=True)
    patients = {
        "ON": {"image": evidence, "mask": square_mask(15, SQUARE), "grade": 3},
        "OFF": {"image": evidence, "mask": square_mask(15, ELSEWHERE), "grade": 2},
        "PLAIN": {"image": slices(rng, 4, square=False), "mask": square_mask(4, ELSEWHERE),
                  "grade": None},
    }
    for p in patients.values():
        p["pixel_mm"] = 1.0
    return write_cache(tmp_path_factory.mktemp("cache"), patients,
                       preprocess={**PREPROCESS, "size": SIZE})


def explain(run_dir, cache_dir, out, *extra) -> pd.DataFrame:
    assert main(["explain", str(run_dir), str(cache_dir), "--out", str(out), "--ring-mm", "4",
                 *extra]) == 0
    return pd.read_csv(out / "attention.csv", dtype={"patient_id": str}).set_index("patient_id")


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_attention_falls_on_the_evidence(square_model, method):
    images = slices(np.random.default_rng(2), 6, square=True)
    cam = ensemble_cam(cam_explainers([square_model], method), images, 1, META)
    np.testing.assert_allclose(cam.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    in_quadrant = cam[:, :SIZE // 2, :SIZE // 2].sum(axis=(1, 2))
    assert (in_quadrant > 0.8).all(), in_quadrant


def test_gradcam_equals_a_hand_computation(square_model):
    """Grad-CAM of the margin logit(high) - logit(low) on features.norm5, written out by hand."""
    images = slices(np.random.default_rng(3), 3, square=True)
    activations = {}
    hook = square_model.features.norm5.register_forward_hook(
        lambda _m, _i, out: activations.update(a=out))
    x = model_lib.prepare_input(images, META)
    logits = square_model(x)
    hook.remove()
    a = activations["a"]
    grad, = torch.autograd.grad((logits[:, 1] - logits[:, 0]).sum(), a)
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    expected = normalise_per_slice(cam.detach().numpy().astype(np.float64))
    ours = ensemble_cam(cam_explainers([square_model]), images, 1, META)
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_shares_sum_to_one():
    rng = np.random.default_rng(4)
    cam = rng.random((5, 20, 20)) ** 4
    cam[3] = 0                                            # a slice without attention
    mask = (rng.random((5, 20, 20)) > 0.8).astype(np.uint8)
    mask[1] = 0                                           # a slice without tumour
    shares = slice_shares(cam, mask, pixel_mm=1.2, ring_mm=3)
    attended = [0, 1, 2, 4]
    np.testing.assert_allclose(shares[attended].sum(axis=1), 1.0)
    assert (shares[attended] >= 0).all() and np.isnan(shares[3]).all()
    assert shares[1, 0] == 0 and shares[1, 1] == 0 and shares[1, 2] == pytest.approx(1)
    np.testing.assert_allclose(shares[0, 0], cam[0][mask[0] > 0].sum() / cam[0].sum())
    np.testing.assert_allclose(patient_shares(shares), shares[attended].mean(axis=0))
    assert patient_shares(shares).sum() == pytest.approx(1)


@pytest.mark.parametrize("pixel_mm", [0.5, 2.0])
def test_ring_is_measured_in_mm(pixel_mm):
    """With uniform attention the ring's share is its pixel count: checked by brute force."""
    yy, xx = np.mgrid[:64, :64]
    mask = ((yy - 32) ** 2 + (xx - 29) ** 2 <= 100).astype(np.uint8)
    cam = np.ones((1, 64, 64))
    shares = slice_shares(cam, mask[None], pixel_mm=pixel_mm, ring_mm=4.0)[0]
    tumour = np.argwhere(mask > 0)
    pixels = np.argwhere(np.ones_like(mask))
    nearest_mm = np.sqrt(((pixels[:, None] - tumour[None]) ** 2).sum(-1)).min(1) * pixel_mm
    ring = (nearest_mm <= 4.0) & (mask.ravel() == 0)
    assert shares[0] == pytest.approx(mask.sum() / mask.size)
    assert shares[1] == pytest.approx(ring.sum() / mask.size)
    # The ring is about an annulus 4 mm wide around a disc of radius 10 pixels: 8 pixels wide at
    # 0.5 mm per pixel, 2 pixels at 2 mm.
    ring_px = 4.0 / pixel_mm
    assert ring.sum() == pytest.approx(np.pi * ((10 + ring_px) ** 2 - 10 ** 2), rel=0.15)


def test_montage_slices_are_evenly_spaced():
    chosen = montage_slices(40, 12)
    assert len(chosen) == 12 and chosen[0] == 0 and chosen[-1] == 39
    assert np.ptp(np.diff(chosen)) <= 1
    np.testing.assert_array_equal(montage_slices(5, 12), np.arange(5))


@pytest.mark.parametrize("target, predicted, truth", [
    ("grade", "predicted high grade", "true grade G3 (high)"),
    ("lung_metastasis", "predicted lung metastasis yes", "true lung metastasis: no"),
])
def test_the_montage_title_names_the_target_and_its_classes(target, predicted, truth):
    """A study of another target keeps the target's class as grade G1/G3 in its caches; the
    montage names the class, never a grade it is not."""
    import matplotlib.pyplot as plt

    from sarcograde.explain import plot_montage

    rng = np.random.default_rng(0)
    arrays = {"image": rng.normal(size=(3, 16, 16)), "mask": np.ones((3, 16, 16), bool),
              "pixel_mm": np.ones(3)}
    grade, label = (3, 1) if target == "grade" else (1, 0)
    summary = {"predicted": 1, "grade": grade, "label": label, "p_high": 0.7, "inside": 0.5,
               "ring": 0.3, "elsewhere": 0.2, "off_tumour": False}
    fig = plot_montage("p1", arrays, rng.uniform(size=(3, 16, 16)), np.full(3, 0.7), summary,
                       ring_mm=10, method="gradcam", n_models=2, target=target)
    title = fig._suptitle.get_text()
    plt.close(fig)
    assert predicted in title and truth in title
    assert ("grade" in title) == (target == "grade")


def test_explain_end_to_end(run_dir, cache_dir, tmp_path):
    out = tmp_path / "explain"
    table = explain(run_dir, cache_dir, out)
    assert list(table.columns) == ["n_slices", "p_high", "predicted", "label", "inside", "ring",
                                   "elsewhere", "off_tumour"]
    np.testing.assert_allclose(table[["inside", "ring", "elsewhere"]].sum(axis=1), 1.0, atol=1e-6)
    on, off = table.loc["ON"], table.loc["OFF"]
    assert on["predicted"] == 1 and on["label"] == 1 and on["n_slices"] == 15
    assert on["inside"] + on["ring"] > 0.8 and not on["off_tumour"]
    # Same slices, tumour drawn away from the evidence: the paper's "attention on air" case.
    assert off["inside"] + off["ring"] < 0.2 and off["off_tumour"]
    assert off["p_high"] == on["p_high"]
    assert pd.isna(table.loc["PLAIN", "label"])

    # Same p_high as `sarcograde predict` on the same run and cache.
    assert main(["predict", str(run_dir), str(cache_dir), "--out",
                 str(tmp_path / "predictions.csv")]) == 0
    predictions = pd.read_csv(tmp_path / "predictions.csv", dtype={"patient_id": str})
    np.testing.assert_allclose(table["p_high"], predictions.set_index("patient_id")["p_high"]
                               .loc[table.index], atol=1e-6)

    per_slice = pd.read_csv(out / "attention_slices.csv", dtype={"patient_id": str})
    assert len(per_slice) == 15 + 15 + 4
    np.testing.assert_allclose(per_slice.groupby("patient_id")[["inside", "ring"]].mean()
                               .loc[table.index], table[["inside", "ring"]], atol=1e-6)
    for pid in table.index:
        picture = imread(out / f"{pid}.png")
        assert picture.ndim == 3 and picture.shape[0] > 200 and picture.shape[1] > 200
        assert picture[..., :3].std() > 0.05     # not a blank canvas
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["status"] == "finished"


def test_rescoring_reuses_the_maps(run_dir, cache_dir, tmp_path, capsys):
    out = tmp_path / "explain"
    narrow = explain(run_dir, cache_dir, out, "--patient-ids", "OFF")
    assert list(narrow.index) == ["OFF"]
    maps = out / "maps" / "OFF.npz"
    stamp = maps.stat().st_mtime_ns
    capsys.readouterr()
    # the old spelling of --patient-ids, deprecated: the same run, and one note
    wide = explain(run_dir, cache_dir, out, "--patients", "OFF", "--ring-mm", "40")
    assert [line for line in capsys.readouterr().err.splitlines() if "note" in line] == [
        "sarcograde explain: note: --patients is deprecated; use --patient-ids (the old spelling "
        "goes in the next version)"]
    assert list(wide.index) == ["OFF"]
    assert maps.stat().st_mtime_ns == stamp                    # not recomputed
    assert wide.loc["OFF", "ring"] > narrow.loc["OFF", "ring"] + 0.3
    assert wide.loc["OFF", "inside"] == narrow.loc["OFF", "inside"]
    assert not wide.loc["OFF", "off_tumour"]


def test_unknown_patient(run_dir, cache_dir, tmp_path, capsys):
    assert main(["explain", str(run_dir), str(cache_dir), "--out", str(tmp_path / "x"),
                 "--patient-ids", "ON,NOBODY"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not in the cache: NOBODY" in err
    assert not (tmp_path / "x" / "attention.csv").exists()
