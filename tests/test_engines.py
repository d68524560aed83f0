"""Inference engines: ONNX Runtime and OpenVINO give torch's logits and Grad-CAM maps, predict
and explain record the engine, a missing engine package is named in one line.

Runs (tiny quick-preset DenseNets at 32 x 32) and caches come from tests/fakes.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from sarcograde import engines
from sarcograde import model as model_lib
from sarcograde.attention import ForwardGradCam
from sarcograde.cli import main
from sarcograde.ensemble import forward_pass, load_ensemble, slice_logits
from sarcograde.errors import SarcogradeError
from fakes import SIZE, calibrated_model, synthetic_slices, write_cache, write_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ONNX_ENGINES = ("onnxruntime", "openvino")


def installed(engine: str):
    return pytest.param(engine, marks=pytest.mark.skipif(
        not engines.available(engine), reason=f"{engine} is not installed"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("run"), [calibrated_model(s) for s in (1, 2)])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    rng = np.random.default_rng(5)
    patients = {}
    for pid, (n, grade) in {"P01": (6, 1), "P02": (9, 3), "P03": (1, 2)}.items():
        image, mask = synthetic_slices(rng, n, brightness=1.0)
        patients[pid] = {"image": image, "mask": mask, "grade": grade}
    return write_cache(tmp_path_factory.mktemp("cache"), patients)


def slices(n: int = 5, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(2).standard_normal((n, size, size)).astype(np.float32)


@pytest.mark.parametrize("engine", [installed(e) for e in ONNX_ENGINES])
def test_engine_gives_torchs_logits_and_maps(run_dir, engine):
    reference = load_ensemble(run_dir)
    ours = engines.use_engine(load_ensemble(run_dir), engine)
    assert ours.engine.name == engine and ours.uses_onnx()
    logits, signed = forward_pass(ours, slices(), batch_size=2)
    torch_logits, torch_signed = forward_pass(reference, slices(), batch_size=2)
    assert reference.engine.name == "torch"
    np.testing.assert_allclose(logits, torch_logits, rtol=0, atol=1e-4)
    np.testing.assert_allclose(signed, torch_signed, rtol=0,
                               atol=1e-4 * np.abs(torch_signed).max())
    # predict's path: the model-by-model torch forward, untouched by the engine
    np.testing.assert_allclose(slice_logits(ours, slices(), 3),
                               slice_logits(reference, slices(), 3), rtol=0, atol=1e-4)


@pytest.mark.parametrize("engine", [installed(e) for e in ONNX_ENGINES])
def test_densenet161_graph_gives_torchs_logits(engine):
    """The paper's network with random weights, at 224 px."""
    torch.manual_seed(0)
    net = model_lib.build_model({"architecture": "densenet161"}).eval()
    x = torch.randn(2, 3, 224, 224)
    ours = engines.OnnxEngine(engine, [engines.onnx_graph(net, 224)], threads=1)
    logits, signed = ours.run(x)
    with torch.no_grad():
        torch_logits, torch_signed = ForwardGradCam(net)(x)
    np.testing.assert_allclose(logits[0].numpy(), torch_logits.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(signed[0].numpy(), torch_signed.numpy(), rtol=0,
                               atol=1e-4 * torch_signed.abs().max().item())


@pytest.mark.parametrize("engine", [installed(e) for e in ONNX_ENGINES])
def test_predict_with_an_engine_equals_torch(run_dir, cache_dir, tmp_path, engine):
    outputs = {}
    for name in ("torch", engine):
        out = tmp_path / name / "predictions.csv"
        assert main(["predict", str(run_dir), str(cache_dir), "--out", str(out),
                     "--engine", name, "--device", "cpu"]) == 0
        record = json.loads((tmp_path / name / "predictions.run.json").read_text())
        assert record["config"]["engine"] == name
        assert record["config"]["engine_version"] == (
            torch.__version__ if name == "torch" else importlib.metadata.version(name))
        outputs[name] = pd.read_csv(out)
    np.testing.assert_allclose(outputs[engine]["p_high"], outputs["torch"]["p_high"], atol=1e-3)
    assert (outputs[engine]["predicted"] == outputs["torch"]["predicted"]).all()


@pytest.mark.parametrize("engine", [installed(e) for e in ONNX_ENGINES])
def test_explain_with_an_engine_equals_torch(run_dir, cache_dir, tmp_path, engine):
    tables = {}
    for name in ("torch", engine):
        out = tmp_path / name
        assert main(["explain", str(run_dir), str(cache_dir), "--out", str(out),
                     "--engine", name, "--device", "cpu", "--patient-ids", "P01,P02"]) == 0
        config = json.loads((out / "run.json").read_text())["config"]
        assert (config["engine"], config["attention_pass"]) == (name, "forward")
        tables[name] = pd.read_csv(out / "attention.csv")
    for column in ("p_high", "inside", "ring", "elsewhere"):
        np.testing.assert_allclose(tables[engine][column], tables["torch"][column], atol=1e-3)


@pytest.mark.parametrize("engine", ONNX_ENGINES)
def test_a_missing_engine_package_is_named_in_one_line(run_dir, cache_dir, tmp_path,
                                                       monkeypatch, capsys, engine):
    monkeypatch.setitem(sys.modules, engine, None)   # import fails as if not installed
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run_dir), str(cache_dir), "--out", str(out),
                 "--engine", engine]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{engine} is not installed: this needs the Python package {engine}" in err
    assert not out.exists()


def test_auto_takes_the_fastest_engine_installed(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert engines.resolve_engine("auto", cuda) == "torch"
    with pytest.raises(SarcogradeError, match="runs on the CPU"):
        engines.resolve_engine("openvino", cuda)
    for installed_here, expected in (({"onnxruntime", "openvino"}, "onnxruntime"),
                                     ({"openvino"}, "openvino"), (set(), "torch")):
        monkeypatch.setattr(engines, "available", lambda e, s=installed_here: e in s)
        assert engines.resolve_engine("auto", cpu) == expected
    assert engines.engine_for_precision("auto", torch.bfloat16) == "torch"
    assert engines.engine_for_precision("openvino", None) == "openvino"


def test_an_onnx_engine_refuses_bf16(run_dir):
    if not engines.available("onnxruntime"):
        pytest.skip("onnxruntime is not installed")
    ensemble = engines.use_engine(load_ensemble(run_dir), "onnxruntime")
    with pytest.raises(SarcogradeError, match="fp32 only"):
        slice_logits(ensemble, slices(), precision=torch.bfloat16)


def test_the_same_slices_run_once_for_logits_and_maps(run_dir, monkeypatch):
    """grade's predict and explain of one patient: one forward pass."""
    ensemble = load_ensemble(run_dir)
    calls = []
    logits, signed = forward_pass(ensemble, slices(), batch_size=2)
    run = ensemble.engine.run
    monkeypatch.setattr(ensemble.engine, "run", lambda x: calls.append(len(x)) or run(x))
    again = forward_pass(ensemble, slices(), batch_size=4)
    assert calls == [] and again[0] is logits and again[1] is signed
    other = slices()
    other[0, 0, 0] += 1
    forward_pass(ensemble, other, batch_size=4)
    assert calls == [4, 1]
