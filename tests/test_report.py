"""`sarcograde report`: every section present, numbers equal the artifacts, images embedded."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sarcograde import cli
from sarcograde.report import (SarcogradeError, build_report, format_ci, format_estimate,
                               format_p)

METRIC_KEYS = ("auc", "precision", "sensitivity", "specificity", "f1", "accuracy", "brier",
               "calibration_slope", "calibration_intercept", "net_benefit")
SECTIONS = ("flow", "cohort", "performance", "survival", "attention", "training", "methods",
            "provenance")


# --------------------------------------------------------------------------------------------
# A small evaluate / explain / train / preprocess output, in the formats of docs/artifacts.md


def _png(path: Path, seed: int, kind: str = "line") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(4, 3))
    if kind == "image":
        ax.imshow(rng.normal(size=(32, 96)), cmap="gray")
        ax.axis("off")
    else:
        ax.plot(np.sort(rng.uniform(size=20)), np.sort(rng.uniform(size=20)))
        ax.set_title(path.stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=60)
    plt.close(fig)


def _estimate(rng, low=0.55, high=0.95) -> dict:
    value = float(rng.uniform(low, high))
    return {"value": value, "ci95": [value - float(rng.uniform(0.04, 0.2)),
                                     value + float(rng.uniform(0.01, 0.05))]}


def _metrics_block(rng) -> dict:
    block = {key: _estimate(rng) for key in METRIC_KEYS}
    block["brier"] = _estimate(rng, 0.1, 0.3)
    # An intercept whose interval crosses zero: formatted with "to", not "--".
    block["calibration_intercept"] = {"value": -0.3127, "ci95": [-1.2049, 0.4413]}
    return block


def write_fixture(root: Path, *, baselines=True, survival=True, cohort=True, explain=True,
                  run=True, synthetic=False, n=40) -> dict:
    """Write EVAL (+ EXPLAIN, RUN, CACHE) folders under `root`; returns their paths."""
    rng = np.random.default_rng(7)
    eval_dir = root / "eval"
    eval_dir.mkdir(parents=True)
    predictions = root / "predictions.csv"
    predictions.write_text("patient_id,p_high,predicted\n")
    (root / "predictions.run.json").write_text(json.dumps({"config": {"aggregate": "logits"}}))
    metrics = {"model": "DL-T2FS", "predictions": str(predictions), "n": n, "n_low": 6,
               "n_high": n - 6, "threshold": 0.5, **_metrics_block(rng),
               "bootstrap": {"resamples": 200, "seed": 0, "interval": "percentile, 95%"}}
    metrics["youden"] = {"threshold": 0.6234, "n_training": 60,
                         **{k: _estimate(rng) for k in
                            ("precision", "sensitivity", "specificity", "f1", "accuracy")}}
    if baselines:
        metrics["baselines"] = {
            "model": "logistic regression (scikit-learn), standardised features",
            "features": {"clinical": ["t_stage", "n_stage", "m_stage", "age"],
                         "volume": ["log_volume"]},
            "imputation": ["age: missing for 2/60 training and 0/40 test patients, imputed"],
            "dropped_features": [], "cv": {"folds": 3, "repeats": 2, "source": "the DL run's"},
            "models": {name: {"label": label, **_metrics_block(rng),
                              "delong_vs_dl": {"z": 1.0, "p": p}}
                       for name, label, p in (("clinical", "Clinical", 0.01234),
                                              ("volume", "Tumour volume", 0.00042),
                                              ("combined", "Clinical + volume", 0.5))}}
        metrics["baselines"]["models"]["broken"] = {"note": "not computable: no feature values"}
    else:
        metrics["baselines"] = {"note": "not computed: no --train-manifest given"}
    (eval_dir / "metrics.json").write_text(json.dumps(metrics))
    flow = {"n_predictions": n + 1, "n_manifest": n + 1, "n_included": n,
            "included": [f"test-{i:03d}" for i in range(n)],
            "excluded": [{"patient_id": "test-900", "reason": "grade unknown"},
                         {"patient_id": "test-901", "reason": "not predicted"}]}
    (eval_dir / "patient_flow.json").write_text(json.dumps(flow))
    pd.DataFrame({"model": ["DL-T2FS", "DL-T2FS"], "rule": ["argmax", "youden"],
                  "threshold": [0.5, 0.6234], "tn": [4, 5], "fp": [2, 1], "fn": [3, 6],
                  "tp": [31, 28]}).to_csv(eval_dir / "confusion.csv", index=False)
    for name in ("roc", "calibration", "decision_curve"):
        _png(eval_dir / f"{name}.png", seed=len(name))
    if cohort:
        (eval_dir / "cohort_table.md").write_text(
            "| | | Training (n=60) | Test (n=40) | p | p adjusted |\n"
            "| --- | --- | --- | --- | --- | --- |\n"
            "| Age | | 61.2 ± 9.1 (median 60.0) | 58.1 ± 11.0 (median 57.5) | 0.432 | 1.000 |\n"
            "| Sex | female | 25/60 (41.7%) | 19/40 (47.5%) | 0.610 | 1.000 |\n"
            "| | male | 35/60 (58.3%) | 21/40 (52.5%) | | |\n\n"
            "Wilcoxon rank-sum for age; Fisher's exact test for sex.\n")
    if survival:
        groups = {"dl": ("DL-T2FS: predicted grade", ("predicted low", "predicted high"),
                         0.0312, 0.0624),
                  "grade": ("True grade (FNCLCC)", ("low (G1)", "high (G2/G3)"), 0.00071, 0.00142)}
        models = {key: {"title": title, "figure": f"km_{key}.png",
                        "groups": {names[0]: {"n": 9, "deaths": 2, "median_months": None},
                                   names[1]: {"n": 31, "deaths": 14, "median_months": 41.27}},
                        "logrank": {"chi2": 4.6, "df": 1, "p": p, "p_bonferroni": p_adj}}
                  for key, (title, names, p, p_adj) in groups.items()}
        (eval_dir / "survival.json").write_text(json.dumps({
            "time_unit": "months", "n": n, "deaths": 16, "excluded_no_survival_data": [],
            "correction": "Bonferroni over the 2 log-rank tests made", "models": models}))
        for model in models:
            _png(eval_dir / f"km_{model}.png", seed=3)
    else:
        (eval_dir / "survival.json").write_text(json.dumps(
            {"n": 0, "note": "not computable: no patient has os_months and os_event"}))
    paths = {"eval": eval_dir, "explain": None, "run": None, "cache": None}
    manifest_dir = root / "cohort"
    manifest_dir.mkdir()
    (manifest_dir / "manifest.csv").write_text("patient_id,grade\n")
    if synthetic:
        (manifest_dir / "synth.json").write_text(json.dumps({"generator": "sarcograde 0.1.0"}))
    (eval_dir / "run.json").write_text(json.dumps({
        "command": "sarcograde evaluate predictions.csv", "seed": 0, "status": "finished",
        "start": "2025-01-01T10:00:00+00:00", "end": "2025-01-01T10:01:00+00:00",
        "config": {"bootstrap": 200, "seed": 0},
        "packages": {"python": "3.11.2", "numpy": "2.4.6", "sarcograde": "0.1.0"}}))
    if explain:
        explain_dir = root / "explain"
        explain_dir.mkdir()
        frame = pd.DataFrame({
            "patient_id": [f"test-{i:03d}" for i in range(6)],
            "n_slices": [12, 30, 8, 22, 15, 9],
            "p_high": [0.91, 0.12, 0.77, 0.35, 0.66, 0.58],
            "predicted": [1, 0, 1, 0, 1, 1],
            "label": [1, 0, 0, 1, 1, np.nan],
            "inside": [0.71, 0.55, 0.32, 0.12, 0.6012, 0.4],
            "ring": [0.2, 0.3, 0.28, 0.18, 0.3, 0.3],
            "elsewhere": [0.09, 0.15, 0.4, 0.7, 0.0988, 0.3],
            "off_tumour": [False, False, False, True, False, False]})
        frame.to_csv(explain_dir / "attention.csv", index=False)
        for i, pid in enumerate(frame["patient_id"]):
            _png(explain_dir / f"{pid}.png", seed=10 + i, kind="image")
        paths["explain"] = explain_dir
    if run:
        run_dir = root / "run"
        preprocess = {"sequence": "T2FS", "spacing_mm": 1.0, "size": 48, "margin_mm": 12.5,
                      "n4": True, "n4_grid_mm": 6.0, "n4_iterations": [20, 20]}
        config = {"preset": "quick", "preprocess": preprocess,
                  "model": {"architecture": "densenet", "init_features": 16, "growth_rate": 8,
                            "block_config": [2, 4, 4], "pretrained": "none"},
                  "train": {"folds": 3, "repeats": 2, "batch_size": 32, "learning_rate": 0.002,
                            "max_epochs": 7, "patience": 3, "augment": True}}
        run_dir.mkdir()
        (run_dir / "config.json").write_text(json.dumps(config))
        (run_dir / "run.json").write_text(json.dumps({
            "command": "sarcograde train cache --preset quick", "seed": 0, "config": config,
            "status": "finished", "packages": {"python": "3.11.2", "torch": "2.13.0"}}))
        for k in range(3):
            fold = run_dir / f"fold_{k:02d}"
            fold.mkdir()
            val_loss = rng.uniform(0.3, 0.7, size=5 + k)
            pd.DataFrame({"epoch": np.arange(1, 6 + k), "train_loss": val_loss + 0.1,
                          "val_loss": val_loss, "val_auc": rng.uniform(0.5, 1, size=5 + k),
                          "lr": 0.002, "seconds": 1.0}).to_csv(fold / "history.csv", index=False)
            _png(fold / "learning_curve.png", seed=20 + k)
        paths["run"] = run_dir
        cache_dir = root / "cache"
        cache_dir.mkdir()
        (cache_dir / "config.json").write_text(json.dumps(
            {**preprocess, "manifest": str(manifest_dir / "manifest.csv")}))
        paths["cache"] = cache_dir
    return paths


def build(paths: dict, out: Path) -> str:
    build_report(paths["eval"], out, explain_dir=paths["explain"], run_dir=paths["run"],
                 cache_dir=paths["cache"])
    return out.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# HTML parsing, independent of the report's own helpers


class PageParser(HTMLParser):
    """Collects sections' text, cells with data attributes, images, and forbidden elements."""

    def __init__(self):
        super().__init__()
        self.cells: dict[tuple, str] = {}
        self.sections: dict[str, str] = {}
        self.images: list[str] = []
        self.gallery: dict[str, list[str]] = {}
        self.tags: set[str] = set()
        self.external: list[str] = []
        self._cell = None
        self._section = None
        self._text: list[str] = []

    def handle_starttag(self, name, attrs):
        attrs = dict(attrs)
        self.tags.add(name)
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            if value and not value.startswith(("data:", "#")):
                self.external.append(value)
        if name == "figure" and "data-patient" in attrs:
            self.gallery[attrs["data-patient"]] = attrs["data-kinds"].split(";")
        if name == "img":
            self.images.append(attrs.get("src", ""))
        if name == "section":
            self._section, self._section_text = attrs.get("id"), []
        if name == "td" and "data-metric" in attrs:
            owner = attrs.get("data-model") or attrs.get("data-patient") or attrs.get("data-fold")
            self._cell, self._text = (owner, attrs["data-metric"]), []

    def handle_endtag(self, name):
        if name == "td" and self._cell is not None:
            self.cells[self._cell] = "".join(self._text).strip()
            self._cell = None
        if name == "section" and self._section is not None:
            self.sections[self._section] = " ".join(" ".join(self._section_text).split())
            self._section = None

    def handle_data(self, data):
        if self._cell is not None:
            self._text.append(data)
        if self._section is not None:
            self._section_text.append(data)


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    return parser


