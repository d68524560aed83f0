"""`export --onnx`: the fold models as ONNX graphs in the package, checked against torch at
export, used by `grade --engine onnxruntime|openvino`, refused when damaged."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from sarcograde import engines
from sarcograde.cli import main
from sarcograde.errors import SarcogradeError
from sarcograde.formats.package import MODEL_JSON, read_package
from test_grade import SEQUENCES, built, grade_one  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not engines.available("onnxruntime"),
                                 reason="onnxruntime is not installed")]


def export(built, out, *extra) -> int:
    runs = [a for seq in SEQUENCES for a in ("--run", f"{seq}={built / f'run-{seq}'}")]
    return main(["export", *runs, "--fusion", str(built / "fusion"), "--out", str(out),
                 "--onnx", *extra])


@pytest.fixture(scope="module")
def onnx_package(built):
    assert export(built, built / "pkg-onnx") == 0
    return built / "pkg-onnx"


def test_the_package_holds_a_checked_graph_per_fold(onnx_package):
    document = json.loads((onnx_package / MODEL_JSON).read_text())
    assert document["onnx"]["opset"] == engines.OPSET
    assert "within 0.0001 of torch's" in document["onnx"]["check"]
    for seq in SEQUENCES:
        names = [fold["onnx"] for fold in document["models"][seq]["folds"]]
        assert names == [f"{seq}/fold_00.onnx", f"{seq}/fold_01.onnx"]
        assert all(name in document["files"] for name in names)
    assert "ONNX graph (opset 17" in (onnx_package / "MODEL_CARD.md").read_text()
    record = json.loads((onnx_package.parent / "pkg-onnx.run.json").read_text())
    assert all(0 <= d <= 1e-4 for d in record["onnx_largest_logit_difference"].values())


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_grade_runs_the_packages_graphs_with_torchs_result(built, onnx_package, tmp_path,
                                                          monkeypatch, engine):
    if not engines.available(engine):
        pytest.skip(f"{engine} is not installed")
    reference = grade_one(built, tmp_path / "torch", "--engine", "torch")
    # the graphs come from the package: none is exported while grading
    monkeypatch.setattr(engines, "onnx_graph", lambda *a: pytest.fail("exported at grade"))
    # a later --model takes the place of grade_one's package
    ours = grade_one(built, tmp_path / engine, "--model", str(onnx_package), "--engine", engine)
    assert (reference["engine"], ours["engine"]) == ("torch", engine)
    assert abs(ours["p_high"] - reference["p_high"]) <= 1e-3
    assert ours["grade"] == reference["grade"]
    for seq in SEQUENCES:
        assert abs(ours["sequences"][seq]["p_high"]
                   - reference["sequences"][seq]["p_high"]) <= 1e-3


def test_auto_runs_the_packages_graphs_and_torch_where_it_has_none(built, onnx_package,
                                                                    monkeypatch):
    """`--engine auto` (the default) takes the fastest engine for a package with graphs, and
    torch for one without: exporting graphs at grading costs more than one patient gains."""
    from sarcograde.ensemble import package_ensemble

    monkeypatch.setattr(engines, "onnx_graph", lambda *a: pytest.fail("exported at grade"))
    with_graphs = package_ensemble(read_package(onnx_package), SEQUENCES[0], "cpu", "auto")
    assert with_graphs.engine.name == engines.resolve_engine("auto", torch.device("cpu"))
    without = package_ensemble(read_package(built / "pkg"), SEQUENCES[0], "cpu", "auto")
    assert without.engine.name == "torch"


def test_a_damaged_graph_is_refused_in_one_line(onnx_package, tmp_path):
    damaged = tmp_path / "pkg"
    damaged.mkdir()
    for path in onnx_package.rglob("*"):
        if path.is_file():
            target = damaged / path.relative_to(onnx_package)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    graph = damaged / SEQUENCES[0] / "fold_01.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(SarcogradeError) as refused:
        read_package(damaged)
    message = str(refused.value)
    assert "fold_01.onnx" in message and "SHA-256 differs" in message
    assert len(message.splitlines()) == 1


def test_an_export_whose_graph_differs_from_torch_fails_naming_the_difference(
        built, tmp_path, monkeypatch, capsys):
    exported = engines.onnx_graph

    def shifted(network, size):   # a graph whose logits are 0.01 away from torch's
        other = copy.deepcopy(network)
        with torch.no_grad():
            other.class_layers.out.bias += 0.01
        return exported(other, size)

    monkeypatch.setattr(engines, "onnx_graph", shifted)
    out = tmp_path / "pkg"
    assert export(built, out) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "logits up to 0.01 from torch's" in err and "fold_00" in err
    assert not out.exists()
