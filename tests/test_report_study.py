"""`sarcograde report --study`: the study's results section, every number equal to its artifacts.

The fixture writes a small study folder in the layout of docs/artifacts.md by hand (two
external sites and the pooled evaluation, four models, two sequences), independent of the
stages that would produce it.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter

from sarcograde import cli
from sarcograde.formats.run import Folds, write_folds
from sarcograde.report import build_study_report
from sarcograde.splits import make_splits

from test_report import METRIC_KEYS, PageParser, _estimate, _metrics_block, expected

SITES = ("hospital-a", "hospital-b")
SEQUENCES = ("T1FSGd", "T2FS")
MODELS = ("DL-T1FSGd", "DL-T2FS", "DL-fusion", "clinical+volume")
HOSTILE_ID = '<img src=x onerror="alert(1)">&amp;'
HOSTILE_MODEL = 'DL-"<b>&x'  # no "/": model names are file names


def _png(path: Path, seed: int, kind: str = "") -> None:
    """A small noise image (PIL is fast; the report only embeds it)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, size=(24, 64 if kind == "image" else 32),
                                 dtype=np.uint8)).save(path, format="PNG")


def p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def write_site(folder: Path, rng, models, *, n: int, pooled: bool = False,
               excluded: list[dict] | None = None, survival: bool = True) -> None:
    folder.mkdir(parents=True)
    pairs = list(itertools.combinations(models, 2))
    raw = rng.uniform(0.0001, 0.5, size=len(pairs))
    delong = [{"a": a, "b": b, "difference": float(d), "ci95": [float(d) - 0.2, float(d) + 0.1],
               "z": 1.0, "p": float(p), "p_adjusted": float(min(1, p * len(pairs)))}
              for (a, b), p, d in zip(pairs, raw, rng.uniform(-0.3, 0.3, size=len(pairs)))]
    n_high = n // 3 + (4 if pooled else 0)
    metrics = {"n": n, "n_low": n - n_high, "n_high": n_high,
               "bootstrap": {"resamples": 500, "seed": 0},
               "models": {m: {"n": n, **_metrics_block(rng)} for m in models}, "delong": delong,
               "delong_adjustment": f"Bonferroni over {len(pairs)} pairs", "pooled": pooled}
    if pooled:
        metrics["sites"] = {s: {"n": 30 + 10 * i, "n_low": 9} for i, s in enumerate(SITES)}
    kept_rng = np.random.default_rng(n)  # apart from `rng`, whose draws the other parts follow
    metrics["abstention"] = {"coverage": 0.9, "score": "p_high_sd", "models": {
        m: ({"n_kept": n - 3, "n": n, "max_spread": 0.0834, **_metrics_block(kept_rng)}
            if m.startswith("DL-T") else {"note": "not computable: no p_high_sd column"})
        for m in models}}
    metrics["subgroups"] = {"min_patients": 10, "groups": [
        {"variable": "sex", "level": level, "n": n // 2, "n_low": 5, "n_high": n // 2 - 5,
         "models": {m: {"auc": _estimate(kept_rng)} for m in models}} for level in ("F", "M")],
        "too_small": [{"variable": "age", "level": "<50", "n": 4, "n_high": 2,
                       "reason": "fewer than 10 patients"}]}
    metrics["decision_curve"] = {"thresholds": {"from": 0.05, "to": 0.95, "step": 0.01}}
    metrics["recalibration"] = {"n": 10, "n_evaluated": n - 10, "rule": "intercept only",
                                "models": {m: {"fit": "intercept only", "intercept": 0.4213,
                                               "slope": 1.0,
                                               "before": _metrics_block(kept_rng),
                                               "after": _metrics_block(kept_rng)}
                                           for m in models}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    excluded = excluded if excluded is not None else [
        {"patient_id": f"{folder.name}-900", "reason": "grade unknown"}]
    (folder / "patient_flow.json").write_text(json.dumps(
        {"n_included": n, "included": [f"{folder.name}-{i:03d}" for i in range(n)],
         "excluded": excluded}))
    (folder / "cohort_table.md").write_text(
        f"| | | Training (n=60) | {folder.name} (n={n}) | p | p adjusted |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        f"| Age | | 61.2 ± 9.1 | 58.{n % 10} ± 11.0 | 0.432 | 1.000 |\n\n"
        "Wilcoxon rank-sum for age.\n")
    for name in ("roc", "calibration", "decision_curve", "selective_prediction", "subgroups",
                 "recalibration") + (
            ("calibration_models",) if n == 30 else ()):
        _png(folder / f"{name}.png", seed=len(name) + n)
    if survival:
        groups = {"n": n // 2, "deaths": 3, "median_months": 40.5}
        entries = {m: {"title": f"{m}: predicted grade", "figure": f"km_{m}.png",
                       "groups": {"predicted low": groups, "predicted high": groups},
                       "logrank": {"p": float(rng.uniform(0, 0.2)),
                                   "p_bonferroni": float(rng.uniform(0.2, 1))}}
                   for m in models}
        (folder / "survival.json").write_text(json.dumps(
            {"time_unit": "months", "n": n, "deaths": 6, "models": entries,
             "correction": f"Bonferroni over the {len(models)} log-rank tests made"}))
        for m in models:
            _png(folder / f"km_{m}.png", seed=n)
        if pooled:  # evaluate's Fig. 3 panel, shown instead of the single curves
            _png(folder / "km_panel.png", seed=99)
    (folder / "run.json").write_text(json.dumps({
        "command": "sarcograde evaluate", "status": "finished", "seed": 0,
        "config": {"bootstrap": 500}, "packages": {"python": "3.11.2", "numpy": "2.4.6"}}))


def write_study(root: Path, *, models=MODELS, explain=True, train=True, survival=True,
                study_json=True, hostile=False) -> Path:
    rng = np.random.default_rng(11)
    models = list(models) + ([HOSTILE_MODEL] if hostile else [])
    for i, site in enumerate(SITES):
        excluded = [{"patient_id": HOSTILE_ID if hostile else f"{site}-900",
                     "reason": "grade unknown"},
                    {"patient_id": f"{site}-901", "reason": "not predicted by every model",
                     "missing_from": ["DL-T2FS"]}][: i + 1]
        write_site(root / "evaluate" / site, rng, models, n=30 + 10 * i, excluded=excluded,
                   survival=survival)
        predict = root / "predict" / site
        predict.mkdir(parents=True)
        for m in models:
            (predict / f"{m}.csv").write_text("patient_id,p_high,predicted\n")
    write_site(root / "evaluate" / "pooled", rng, models, n=70, pooled=True, excluded=[],
               survival=survival)
    if explain:
        for site, seq in itertools.product(SITES, SEQUENCES):
            folder = root / "explain" / site / seq
            folder.mkdir(parents=True)
            ids = [f"{site}-{k:03d}" for k in range(4)] + ([HOSTILE_ID] if hostile else [])
            frame = pd.DataFrame({
                "patient_id": ids, "n_slices": 10, "p_high": rng.uniform(size=len(ids)),
                "predicted": [1, 0, 1, 0, 1][: len(ids)], "label": [1, 0, 0, 1, 1][: len(ids)],
                "inside": rng.uniform(0.1, 0.7, size=len(ids)), "ring": 0.2,
                "elsewhere": 0.1, "off_tumour": [False, False, False, True, False][: len(ids)]})
            frame.to_csv(folder / "attention.csv", index=False)
            for k, pid in enumerate(ids):
                _png(folder / f"{pid}.png", seed=k, kind="image")
    if train:
        for seq in SEQUENCES:
            run = root / "train" / seq
            run.mkdir(parents=True)
            (run / "config.json").write_text(json.dumps({
                "sequence": seq, "preprocess": {"size": 48, "spacing_mm": 1.0},
                "train": {"folds": 2, "repeats": 1, "batch_size": 8, "learning_rate": 0.001,
                          "max_epochs": 5, "patience": 2, "augment": False}}))
            splits, _ = make_splits([f"P{i:02d}" for i in range(8)], np.array([0, 1] * 4),
                                    folds=2, repeats=1, seed=0)
            write_folds(run, Folds(folds=2, repeats=1, seed=0, splits=splits))
            for k in range(2):
                fold = run / f"fold_{k:02d}"
                fold.mkdir()
                loss = rng.uniform(0.3, 0.7, size=4)
                pd.DataFrame({"epoch": np.arange(1, 5), "val_loss": loss,
                              "val_auc": 0.7}).to_csv(fold / "history.csv", index=False)
    if study_json:
        (root / "study.json").write_text(json.dumps({
            "config": {"train": "train/manifest.csv", "test": {s: f"{s}.csv" for s in SITES},
                       "sequences": list(SEQUENCES), "target": "grade", "preset": "quick",
                       "models": ["dl", "fusion", "clinical+volume"], "seed": 3},
            "steps": [{"step": "train T2FS", "status": "done"},
                      {"step": "evaluate hospital-a", "status": "done"}]}))
    return root


class StudyParser(PageParser):
    """Cells keyed by (site, model, versus model or patient or fold, metric)."""

    def __init__(self):
        super().__init__()
        self.alts: list[str] = []

    def handle_starttag(self, name, attrs):
        super().handle_starttag(name, attrs)
        attrs = dict(attrs)
        if name == "img":
            self.alts.append(attrs.get("alt", ""))
        if name == "td" and "data-metric" in attrs:
            self._cell = (attrs.get("data-site"), attrs.get("data-model"),
                          attrs.get("data-versus") or attrs.get("data-patient")
                          or attrs.get("data-fold"),
                          attrs["data-metric"])


def parse(page: str) -> StudyParser:
    parser = StudyParser()
    parser.feed(page)
    return parser


def metrics_of(root: Path, site: str) -> dict:
    return json.loads((root / "evaluate" / site / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = write_study(tmp_path_factory.mktemp("study"))
    page = build_study_report(root).read_text(encoding="utf-8")
    return root, page, parse(page)


# --------------------------------------------------------------------------------------------


def test_every_section_is_present_and_run(study):
    _, _, parsed = study
    for section in ("summary", "flow", "cohort", "performance", "roc", "decision", "abstention",
                    "subgroups", "calibration", "recalibration", "survival", "delong",
                    "attention", "training", "methods", "provenance", "tripod"):
        assert section in parsed.sections, section
        assert "Not run" not in parsed.sections[section], section


def test_table2_cells_equal_metrics_json(study):
    root, _, parsed = study
    n_cells = 0
    for site in (*SITES, "pooled"):
        for model, block in metrics_of(root, site)["models"].items():
            for key in METRIC_KEYS:
                assert parsed.cells[(site, model, None, key)] == expected(block[key]), \
                    (site, model, key)
                n_cells += 1
            assert parsed.cells[(site, model, None, "n")] == str(block["n"])
    assert n_cells == 3 * len(MODELS) * len(METRIC_KEYS)
    assert "Pooled from: hospital-a 30 (9 low grade), hospital-b 40" in parsed.sections["performance"]
    assert "all external sites, pooled: 70" in parsed.sections["performance"]


def test_abstention_cells_equal_metrics_json(study):
    root, _, parsed = study
    for site in (*SITES, "pooled"):
        metrics = metrics_of(root, site)
        for model, block in metrics["abstention"]["models"].items():
            if "note" in block:
                assert f"{model}: {block['note']}" in parsed.sections["abstention"]
                continue
            for key in ("auc", "accuracy", "sensitivity", "specificity"):
                assert parsed.cells[(site, model, None, f"abstention_{key}")] == expected(
                    block[key]), (site, model, key)
            assert parsed.cells[(site, model, None, "n_kept")] == \
                f"{block['n_kept']} of {block['n']}"
    assert "the 90% with the lowest" in parsed.sections["abstention"]


def test_subgroup_cells_equal_metrics_json(study):
    root, _, parsed = study
    n_cells = 0
    for site in (*SITES, "pooled"):
        for group in metrics_of(root, site)["subgroups"]["groups"]:
            metric = f"subgroup_auc:{group['variable']}={group['level']}"
            for model, block in group["models"].items():
                assert parsed.cells[(site, model, None, metric)] == expected(block["auc"])
                n_cells += 1
    assert n_cells == 3 * 2 * len(MODELS)
    assert "Too small to score: age: <50 (4 patients, 2 high; fewer than 10 patients)" in \
        parsed.sections["subgroups"]


def test_recalibration_cells_equal_metrics_json(study):
    root, _, parsed = study
    for site in (*SITES, "pooled"):
        for model, block in metrics_of(root, site)["recalibration"]["models"].items():
            for when in ("before", "after"):
                for key in ("brier", "calibration_slope", "calibration_intercept"):
                    assert parsed.cells[(site, model, None, f"recalibration_{when}_{key}")] == \
                        expected(block[when][key]), (site, model, when, key)
    assert "fitted on 10 patients" in parsed.sections["recalibration"]


class ChecklistParser(HTMLParser):
    """The TRIPOD+AI table's rows (cell texts and the link's target) and every id on the page."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.rows: list[dict] = []
        self._in_table = False
        self._cell: list[str] | None = None

    def handle_starttag(self, name, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        self._in_table = self._in_table or attrs.get("id") == "tripod-table"
        if self._in_table and name == "tr":
            self.rows.append({"cells": [], "href": None})
        if self._in_table and name == "td":
            self._cell = []
        if self._in_table and name == "a":
            self.rows[-1]["href"] = attrs["href"]

    def handle_endtag(self, name):
        if name == "td" and self._cell is not None:
            self.rows[-1]["cells"].append("".join(self._cell).strip())
            self._cell = None
        self._in_table = self._in_table and name != "table"

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_tripod_checklist_holds_the_studys_numbers_and_links_to_its_sections(study):
    root, page, parsed = study
    checklist = ChecklistParser()
    checklist.feed(page)
    rows = {row["cells"][1]: row for row in checklist.rows if row["cells"]}
    assert len(rows) == 13
    for row in rows.values():  # every link lands on a section of the page
        assert row["href"].startswith("#") and row["href"][1:] in checklist.ids, row
    answer = {topic: row["cells"][2] for topic, row in rows.items()}
    for site in SITES:
        metrics = metrics_of(root, site)
        flow = json.loads((root / "evaluate" / site / "patient_flow.json").read_text())
        assert (f"{site}: {flow['n_included']} patients included, {len(flow['excluded'])} left "
                "out") in answer["Participants"]
        assert f"{site}: {metrics['n']} patients, {metrics['n_high']} events (high grade)" in \
            answer["Sample size"]
        assert (f"{site}: {metrics['n_low']} low grade, {metrics['n_high']} high grade"
                in answer["Outcome"])
        assert answer["Outcome"].startswith("Target: grade (FNCLCC);")
        first = next(iter(metrics["models"]))
        assert f"{site}: {first} AUC {expected(metrics['models'][first]['auc'])}" in \
            answer["Performance measures"]
        assert f"{site}: fitted on {metrics['recalibration']['n']} patients" in \
            answer["Model updating"]
    assert "hospital-b: 1 grade unknown, 1 not predicted by every model" in answer["Missing data"]
    assert "training cohort train/manifest.csv" in answer["Source of data"]
    assert "500 bootstrap resamples" in answer["Performance measures"]
    assert "MRI sequences T1FSGd, T2FS" in answer["Predictors"]
    assert rows["Outcome"]["href"] == "#cohort" and rows["Clinical utility"]["href"] == "#decision"
    assert "Ethical approval" in parsed.sections["tripod"]
    assert "For the authors" in parsed.sections["tripod"]


def test_tripod_checklist_names_another_target_and_its_classes(tmp_path):
    root = write_study(tmp_path)
    study_json = json.loads((root / "study.json").read_text())
    study_json["config"]["target"] = "lung_metastasis"
    (root / "study.json").write_text(json.dumps(study_json))
    checklist = ChecklistParser()
    checklist.feed(build_study_report(root).read_text(encoding="utf-8"))
    answer = {row["cells"][1]: row["cells"][2] for row in checklist.rows if row["cells"]}
    metrics = metrics_of(root, "hospital-a")
    assert answer["Outcome"].startswith("Target: lung metastasis;")
    assert (f"hospital-a: {metrics['n_low']} lung metastasis: no, {metrics['n_high']} lung "
            "metastasis: yes") in answer["Outcome"]
    assert f"{metrics['n_high']} events (lung metastasis: yes)" in answer["Sample size"]
    assert "grade" not in answer["Outcome"] + answer["Sample size"]


def test_delong_matrices_equal_metrics_json(study):
    root, _, parsed = study
    for site in (*SITES, "pooled"):
        entries = metrics_of(root, site)["delong"]
        assert len(entries) == len(MODELS) * (len(MODELS) - 1) // 2
        for e in entries:
            for a, b in ((e["a"], e["b"]), (e["b"], e["a"])):  # the matrix is symmetric
                assert parsed.cells[(site, a, b, "delong_p")] == p_text(e["p"])
                assert parsed.cells[(site, a, b, "delong_p_adjusted")] == p_text(e["p_adjusted"])
            lo, hi = e["ci95"]
            assert (parsed.cells[(site, e["a"], e["b"], "auc_difference")]
                    == f"{e['difference']:.2f} ({lo:.2f}{' to ' if min(lo, hi) < 0 else '-'}{hi:.2f})")
    assert "Bonferroni over 6 pairs" in parsed.sections["delong"]


def test_flow_survival_cohort_attention_and_training(study):
    root, _, parsed = study
    flow_text = parsed.sections["flow"]
    for site in (*SITES, "pooled"):
        flow = json.loads((root / "evaluate" / site / "patient_flow.json").read_text())
        assert (f"{flow['n_included']} included in the evaluation (predicted and graded), "
                f"{len(flow['excluded'])} left out") in flow_text
        for entry in flow["excluded"]:
            assert entry["patient_id"] in flow_text and entry["reason"] in flow_text
        survival = json.loads((root / "evaluate" / site / "survival.json").read_text())
        for model, entry in survival["models"].items():
            assert parsed.cells[(site, model, None, "logrank_p")] == p_text(entry["logrank"]["p"])
            assert (parsed.cells[(site, model, None, "p_bonferroni")]
                    == p_text(entry["logrank"]["p_bonferroni"]))
    assert "hospital-b-901 (missing from DL-T2FS)" in flow_text
    assert "hospital-b (n=40)" in parsed.sections["cohort"]
    for site, seq in itertools.product(SITES, SEQUENCES):
        frame = pd.read_csv(root / "explain" / site / seq / "attention.csv")
        for row in frame.itertuples():
            cell = parsed.cells[(site, f"DL-{seq}", row.patient_id, "inside")]
            assert cell == f"{row.inside:.2f}"
        shown = {pid for pid, _ in parsed.gallery.items()}
        assert shown & set(frame["patient_id"]), (site, seq)
    for seq in SEQUENCES:
        for fold in sorted((root / "train" / seq).glob("fold_*")):
            history = pd.read_csv(fold / "history.csv")
            best = int(history["epoch"][np.argmin(history["val_loss"].to_numpy())])
            assert parsed.cells[(None, f"DL-{seq}", fold.name, "best_epoch")] == str(best)
    summary = parsed.sections["summary"]
    for model in MODELS:
        assert expected(metrics_of(root, "hospital-a")["models"][model]["auc"]) in summary


def test_images_are_embedded_compressed_and_the_page_is_self_contained(study):
    from PIL import Image

    _, _, parsed = study
    # roc + calibration for 3 evaluations, one KM per model for 2 sites and the pooled KM
    # panel; 2 x 2 galleries.
    assert len(parsed.images) >= 3 * 2 + 2 * len(MODELS) + 1 + 4
    assert sum("Kaplan-Meier panel" in alt for alt in parsed.alts) == 1
    # Every model's calibration curves where evaluate drew them (hospital-a), else the diagram.
    calibration = parsed.sections["calibration"]
    assert "Calibration of every model, hospital-a." in calibration
    assert "Reliability diagram, hospital-b." in calibration
    for src, alt in zip(parsed.images, parsed.alts):
        # attention montages as WebP, plots as PNG; each says what it is
        expected = "WEBP" if alt.startswith("attention map") else "PNG"
        assert src.startswith(f"data:image/{expected.lower()};base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as im:
            im.load()
            assert im.format == expected
    assert sum(alt.startswith("attention map") for alt in parsed.alts) >= len(parsed.gallery) > 0
    assert parsed.external == []
    assert not {"script", "link", "iframe"} & parsed.tags


def _montage(path: Path, seed: int) -> None:
    """A PNG like explain's montages: 3 x 4 slices of 280 pixels (smooth noise, a tumour, its
    map in colour) on white, 1180 x 900 pixels, several hundred kB."""
    from matplotlib import colormaps
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:280, :280]
    blob = np.exp(-((yy - 130) ** 2 + (xx - 150) ** 2) / 3000.0)
    page = np.full((900, 1180, 3), 255, np.uint8)
    for k in range(12):
        grey = gaussian_filter(rng.normal(size=(280, 280)), 2) * 0.15 + 0.4 + 0.4 * blob
        tile = 0.6 * np.clip(grey, 0, 1)[..., None] + 0.4 * colormaps["jet"](blob)[..., :3]
        top, left = 20 + 295 * (k // 4), 10 + 290 * (k % 4)
        page[top:top + 280, left:left + 280] = (255 * tile).astype(np.uint8)
    Image.fromarray(page).save(path, format="PNG")


def test_the_page_embeds_montages_at_screen_size_within_a_budget(tmp_path):
    """explain's montages (about 1200 pixels wide, hundreds of kB) go into the page as WebP of
    at most MONTAGE_WIDTH pixels: the page grows by a bounded amount per montage shown."""
    from PIL import Image

    from sarcograde.report.images import MONTAGE_WIDTH

    root = write_study(tmp_path / "study")
    without = len(build_study_report(root, tmp_path / "plain.html").read_bytes())
    montages = sorted((root / "explain").glob("*/*/*.png"))
    for k, path in enumerate(montages):
        _montage(path, k)
    png_bytes = {p.stem: p.stat().st_size for p in montages}
    page = build_study_report(root).read_text(encoding="utf-8")
    parsed = parse(page)
    shown = [(src, alt) for src, alt in zip(parsed.images, parsed.alts)
             if alt.startswith("attention map")]
    assert len(shown) >= 4
    embedded = 0
    for src, alt in shown:  # each smaller than a fifth of its file, as wide as a screen shows it
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "WEBP" and im.width == MONTAGE_WIDTH
        assert len(data) * 5 < png_bytes[alt.removeprefix("attention map ")]
        embedded += len(src)
    # the page is what it was with tiny images, plus at most 80 kB per montage shown
    assert embedded < 80_000 * len(shown)
    assert len(page.encode("utf-8")) < without + 80_000 * len(shown)


def test_methods_and_provenance_come_from_study_json_and_the_runs(study):
    _, _, parsed = study
    methods = parsed.sections["methods"]
    for snippet in ("2 external site(s) (hospital-a, hospital-b)", "seed: 3", "500 bootstrap",
                    "DL-T2FS: ", "2-fold cross-validation", "batch size 8", "late fusion",
                    "Kaplan-Meier", "decision curves (net benefit"):
        assert snippet in methods, snippet
    provenance = parsed.sections["provenance"]
    assert "train T2FS" in provenance and "evaluate/hospital-a/run.json" in provenance


def test_synthetic_caveat_when_a_manifest_was_written_by_synth(tmp_path):
    root = write_study(tmp_path / "study", explain=False, train=False)
    page = build_study_report(root).read_text(encoding="utf-8")
    assert "Synthetic cohort." not in page
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / "synth.json").write_text("{}")
    study = json.loads((root / "study.json").read_text())
    study["config"]["train"] = str(cohort / "manifest.csv")
    (root / "study.json").write_text(json.dumps(study))
    page = build_study_report(root).read_text(encoding="utf-8")
    assert "Synthetic cohort." in page


def test_a_prediction_file_missing_from_the_evaluation_is_flagged(tmp_path):
    root = write_study(tmp_path, explain=False, train=False)
    (root / "predict" / "hospital-b" / "volume.csv").write_text("patient_id,p_high,predicted\n")
    parsed = parse(build_study_report(root).read_text(encoding="utf-8"))
    text = parsed.sections["performance"]
    assert "Not evaluated: predict/hospital-b/ has predictions of volume" in text
    assert text.count("Not evaluated") == 1


def test_hostile_patient_id_and_model_name_are_escaped(tmp_path):
    root = write_study(tmp_path, hostile=True)
    page = build_study_report(root).read_text(encoding="utf-8")
    assert HOSTILE_ID not in page and HOSTILE_MODEL not in page
    parsed = parse(page)
    assert not {"b"} & parsed.tags and "x" not in parsed.images
    assert HOSTILE_ID in parsed.sections["flow"] and HOSTILE_ID in parsed.gallery
    block = metrics_of(root, "hospital-a")["models"][HOSTILE_MODEL]
    assert parsed.cells[("hospital-a", HOSTILE_MODEL, None, "auc")] == expected(block["auc"])
    assert ("hospital-a", HOSTILE_MODEL, "DL-T2FS", "delong_p") in parsed.cells


def test_missing_optional_parts_say_not_run(tmp_path):
    root = write_study(tmp_path, explain=False, train=False, survival=False, study_json=False)
    for site in SITES:
        (root / "evaluate" / site / "cohort_table.md").unlink()
        (root / "evaluate" / site / "roc.png").unlink()
    (root / "evaluate" / "hospital-b" / "decision_curve.png").unlink()
    metrics = metrics_of(root, "pooled")
    metrics["models"] = {"DL-T2FS": metrics["models"]["DL-T2FS"]}
    del metrics["delong"]
    (root / "evaluate" / "pooled" / "metrics.json").write_text(json.dumps(metrics))
    parsed = parse(build_study_report(root).read_text(encoding="utf-8"))
    for section, what in (("attention", "attention maps"), ("training", "learning curves"),
                          ("survival", "survival analysis (hospital-a)"),
                          ("cohort", "cohort table (hospital-b)"),
                          ("roc", "ROC curves (hospital-a)"),
                          ("decision", "decision curves (hospital-b)"),
                          ("delong", "DeLong tests (pooled): one model only"),
                          ("provenance", "study steps")):
        assert f"Not run: {what}" in parsed.sections[section], section
    assert "Not run" not in parsed.sections["performance"]
    assert "Not evaluated" not in parsed.sections["performance"]
    assert parsed.sections["summary"].count("not evaluated") == len(MODELS) - 1
    only = metrics["models"]["DL-T2FS"]["auc"]
    assert parsed.cells[("pooled", "DL-T2FS", None, "auc")] == expected(only)


def test_an_evaluation_from_before_the_utility_measures_still_renders(tmp_path):
    """A study evaluated by the previous version (no subgroups, abstention or decision curves in
    metrics.json) gets its page, each missing part saying so."""
    root = write_study(tmp_path)
    for site in (*SITES, "pooled"):
        metrics = metrics_of(root, site)
        for key in ("subgroups", "abstention", "decision_curve"):
            metrics.pop(key, None)
        (root / "evaluate" / site / "metrics.json").write_text(json.dumps(metrics))
    parsed = parse(build_study_report(root).read_text(encoding="utf-8"))
    assert "metrics.json has no 'subgroups'" in parsed.sections["subgroups"]


@pytest.mark.parametrize("damage, named", [
    ("no_evaluate", "evaluate"),
    ("no_metrics", "hospital-b"),
    ("no_models_key", "hospital-a/metrics.json"),
    ("bad_json", "pooled/metrics.json"),
    ("bad_delong", "hospital-b/metrics.json"),
    ("bad_png", "hospital-a/roc.png"),
    ("attention_without_column", "T2FS/attention.csv"),
])
def test_missing_or_broken_required_file_is_one_line_naming_it(tmp_path, capsys, damage, named):
    root = write_study(tmp_path / "study")
    evaluate = root / "evaluate"
    if damage == "no_evaluate":
        for path in sorted(evaluate.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        evaluate.rmdir()
    elif damage == "no_metrics":
        (evaluate / "hospital-b" / "metrics.json").unlink()
    elif damage == "no_models_key":
        (evaluate / "hospital-a" / "metrics.json").write_text(json.dumps({"auc": 0.5}))
    elif damage == "bad_delong":
        metrics = metrics_of(root, "hospital-b")
        metrics["delong"] = [{"a": "DL-T2FS", "p": 0.1}]
        (evaluate / "hospital-b" / "metrics.json").write_text(json.dumps(metrics))
    elif damage == "bad_json":
        (evaluate / "pooled" / "metrics.json").write_text("{not json")
    elif damage == "bad_png":
        (evaluate / "hospital-a" / "roc.png").write_bytes(b"GIF89a")
    else:
        path = root / "explain" / "hospital-b" / "T2FS" / "attention.csv"
        pd.read_csv(path).drop(columns=["inside"]).to_csv(path, index=False)
    out = tmp_path / "report.html"
    assert cli.main(["report", "--study", str(root), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0], err
    assert not out.exists()


def test_cli_writes_study_report_and_its_record(tmp_path, capsys):
    root = write_study(tmp_path / "study", explain=False, train=False)
    assert cli.main(["report", "--study", str(root)]) == 0
    assert (root / "report.html").is_file()
    record = json.loads((root / "report.run.json").read_text(encoding="utf-8"))
    assert record["status"] == "finished" and record["config"]["study"] == str(root)
    assert set(record["inputs"]) == {f"metrics_{s}" for s in (*SITES, "pooled")}
    capsys.readouterr()
    assert cli.main(["report", str(root / "evaluate" / "pooled"), "--study", str(root)]) == 1
    assert cli.main(["report"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("either EVAL" in line for line in err)


def test_a_multi_model_evaluate_folder_alone_gets_the_study_page(tmp_path, capsys):
    root = write_study(tmp_path / "study", explain=False, train=False)
    folder = root / "evaluate" / "hospital-b"
    out = tmp_path / "report.html"
    assert cli.main(["report", str(folder), "--out", str(out)]) == 0
    parsed = parse(out.read_text(encoding="utf-8"))
    for model, block in metrics_of(root, "hospital-b")["models"].items():
        assert parsed.cells[("hospital-b", model, None, "auc")] == expected(block["auc"])
    assert "Not run: attention maps" in parsed.sections["attention"]
    capsys.readouterr()
    assert cli.main(["report", str(folder), "--run", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--study DIR" in err[0]


def test_the_acquisition_section_shows_each_cohorts_summary_as_check_wrote_it(tmp_path):
    from sarcograde.acquisition import Header, protocol_row, summary
    from sarcograde.formats.acquisition import write_acquisition

    root = write_study(tmp_path)
    page = parse(build_study_report(root).read_text(encoding="utf-8"))
    assert "Not run: acquisition table" in page.sections["acquisition"]
    for cohort, (maker, tesla) in (("train", ("Siemens", 1.5)), ("hospital-a", ("GE", 3.0))):
        header = Header("DICOM", (0.5, 0.5), 4.0, (512, 512), 30,
                        {"Manufacturer": maker, "MagneticFieldStrength": tesla,
                         "RepetitionTime": 600.0, "EchoTime": 12.0})
        rows = [protocol_row(f"{cohort}-{i}", "T1FSGd", cohort, header) for i in range(3)]
        write_acquisition(root / "check" / cohort, rows, summary(rows))
    text = parse(build_study_report(root).read_text(encoding="utf-8")).sections["acquisition"]
    assert "Not run" not in text
    written = pd.read_csv(root / "check" / "hospital-a" / "acquisition-summary.csv", dtype=str)
    assert written.loc[0, "manufacturer"] == "GE (3)" and written.loc[0, "n"] == "3"
    for value in ("Siemens (3)", "GE (3)", "1.5 (3)", "3.0 (3)", "600", "512", "unknown (3)"):
        assert value in text, value
    assert text.index("hospital-a") < text.index("GE (3)") and "train" in text