def expected(block: dict) -> str:
    """metrics.json's {"value", "ci95"} written the way a table in a paper writes it."""
    value, (lo, hi) = block["value"], block["ci95"]
    sep = " to " if min(lo, hi) < 0 else "-"
    return f"{value:.2f} ({lo:.2f}{sep}{hi:.2f})"


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    paths = write_fixture(root)
    page = build(paths, root / "out" / "report.html")
    return paths, page, parse(page)


# --------------------------------------------------------------------------------------------


def test_formatting_of_estimates_and_p_values():
    assert format_estimate({"value": 0.7512, "ci95": [0.6649, 0.8301]}) == "0.75 (0.66-0.83)"
    assert format_estimate({"value": -0.2, "ci95": [-0.9, 0.31]}) == "-0.20 (-0.90 to 0.31)"
    assert format_estimate({"value": None, "ci95": None}) == "n/a"
    assert format_ci([float("nan"), 0.5]) == ""
    assert format_p(0.00042) == "<0.001"
    assert format_p(0.0312) == "0.031"
    assert format_p(None) == "n/a"


def test_every_section_is_present(full):
    _, page, parsed = full
    assert set(SECTIONS) <= set(parsed.sections)
    for section in SECTIONS:
        assert "Not run" not in parsed.sections[section], section


def test_metric_cells_equal_metrics_json(full):
    paths, _, parsed = full
    metrics = json.loads((paths["eval"] / "metrics.json").read_text(encoding="utf-8"))
    baselines = {k: b for k, b in metrics["baselines"]["models"].items() if "auc" in b}
    for model, block in {"dl": metrics, **baselines}.items():
        for key in METRIC_KEYS:
            assert parsed.cells[(model, key)] == expected(block[key]), (model, key)
    for model, block in baselines.items():
        p = block["delong_vs_dl"]["p"]
        assert parsed.cells[(model, "delong_p")] == ("<0.001" if p < 0.001 else f"{p:.3f}")
    # A baseline that could not be fitted keeps its row, with the reason below the table.
    assert parsed.cells[("broken", "auc")] == "n/a"
    assert "not computable: no feature values" in parsed.sections["performance"]
    youden = metrics["youden"]
    for key in ("sensitivity", "specificity", "precision", "f1", "accuracy"):
        assert parsed.cells[("youden", key)] == expected(youden[key])
    assert f"p_high > {youden['threshold']:.3f}" in parsed.sections["performance"]
    summary_auc = f"{metrics['auc']['value']:.2f}"
    assert summary_auc in parsed.sections["performance"]


def test_survival_flow_cohort_attention_and_training_numbers(full):
    paths, _, parsed = full
    survival = json.loads((paths["eval"] / "survival.json").read_text(encoding="utf-8"))["models"]
    for model, block in survival.items():
        for key, cell in (("p", "logrank_p"), ("p_bonferroni", "p_bonferroni")):
            p = block["logrank"][key]
            assert parsed.cells[(model, cell)] == ("<0.001" if p < 0.001 else f"{p:.3f}")
        for group, g in block["groups"].items():
            assert group in parsed.sections["survival"]
    assert "41.3" in parsed.sections["survival"] and "not reached" in parsed.sections["survival"]
    flow = parsed.sections["flow"]
    assert "40 included" in flow and "2 left out" in flow and "41 patients predicted" in flow
    assert "test-900" in flow and "grade unknown" in flow and "not predicted" in flow
    cohort = parsed.sections["cohort"]
    assert "Training (n=60)" in cohort and "25/60 (41.7%)" in cohort
    assert "Fisher's exact test" in cohort and "---" not in cohort

    attention = pd.read_csv(paths["explain"] / "attention.csv")
    for row in attention.itertuples():
        assert parsed.cells[(row.patient_id, "inside")] == f"{row.inside:.2f}"
    text = parsed.sections["attention"]
    assert "1 of 6 here" in text  # one off_tumour flag
    for fold in sorted(paths["run"].glob("fold_*")):
        history = pd.read_csv(fold / "history.csv")
        best = int(history["epoch"][np.argmin(history["val_loss"].to_numpy())])
        assert parsed.cells[(fold.name, "best_epoch")] == str(best)


def test_attention_gallery_shows_correct_wrong_and_off_tumour_cases(full):
    paths, page, parsed = full
    attention = pd.read_csv(paths["explain"] / "attention.csv")
    known = attention["label"].notna()
    correct = attention[known & (attention["predicted"] == attention["label"])]
    wrong = attention[known & (attention["predicted"] != attention["label"])]
    flagged = attention[attention["off_tumour"]]
    on_tumour = attention["inside"] + attention["ring"]
    kinds = {pid: set(k) for pid, k in parsed.gallery.items()}
    best_correct = correct.loc[(correct["inside"] + correct["ring"]).idxmax(), "patient_id"]
    assert "correct" in kinds[best_correct]
    for pid in wrong["patient_id"]:
        assert "wrong" in kinds[pid]
    marked = re.findall(r'<tr class="wrong"><td>([^<]+)</td>', page)
    assert sorted(marked) == sorted(wrong["patient_id"])
    for pid in flagged["patient_id"]:
        assert "off tumour" in kinds[pid]
    assert "highest attention on tumour" in kinds[attention["patient_id"][on_tumour.idxmax()]]
    assert "lowest attention on tumour" in kinds[attention["patient_id"][on_tumour.idxmin()]]
    # Every montage shown is that patient's own file.
    for pid in kinds:
        assert (paths["explain"] / f"{pid}.png").is_file()


def test_methods_paragraph_takes_its_numbers_from_the_config(full):
    paths, _, parsed = full
    config = json.loads((paths["run"] / "config.json").read_text(encoding="utf-8"))
    text = parsed.sections["methods"]
    pre, train = config["preprocess"], config["train"]
    for snippet in (f"{pre['size']} x {pre['size']}", f"{pre['margin_mm']} mm margin",
                    f"fitted on a {pre['n4_grid_mm']} mm grid", f"{train['folds']}-fold",
                    f"{train['repeats']} repeat", f"{train['folds'] * train['repeats']} models",
                    f"batch size {train['batch_size']}", f"learning rate {train['learning_rate']}",
                    f"at most {train['max_epochs']} epochs", f"patience {train['patience']}",
                    "random initialisation", "T2FS", "200 bootstrap resamples",
                    "softmax of the mean logits"):
        assert snippet in text, snippet
    from sarcograde.config import AugmentParams

    assert f"rotation up to {AugmentParams().rotate_deg:g} degrees" in text
    provenance = parsed.sections["provenance"]
    assert "2.13.0" in provenance and "sarcograde train cache --preset quick" in provenance


def test_images_are_embedded_compressed_data_uris(full):
    from PIL import Image

    paths, page, parsed = full
    n_expected = (2 + 2  # roc, calibration, two KM curves
                  + 3)   # learning curves
    assert len(parsed.images) >= n_expected + 4  # + at least four attention montages
    formats = []
    for src in parsed.images:
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert img.width > 0 and src.startswith(f"data:image/{img.format.lower()};base64,")
            formats.append(img.format)
    # the plots as PNG, the montages of the gallery as WebP
    assert formats.count("WEBP") == len(parsed.gallery) >= 4
    assert formats.count("PNG") == len(formats) - len(parsed.gallery)
    # Self-contained: no external resource, no script needed.
    assert parsed.external == []
    assert not {"script", "link", "iframe"} & parsed.tags


def test_missing_optional_parts_say_not_run(tmp_path):
    paths = write_fixture(tmp_path, baselines=False, survival=False, cohort=False,
                          explain=False, run=False)
    parsed = parse(build(paths, tmp_path / "report.html"))
    for section in ("cohort", "survival", "attention", "training"):
        assert "Not run" in parsed.sections[section], section
    assert "Not run: baselines" in parsed.sections["performance"]
    assert ("dl", "auc") in parsed.cells and ("clinical", "auc") not in parsed.cells


def test_synthetic_and_small_cohort_caveats(tmp_path):
    paths = write_fixture(tmp_path / "a", synthetic=True, n=40)
    page = build(paths, tmp_path / "a.html")
    assert "Synthetic cohort." in page and "Small cohort." in page
    paths = write_fixture(tmp_path / "b", synthetic=False, n=150)
    page = build(paths, tmp_path / "b.html")
    assert "Synthetic cohort." not in page and "Small cohort." not in page


def test_cli_default_output_and_missing_metrics_error(tmp_path, capsys):
    paths = write_fixture(tmp_path, explain=False, run=False)
    assert cli.main(["report", str(paths["eval"])]) == 0
    assert (paths["eval"] / "report.html").is_file()
    record = json.loads((paths["eval"] / "report.run.json").read_text(encoding="utf-8"))
    assert record["status"] == "finished" and record["config"]["eval"] == str(paths["eval"])
    capsys.readouterr()

    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "never.html"
    assert cli.main(["report", str(empty), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.json" in err[0] and str(empty) in err[0]
    assert not out.exists() and not list(tmp_path.glob(".never.html*"))


def test_a_broken_image_is_a_clear_error_and_writes_nothing(tmp_path):
    paths = write_fixture(tmp_path, explain=False, run=False)
    (paths["eval"] / "roc.png").write_bytes(b"not a png")
    out = tmp_path / "report.html"
    with pytest.raises(SarcogradeError, match="roc.png: not a PNG image"):
        build(paths, out)
    assert not out.exists()


def test_an_attention_csv_without_a_needed_column_is_a_clear_error(tmp_path):
    paths = write_fixture(tmp_path, run=False)
    path = paths["explain"] / "attention.csv"
    pd.read_csv(path).drop(columns=["ring"]).to_csv(path, index=False)
    out = tmp_path / "report.html"
    with pytest.raises(SarcogradeError, match="attention.csv: no column"):
        build(paths, out)
    assert not out.exists()


def test_importing_the_report_does_not_import_torch():
    """The report runs where only the evaluation outputs are (no torch): a fresh interpreter."""
    import os
    import subprocess
    import sys

    code = ("import sys, sarcograde.report; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'sarcograde.data' not in sys.modules, 'sarcograde.data imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(
                                Path(__file__).resolve().parents[1] / "src")})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name, content, message", [
    ("patient_flow.json", "[1, 2]", "patient_flow.json: corrupt JSON (expected an object"),
    ("run.json", "{not json", "run.json: corrupt JSON"),
])
def test_a_damaged_evaluate_output_is_a_one_line_error(tmp_path, name, content, message):
    paths = write_fixture(tmp_path, explain=False, run=False)
    (paths["eval"] / name).write_text(content, encoding="utf-8")
    out = tmp_path / "report.html"
    with pytest.raises(SarcogradeError, match=re.escape(message)) as caught:
        build(paths, out)
    assert "\n" not in str(caught.value) and not out.exists()


def test_the_report_record_is_named_by_the_records_rule(tmp_path):
    from sarcograde.formats.records import record_path

    paths = write_fixture(tmp_path, explain=False, run=False)
    out = build_report(paths["eval"], tmp_path / "page.html")
    assert record_path(out) == tmp_path / "page.run.json" and record_path(out).is_file()
