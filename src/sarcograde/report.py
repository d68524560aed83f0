"""Write the evaluation, attention maps, training curves and provenance into one HTML page.

The page is self-contained (inline CSS, images as base64 data URIs, no script, no network), so a
clinician can open it offline, print it or attach it to a manuscript draft. Every number on it
is read from the artifacts of the earlier stages (docs/artifacts.md); a part that was not run is
stated as "not run", never left out silently.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import html
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from . import __version__
from .artifacts import RunRecord, write_text
from .config import AugmentParams
from .console import info
from .errors import SarcogradeError
from .formats.cache import read_cache_config
from .formats.evaluation import (format_ci, format_estimate, format_number, read_metrics,
                                 read_output_csv, read_output_json)
from .formats.predictions import read_attention
from .formats.records import file_record_name, record_path
from .formats.run import read_folds, read_history, read_run_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Below this many test patients the report warns that the confidence intervals are wide.
SMALL_COHORT = 100

CLASSIFICATION_METRICS = (("auc", "AUC"), ("precision", "Precision"),
                          ("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
                          ("f1", "F1"), ("accuracy", "Accuracy"))
CALIBRATION_METRICS = (("brier", "Brier score"), ("calibration_slope", "Calibration slope"),
                       ("calibration_intercept", "Calibration intercept"))
# How many attention montages the gallery shows per kind of case.
GALLERY_PER_KIND = 2
# The columns of explain's attention.csv that the gallery and its table read.


# --------------------------------------------------------------------------------------------
# Formatting


def format_p(p: Any) -> str:
    """A p-value as reported in papers: "<0.001" or three decimals."""
    if p is None or isinstance(p, str):
        return "n/a" if p in (None, "") else p
    p = float(p)
    if not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# --------------------------------------------------------------------------------------------
# HTML building blocks


class Html(str):
    """Markup that is already escaped (plain `str` is escaped wherever it is inserted)."""


def esc(content: Any) -> Html:
    if isinstance(content, Html):
        return content
    return Html(html.escape("" if content is None else str(content)))


def join(parts: Iterable[Any]) -> Html:
    return Html("".join(esc(p) for p in parts))


def tag(name: str, content: Any = "", **attrs: Any) -> Html:
    """`<name attrs>content</name>`; `class_` gives `class`, `data_x` gives `data-x`."""
    rendered = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{html.escape(str(value), quote=True)}"'
        for key, value in attrs.items() if value is not None)
    return Html(f"<{name}{rendered}>{esc(content)}</{name}>")


def estimate_cell(block: Any, **attrs: Any) -> Html:
    """A table cell "0.75 (0.66-0.83)" with the interval in a muted span."""
    text = format_estimate(block)
    value, _, ci = text.partition(" ")
    content = join([value, " ", tag("span", ci, class_="ci")]) if ci else esc(value)
    note = block.get("note") if isinstance(block, dict) else None
    return tag("td", content, class_="num", title=note, **attrs)


def table(header: list[Any], rows: list[list[Any]], *, wide: bool = False,
          row_classes: list[str | None] | None = None, **attrs: Any) -> Html:
    """A table; a cell that is already a `<td>` (Html starting with "<td") is kept as it is."""
    head = tag("thead", tag("tr", join(tag("th", h) for h in header)))
    body = []
    for i, row in enumerate(rows):
        cells = join(c if isinstance(c, Html) and c.startswith("<td") else tag("td", c)
                     for c in row)
        body.append(tag("tr", cells, class_=row_classes[i] if row_classes else None))
    return tag("table", join([head, tag("tbody", join(body))]),
               class_="wide" if wide else None, **attrs)


def not_run(what: str) -> Html:
    """The box that says which part of the pipeline was not run, and why."""
    return tag("div", join([tag("strong", "Not run: "), what]), class_="not-run")


def png_data_uri(path: Path) -> str:
    """The PNG file as a base64 data URI; a file that is not a PNG is a clear error."""
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise SarcogradeError("not a PNG image", path=path)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(path: Path, caption: Any, alt: str | None = None, **attrs: Any) -> Html:
    img = Html(f'<img src="{png_data_uri(path)}" alt="{html.escape(alt or path.stem)}">')
    return tag("figure", join([img, tag("figcaption", caption)]), **attrs)


def pretty_name(key: str) -> str:
    """A model or column key as a label: "clinical_volume" -> "Clinical volume"."""
    text = str(key).replace("_", " ").strip()
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------------------------
# Inputs


@dataclass
class Section:
    anchor: str
    title: str
    body: Html


@dataclass
class ReportInputs:
    """The folders the page is built from; all but `eval_dir` are optional."""

    eval_dir: Path
    explain_dir: Path | None = None
    run_dir: Path | None = None
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        self.eval_dir = Path(self.eval_dir)
        self.metrics = read_metrics(self.eval_dir)
        for name in ("explain_dir", "run_dir", "cache_dir"):
            folder = getattr(self, name)
            if folder is not None:
                folder = Path(folder)
                if not folder.is_dir():
                    raise SarcogradeError("folder not found", path=folder)
                setattr(self, name, folder)
        self.eval_record = _optional_json(record_path(self.eval_dir))
        self.run_config = read_run_config(self.run_dir, required=False) if self.run_dir else None
        self.folds = (read_folds(self.run_dir).as_dict()
                      if self.run_dir and (self.run_dir / "folds.json").is_file() else None)
        self.cache_config = (read_cache_config(self.cache_dir, required=False) or None
                             if self.cache_dir else None)

    def predict_record_path(self) -> Path | None:
        """`predict`'s record beside the predictions CSV that metrics.json names."""
        predictions = self.metrics.get("predictions")
        return record_path(predictions) if predictions else None

    def records(self) -> dict[str, dict]:
        """The run.json of every folder given, by stage."""
        paths = {"preprocess": self.cache_dir and record_path(self.cache_dir),
                 "train": self.run_dir and record_path(self.run_dir),
                 "predict": self.predict_record_path(),
                 "evaluate": record_path(self.eval_dir),
                 "explain": self.explain_dir and record_path(self.explain_dir)}
        out = {}
        for stage, path in paths.items():
            record = _optional_json(path) if path and path.is_file() else None
            if isinstance(record, dict):
                out[stage] = record
        return out


def _optional_json(path: Path) -> Any:
    return read_output_json(path) if path.is_file() else None


def _lookup(mapping: Any, *keys: str, default: Any = None) -> Any:
    """mapping[k1][k2]...; `default` where any level is missing."""
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


# --------------------------------------------------------------------------------------------
# Sections


def _caveats(inputs: ReportInputs) -> list[Html]:
    metrics = inputs.metrics
    notes = []
    if _is_synthetic(inputs):
        notes.append(tag("div", join([
            tag("strong", "Synthetic cohort. "),
            "The images were generated by `sarcograde synth`: the numbers show that the "
            "pipeline works end to end, not how the method performs on patients."]),
            class_="caveat"))
    n, n_low = metrics.get("n"), metrics.get("n_low")
    if isinstance(n, int) and n < SMALL_COHORT:
        notes.append(tag("div", join([
            tag("strong", "Small cohort. "),
            f"{n} patients ({n_low} low grade) were evaluated: the 95% confidence intervals are "
            "wide; read them, not the point estimates."]), class_="caveat"))
    return notes


def _is_synthetic(inputs: ReportInputs) -> bool:
    """True when a manifest behind the run was written by `sarcograde synth` (synth.json beside)."""
    configs = [_lookup(inputs.eval_record, "config"), inputs.cache_config, inputs.run_config]
    return any((Path(m).parent / "synth.json").is_file() for m in _manifest_paths(configs))


def _manifest_paths(value: Any, key: str = "") -> list[str]:
    """Every string under a key that names a manifest, at any depth of nested configs."""
    if isinstance(value, dict):
        return [m for k, v in value.items() for m in _manifest_paths(v, str(k))]
    if isinstance(value, list):
        return [m for v in value for m in _manifest_paths(v, key)]
    return [value] if isinstance(value, str) and "manifest" in key else []


def _summary(inputs: ReportInputs) -> Html:
    m = inputs.metrics
    cards = []
    for key, label in (("auc", "AUC"), ("sensitivity", "Sensitivity"),
                       ("specificity", "Specificity"), ("accuracy", "Accuracy")):
        block = m.get(key)
        value = format_number(_lookup(block, "value") if isinstance(block, dict) else block)
        ci = format_ci(_lookup(block, "ci95"))
        cards.append(tag("div", join([tag("div", label, class_="label"),
                                      tag("div", value, class_="value"),
                                      tag("div", f"95% CI {ci[1:-1]}" if ci else "", class_="ci")]),
                         class_="card", data_metric=key))
    cards.append(tag("div", join([
        tag("div", "Patients", class_="label"), tag("div", m.get("n", "n/a"), class_="value"),
        tag("div", f"{m.get('n_low', 'n/a')} low grade, {m.get('n_high', 'n/a')} high grade",
            class_="ci")]), class_="card"))
    return tag("div", join(cards), class_="cards")


def _flow_section(inputs: ReportInputs) -> Section:
    path = inputs.eval_dir / "patient_flow.json"
    if not path.is_file():
        return Section("flow", "Patient flow", not_run("patient_flow.json is missing in the "
                                                      "evaluation folder."))
    flow = read_output_json(path)
    excluded = flow.get("excluded", [])
    n_included = flow.get("n_included", len(flow.get("included", [])))
    counts = [f"{flow[key]} {what}" for key, what in
              (("n_predictions", "patients predicted"), ("n_manifest", "in the test manifest"))
              if key in flow]
    parts = [tag("p", f"{'; '.join(counts) + '; ' if counts else ''}{n_included} included in "
                      f"the evaluation (predicted and graded), {len(excluded)} left out.")]
    if excluded:
        reasons: dict[str, list[str]] = {}
        for entry in excluded:
            reasons.setdefault(entry.get("reason", "no reason given"), []).append(
                str(entry.get("patient_id", "")))
        rows = [[reason, tag("td", len(ids), class_="num"), ", ".join(ids)]
                for reason, ids in reasons.items()]
        parts.append(table(["Left out because", "Patients", "Patient IDs"], rows,
                           id="flow-table"))
    return Section("flow", "Patient flow", join(parts))


def _cohort_section(inputs: ReportInputs) -> Section:
    md_path = inputs.eval_dir / "cohort_table.md"
    csv_path = inputs.eval_dir / "cohort_table.csv"
    if md_path.is_file():
        header, rows, notes = parse_markdown_table(md_path.read_text(encoding="utf-8"))
        body = [table(header, rows, wide=True, id="cohort-table")]
        body += [tag("p", note, class_="note") for note in notes]
    elif csv_path.is_file():
        frame = read_output_csv(csv_path).fillna("")
        body = [table([str(c) for c in frame.columns],
                      [[format_cell(v) for v in row] for row in frame.itertuples(index=False)],
                      wide=True, id="cohort-table")]
    else:
        body = [not_run("cohort table: evaluate was not given --train-manifest.")]
    return Section("cohort", "Cohorts (Table 1)", join(body))


def parse_markdown_table(text: str) -> tuple[list[str], list[list[str]], list[str]]:
    """A Markdown pipe table's header and rows, and the other non-empty lines (footnotes)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines
             if line.startswith("|")]
    cells = [row for row in cells if not all(c and set(c) <= set("-: ") for c in row)]
    notes = [line for line in lines if not line.startswith(("|", "#"))]
    return (cells[0] if cells else []), cells[1:], notes


def format_cell(value: Any) -> str:
    """A CSV cell: floats with at most three decimals, everything else as written."""
    if isinstance(value, float):
        return format_number(value, 3 if abs(value) < 1 else 1)
    return str(value)


def _model_rows(metrics: dict) -> list[tuple[str, str, dict]]:
    """(key, label, metrics block) of the DL model and every baseline evaluate tried."""
    rows = [("dl", str(metrics.get("model") or "DL model"), metrics)]
    for key, block in (_lookup(metrics, "baselines", "models") or {}).items():
        if isinstance(block, dict):
            rows.append((key, str(block.get("label", pretty_name(key))), block))
    return rows


def _notes(models: list[tuple[str, str, dict]], names: Iterable[str]) -> list[Html]:
    """A footnote for every value that could not be computed, saying why."""
    notes = []
    for _, label, block in models:
        if block.get("note"):
            notes.append(tag("p", f"{label}: {block['note']}", class_="note"))
        for name in names:
            note = _lookup(block, name, "note")
            if note:
                notes.append(tag("p", f"{label}, {name}: {note}", class_="note"))
    return notes


def _primary_first(rows: list) -> list[str | None]:
    return ["primary"] + [None] * (len(rows) - 1)


def _performance_section(inputs: ReportInputs) -> Section:
    m = inputs.metrics
    models = _model_rows(m)
    baselines = m.get("baselines") if isinstance(m.get("baselines"), dict) else {}
    has_baselines = len(models) > 1
    source = f" Predictions: {m['source']}." if m.get("source") else ""
    parts = [tag("p", join([
        f"{m.get('n', 'n/a')} patients ({m.get('n_low', 'n/a')} low grade, "
        f"{m.get('n_high', 'n/a')} high grade).{source} Predicted high grade when p_high > "
        f"{format_number(m.get('threshold'))} (argmax of the softmax outputs). Point estimates "
        f"with 95% confidence intervals from {_bootstrap_count(inputs)} bootstrap resamples of "
        "patients (percentile intervals)."]))]

    metric_names = [name for name, _ in CLASSIFICATION_METRICS]
    header = ["Model"] + [label for _, label in CLASSIFICATION_METRICS]
    if has_baselines:
        header.append("DeLong p vs DL")
    rows = []
    for key, label, block in models:
        row = [label] + [estimate_cell(block.get(name), data_model=key, data_metric=name)
                         for name in metric_names]
        if has_baselines:
            p = "reference" if key == "dl" else format_p(_lookup(block, "delong_vs_dl", "p"))
            row.append(tag("td", p, class_="num", data_model=key, data_metric="delong_p"))
        rows.append(row)
    parts += [tag("h3", "Discrimination and classification"),
              table(header, rows, wide=True, id="metrics-table", row_classes=_primary_first(rows)),
              *_notes(models, metric_names)]
    if has_baselines:
        parts.append(tag("p", _baseline_note(baselines), class_="note"))
    else:
        why = baselines.get("note") or "evaluate was not given --train-manifest."
        parts.append(not_run(f"baselines (clinical, tumour volume, both): {why}"))

    calibration_names = [name for name, _ in CALIBRATION_METRICS]
    rows = [[label] + [estimate_cell(block.get(name), data_model=key, data_metric=name)
                       for name in calibration_names] for key, label, block in models]
    parts += [tag("h3", "Calibration"),
              table(["Model"] + [label for _, label in CALIBRATION_METRICS], rows,
                    id="calibration-table", row_classes=_primary_first(rows)),
              *_notes(models, calibration_names),
              tag("p", "Brier score: mean squared error of p_high (lower is better). A perfectly "
                       "calibrated model has slope 1 and intercept 0 (logistic recalibration on "
                       "logit p_high).", class_="note")]
    parts.append(_youden(m))
    parts.append(_confusion(inputs.eval_dir / "confusion.csv"))

    captions = {"roc.png": "ROC curves of the evaluated patients, with the 95% bootstrap band "
                           "of the DL model.",
                "calibration.png": "Reliability diagram: observed share of high grade per bin "
                                   "of p_high."}
    figures = [figure(inputs.eval_dir / name, caption) for name, caption in captions.items()
               if (inputs.eval_dir / name).is_file()]
    if figures:
        parts.append(tag("div", join(figures), class_="grid two"))
    else:
        parts.append(not_run("ROC and calibration plots: roc.png and calibration.png are "
                             "missing."))
    return Section("performance", "Performance", join(parts))


def _baseline_note(baselines: dict) -> str:
    """How the baselines were fitted, from metrics.json's baselines block."""
    text = [f"Baselines: {baselines['model']}" if baselines.get("model") else "Baselines"]
    features = baselines.get("features")
    if isinstance(features, dict):
        text.append("features " + "; ".join(f"{pretty_name(k)}: {_list(v)}"
                                            for k, v in features.items()))
    source = _lookup(baselines, "cv", "source")
    if source:
        text.append(f"cross-validation: {source}")
    text += [str(n) for n in baselines.get("imputation") or []]
    text += [str(n) for n in baselines.get("dropped_features") or []]
    text.append("DeLong p: paired two-sided test of each baseline's AUC against the DL model's")
    return "; ".join(text) + "."


def _bootstrap_count(inputs: ReportInputs) -> str:
    count = inputs.metrics.get("bootstrap") or _lookup(inputs.eval_record, "config", "bootstrap")
    if isinstance(count, dict):
        count = count.get("resamples")
    return str(count) if count else "(not recorded)"


def _youden(metrics: dict) -> Html:
    block = metrics.get("youden")
    title = tag("h3", "Youden threshold from cross-validation")
    if not isinstance(block, dict) or block.get("threshold") is None:
        reason = block.get("note") if isinstance(block, dict) else None
        return join([title, not_run(f"Youden threshold: {reason or 'evaluate was not given --run'}"
                                    " (it needs the training run's out-of-fold predictions).")])
    threshold = format_number(block["threshold"], 3)
    argmax = format_number(metrics.get("threshold"))
    names = [(k, label) for k, label in CLASSIFICATION_METRICS if k in block]
    rows = [[label, estimate_cell(block.get(k), data_model="youden", data_metric=k),
             estimate_cell(metrics.get(k))] for k, label in names]
    n_training = (f" ({block['n_training']} training patients)"
                  if block.get("n_training") is not None else "")
    caution = ([tag("div", join([tag("strong", "Caution: "), block["caution"]]), class_="caveat")]
               if block.get("caution") else [])
    return join([
        title, *caution,
        tag("p", f"The threshold that maximises sensitivity + specificity - 1 on the training "
                 f"cohort's out-of-fold predictions{n_training} is p_high > {threshold}. The "
                 f"metrics at that threshold, beside those at argmax ({argmax}):"),
        table(["Metric", f"Youden ({threshold})", f"Argmax ({argmax})"], rows, id="youden-table")])


CONFUSION_HEADER = {"model": "Model", "rule": "Threshold rule", "threshold": "Threshold",
                    "tn": "TN", "fp": "FP", "fn": "FN", "tp": "TP"}


def _confusion(path: Path) -> Html:
    title = tag("h3", "Confusion matrices")
    if not path.is_file():
        return join([title, not_run("confusion.csv is missing.")])
    frame = read_output_csv(path)
    rows = [[format_cell(v) if c in ("model", "rule", "threshold")
             else tag("td", format_cell(v), class_="num") for c, v in zip(frame.columns, row)]
            for row in frame.itertuples(index=False)]
    return join([title, table([CONFUSION_HEADER.get(c, c) for c in frame.columns], rows,
                              id="confusion-table"),
                 tag("p", "TN, FP, FN, TP: true negatives (low grade called low), false "
                          "positives, false negatives, true positives (high grade called high).",
                     class_="note")])


def _survival_section(inputs: ReportInputs) -> Section:
    path = inputs.eval_dir / "survival.json"
    title = "Overall survival"
    if not path.is_file():
        return Section("survival", title, not_run("survival analysis: survival.json is missing."))
    survival = read_output_json(path)
    if not survival.get("models"):
        return Section("survival", title, not_run(
            f"survival analysis: {survival.get('note', 'no model was stratified')}."))
    rows, classes = [], []
    for key, entry in survival["models"].items():
        logrank = entry.get("logrank") or {}
        p_cells = [tag("td", format_p(logrank.get("p")) if "p" in logrank
                       else logrank.get("note", "n/a"), class_="num", data_model=key,
                       data_metric="logrank_p"),
                   tag("td", format_p(logrank.get("p_bonferroni")), class_="num",
                       data_model=key, data_metric="p_bonferroni")]
        for i, (group, g) in enumerate((entry.get("groups") or {}).items()):
            rows.append([entry.get("title", pretty_name(key)) if i == 0 else "", group,
                         tag("td", g.get("n", ""), class_="num"),
                         tag("td", g.get("deaths", ""), class_="num"),
                         tag("td", format_number(g.get("median_months"), 1)
                             if g.get("median_months") is not None else "not reached",
                             class_="num"),
                         *(p_cells if i == 0 else ["", ""])])
            classes.append("group-start" if i == 0 else None)
    unit = survival.get("time_unit", "months")
    parts = [tag("p", f"Overall survival of {survival.get('n', 'n/a')} test patients "
                      f"({survival.get('deaths', 'n/a')} deaths) by predicted class and by the "
                      f"true grade; log-rank test, {survival.get('correction', 'Bonferroni')}."),
             table(["Stratified by", "Group", "Patients", "Deaths", f"Median OS ({unit})",
                    "Log-rank p", "Bonferroni p"], rows, wide=True, id="survival-table",
                   row_classes=classes)]
    left_out = survival.get("excluded_no_survival_data") or []
    if left_out:
        parts.append(tag("p", f"Without survival data, left out: {', '.join(map(str, left_out))}.",
                         class_="note"))
    figures = [figure(inputs.eval_dir / entry["figure"],
                      f"Kaplan-Meier estimate of overall survival: {entry.get('title', key)}.")
               for key, entry in survival["models"].items()
               if entry.get("figure") and (inputs.eval_dir / entry["figure"]).is_file()]
    if figures:
        parts.append(tag("div", join(figures), class_="grid two"))
    return Section("survival", title, join(parts))


def _attention_section(inputs: ReportInputs) -> Section:
    title = "Attention maps"
    if inputs.explain_dir is None:
        return Section("attention", title, not_run(
            "attention maps: no --explain folder was given (run `sarcograde explain`)."))
    path = inputs.explain_dir / "attention.csv"
    if not path.is_file():
        raise SarcogradeError("no attention.csv: not a `sarcograde explain` folder",
                              path=inputs.explain_dir)
    frame = read_attention(path)
    frame["patient_id"] = frame["patient_id"].astype(str)
    off = frame["off_tumour"].astype(str).str.lower().isin(("true", "1", "yes"))
    frame = frame.assign(off_tumour=off, on_tumour=frame["inside"] + frame["ring"])
    frame = frame.assign(known=frame["label"].notna())
    frame = frame.assign(correct=frame["known"] & (frame["predicted"] == frame["label"]))

    picks: dict[str, list[str]] = {}

    def pick(rows: pd.DataFrame, kind: str) -> None:
        for pid in rows["patient_id"].head(GALLERY_PER_KIND):
            picks.setdefault(pid, []).append(kind)

    by_on_tumour = frame.sort_values("on_tumour", ascending=False)
    pick(by_on_tumour[by_on_tumour["correct"]], "correct")
    pick(by_on_tumour[by_on_tumour["known"] & ~by_on_tumour["correct"]], "wrong")
    pick(by_on_tumour, "highest attention on tumour")
    pick(by_on_tumour[::-1], "lowest attention on tumour")
    pick(by_on_tumour[by_on_tumour["off_tumour"]][::-1], "off tumour")

    cards = []
    by_id = frame.set_index("patient_id")
    for pid, kinds in picks.items():
        png = inputs.explain_dir / f"{pid}.png"
        row = by_id.loc[pid]
        # Whatever a montage was picked for, its prediction and flag are always shown.
        status = (["correct" if row["correct"] else "wrong"] if pd.notna(row["label"]) else [])
        status += ["off tumour"] if row["off_tumour"] else []
        kinds = list(dict.fromkeys(status + kinds))
        tags = join(tag("span", k, class_="tag" + (" bad" if k in ("wrong", "off tumour")
                                                  else "")) for k in kinds)
        caption = join([tags, tag("strong", pid), " ",
                        f"p_high {format_number(row['p_high'])}, predicted "
                        f"{_grade_word(row['predicted'])}, true {_grade_word(row['label'])}; "
                        f"attention inside {format_number(row['inside'])}, ring "
                        f"{format_number(row['ring'])}, elsewhere "
                        f"{format_number(row['elsewhere'])}"])
        if png.is_file():
            cards.append(figure(png, caption, alt=f"attention map {pid}", data_patient=pid,
                                data_kinds=";".join(kinds)))
        else:
            cards.append(tag("p", join([caption, " (montage missing)"]), class_="note"))

    n_off = int(frame["off_tumour"].sum())
    rows = [[r.patient_id, tag("td", r.n_slices, class_="num"),
             tag("td", format_number(r.p_high), class_="num"), _grade_word(r.predicted),
             _grade_word(r.label), tag("td", format_number(r.inside), class_="num",
                                       data_patient=r.patient_id, data_metric="inside"),
             tag("td", format_number(r.ring), class_="num"),
             tag("td", format_number(r.elsewhere), class_="num"),
             tag("td", "off tumour", class_="flag") if r.off_tumour else tag("td", "ok",
                                                                              class_="ok")]
            for r in frame.itertuples(index=False)]
    body = [
        tag("p", "Grad-CAM maps averaged over the fold models; the share of attention inside "
                 "the tumour, in a ring around it and elsewhere. Patients whose attention falls "
                 "mostly off the tumour and its border are flagged for review (the paper's "
                 f"failure case, attention on air): {n_off} of {len(frame)} here. Wrong "
                 "predictions are marked in red."),
        tag("div", join(cards), class_="gallery"),
        tag("h3", "All patients"),
        table(["Patient", "Slices", "p_high", "Predicted", "True", "Inside", "Ring", "Elsewhere",
               "Flag"], rows, wide=True, id="attention-table",
              row_classes=["wrong" if known and not correct else None
                           for known, correct in zip(frame["known"], frame["correct"])])]
    return Section("attention", title, join(body))


def _grade_word(label: Any) -> str:
    if label is None or (isinstance(label, float) and math.isnan(label)):
        return "unknown"
    return "high" if int(label) == 1 else "low"


def _training_section(inputs: ReportInputs) -> Section:
    title = "Training"
    if inputs.run_dir is None:
        return Section("training", title, not_run(
            "learning curves: no --run folder was given."))
    folds = sorted(p for p in inputs.run_dir.glob("fold_*") if p.is_dir())
    if not folds:
        raise SarcogradeError("no fold_XX folders: not a `sarcograde train` folder",
                              path=inputs.run_dir)
    rows, figures = [], []
    for fold in folds:
        history_path = fold / "history.csv"
        if history_path.is_file():
            history = read_history(history_path)
            best = history.loc[history["val_loss"].idxmin()]
            rows.append([fold.name, tag("td", len(history), class_="num"),
                         tag("td", int(best["epoch"]), class_="num", data_fold=fold.name,
                             data_metric="best_epoch"),
                         tag("td", format_number(best["val_loss"], 3), class_="num"),
                         tag("td", format_number(best.get("val_auc")), class_="num")])
        else:
            rows.append([fold.name, "history.csv missing", "", "", ""])
        if (fold / "learning_curve.png").is_file():
            figures.append(figure(fold / "learning_curve.png", fold.name,
                                  alt=f"learning curve {fold.name}"))
    body = [tag("p", "Best epoch = lowest validation loss (early stopping restores its "
                     "weights)."),
            table(["Fold model", "Epochs run", "Best epoch", "Val. loss at best",
                   "Val. AUC at best"], rows, id="training-table")]
    if figures:
        body.append(tag("div", join(figures), class_="grid"))
    return Section("training", title, join(body))


def methods_paragraph(inputs: ReportInputs) -> str:
    """A methods paragraph for a manuscript, every number read from the run's files."""
    run_config = inputs.run_config or {}
    # What the caches were built with wins over the preset's preprocess section.
    pre = {**(run_config.get("preprocess") or {}), **(run_config.get("cache") or {}),
           **(inputs.cache_config or {})}
    model = run_config.get("model") or {}
    train = run_config.get("train") or {}
    missing = "(not recorded)"

    def v(d: dict, key: str, fmt=str) -> str:
        return fmt(d[key]) if d.get(key) is not None else missing

    sentences = []
    sequence = run_config.get("sequence") or pre.get("sequence") or missing
    if pre:
        n4 = (f"N4 bias-field correction (SimpleITK, shrink factor {v(pre, 'n4_shrink')}, "
              f"iterations {v(pre, 'n4_iterations', _list)})" if pre.get("n4")
              else "no bias-field correction")
        sentences.append(
            f"Images of the {sequence} sequence underwent {n4}, were resampled to "
            f"{v(pre, 'spacing_mm')} mm isotropic voxels (linear interpolation for images, "
            f"nearest neighbour for masks) and z-score normalised. Every axial slice containing "
            f"tumour was cropped to the tumour's bounding box plus a {v(pre, 'margin_mm')} mm "
            f"margin, made square and resized to {v(pre, 'size')} x {v(pre, 'size')} pixels.")
    if model:
        arch = str(model.get("architecture", missing))
        detail = ""
        if model.get("block_config") is not None:
            detail = (f" (block configuration {_list(model['block_config'])}, growth rate "
                      f"{v(model, 'growth_rate')}, {v(model, 'init_features')} initial features)")
        pretrained = model.get("pretrained")
        init = ("initialised with ImageNet weights" if pretrained not in (None, "none", False)
                else "trained from random initialisation")
        sentences.append(f"A 2D {_arch_name(arch)}{detail} with two outputs was {init}.")
    if train:
        # folds.json holds the splits actually made (fewer folds where a class is small).
        folds = {**train, **{k: inputs.folds[k] for k in ("folds", "repeats")
                             if k in (inputs.folds or {})}}
        adaptation = _lookup(inputs.folds, "adaptation")
        sentences.append(
            f"Models were trained in stratified {v(folds, 'folds')}-fold cross-validation with "
            f"{v(folds, 'repeats')} repeat(s), split by patient ({_n_models(inputs, folds)} "
            f"models){f' ({adaptation})' if adaptation else ''}, with Adam (learning rate "
            f"{v(train, 'learning_rate', _sci)}, batch size {v(train, 'batch_size')}), "
            f"class-weighted cross-entropy, at most {v(train, 'max_epochs')} epochs and early "
            f"stopping on the validation loss (patience {v(train, 'patience')} epochs), "
            f"{augmentation_text(train.get('augment'))}.")
    aggregate = _aggregation(inputs)
    sentences.append(
        f"For each evaluated patient the prediction was {aggregate}; a patient was called high "
        f"grade when p_high > {format_number(inputs.metrics.get('threshold'))}. 95% confidence "
        f"intervals come from {_bootstrap_count(inputs)} bootstrap resamples of patients.")
    if _lookup(inputs.metrics, "baselines", "models"):
        sentences.append("Logistic-regression baselines on clinical variables, tumour volume "
                         "and both were fitted with the same cross-validation and compared "
                         "with the DL model by DeLong's test.")
    if (_optional_json(inputs.eval_dir / "survival.json") or {}).get("models"):
        sentences.append("Overall survival was compared between predicted groups with "
                         "Kaplan-Meier curves and the log-rank test, Bonferroni-corrected.")
    return " ".join(sentences)


def _aggregation(inputs: ReportInputs) -> str:
    """The ensemble rule, from the run record `predict` writes beside predictions.csv."""
    source = str(inputs.metrics.get("source", ""))
    if source.startswith("out-of-fold"):
        return f"that of the fold model that had not seen the patient, {source}"
    path = inputs.predict_record_path()
    record = _optional_json(path) if path else None
    rule = _lookup(record, "config", "aggregate")
    if rule == "probabilities":
        return "the mean of the slice probabilities over all fold models and tumour slices"
    if rule == "logits":
        return ("the softmax of the mean logits over all fold models and tumour slices (the "
                "paper's rule)")
    return "the ensemble mean over all fold models and tumour slices (rule not recorded)"


def _arch_name(arch: str) -> str:
    return {"densenet161": "DenseNet-161", "densenet121": "DenseNet-121",
            "densenet": "DenseNet"}.get(arch.lower(), arch)


def _n_models(inputs: ReportInputs, folds: dict) -> str:
    finished = len(list(inputs.run_dir.glob("fold_*/model.pt"))) if inputs.run_dir else 0
    if finished:
        return str(finished)
    try:
        return str(int(folds["folds"]) * int(folds["repeats"]))
    except (KeyError, TypeError, ValueError):
        return "(not recorded)"


def augmentation_text(setting: Any) -> str:
    """`train.augment` in words, with the numbers `sarcograde.data` trains with."""
    if setting in (None, False, "none"):
        return "without augmentation"
    try:
        a = AugmentParams.from_config(setting)
    except SarcogradeError:
        return f"with on-the-fly augmentation ({setting})"
    return (f"with on-the-fly augmentation: horizontal and vertical flips (each p = {a.flip_p:g}), "
            f"rotation up to {a.rotate_deg:g} degrees (p = {a.rotate_p:g}), zoom "
            f"{a.zoom[0]:g}-{a.zoom[1]:g} (p = {a.zoom_p:g}), elastic deformation (SD "
            f"{a.elastic_sd * 100:g}% of the side, p = {a.elastic_p:g}) and a random crop of "
            f"{a.crop_min * 100:g}-100% of the side resized back (p = {a.crop_p:g})")


def _list(values: Any) -> str:
    return ", ".join(str(v) for v in values) if isinstance(values, (list, tuple)) else str(values)


def _sci(x: Any) -> str:
    x = float(x)
    return f"{x:g}" if 1e-3 <= abs(x) < 1e3 else f"{x:.0e}".replace("e-0", "e-")


def _methods_section(inputs: ReportInputs) -> Section:
    body = [tag("p", methods_paragraph(inputs), class_="methods", id="methods-text")]
    if inputs.run_config is None:
        body.append(not_run("training details: no --run folder was given."))
    return Section("methods", "Methods (generated from the configuration)", join(body))


def _provenance_section(inputs: ReportInputs) -> Section:
    records = inputs.records()
    parts = []
    if records:
        rows = [[stage, r.get("command", ""), r.get("start", ""), r.get("end", ""),
                 r.get("status", ""), r.get("seed", "")] for stage, r in records.items()]
        parts += [tag("h3", "Runs"), table(["Stage", "Command", "Start", "End", "Status",
                                            "Seed"], rows, wide=True)]
        parts += [tag("h3", "Package versions"), _versions_table(records)]
    else:
        parts.append(not_run("provenance: no run.json found."))
    config = inputs.run_config or _lookup(inputs.eval_record, "config")
    if isinstance(config, dict):
        parts += [tag("h3", "Configuration"), _config_tables(config)]
    return Section("provenance", "Configuration and provenance", join(parts))


def _versions_table(records: dict[str, dict]) -> Html:
    """Package versions; one column when every stage ran with the same ones."""
    versions = {stage: r.get("packages") or {} for stage, r in records.items()}
    names = sorted({name for v in versions.values() for name in v})
    distinct = {json.dumps(v, sort_keys=True) for v in versions.values()}
    if len(distinct) == 1:
        only = next(iter(versions.values()))
        return table(["Package", f"Version ({', '.join(versions)})"],
                     [[name, only[name]] for name in names], id="versions-table")
    return table(["Package", *versions], [[name, *(v.get(name, "") for v in versions.values())]
                                          for name in names], id="versions-table")


def _config_tables(config: dict) -> Html:
    """One small parameter table per config section, side by side."""
    scalars = {k: v for k, v in config.items() if not isinstance(v, dict)}
    sections = ({"general": scalars} if scalars else {}) | {
        k: v for k, v in config.items() if isinstance(v, dict)}
    if "cache" in sections:
        # A run's preset carries a preprocess section; the cache says what was actually used.
        sections.pop("preprocess", None)
        sections["preprocessing (of the cache)"] = sections.pop("cache")
    tables = []
    for name, values in sections.items():
        rows = [[key, _config_value(value)] for key, value in values.items()]
        tables.append(tag("div", join([tag("h3", name), table(["Parameter", "Value"], rows)])))
    return tag("div", join(tables), class_="grid config")


def _config_value(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return _list(value) if isinstance(value, (list, tuple)) else str(value)


# --------------------------------------------------------------------------------------------
# Page


def render_report(inputs: ReportInputs, title: str | None = None) -> str:
    """The report page as one HTML string."""
    sections = [_flow_section(inputs), _cohort_section(inputs), _performance_section(inputs),
                _survival_section(inputs), _attention_section(inputs),
                _training_section(inputs), _methods_section(inputs),
                _provenance_section(inputs)]
    title = title or "Soft-tissue sarcoma grading: external validation report"
    css = resources.files("sarcograde").joinpath("templates", "report.css").read_text(encoding="utf-8")
    created = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    toc = tag("nav", join(tag("a", s.title, href=f"#{s.anchor}") for s in sections),
              class_="toc")
    body = join([
        tag("header", tag("div", join([
            tag("h1", title),
            tag("p", f"sarcograde {__version__} · created {created} · low grade (FNCLCC G1) vs "
                     "high grade (G2/G3) · method of Navarro et al., Cancers 2021")]),
            class_="inner"), class_="page"),
        Html("<main>"), toc, *_caveats(inputs), _summary(inputs),
        *(tag("section", join([tag("h2", s.title), s.body]), id=s.anchor) for s in sections),
        tag("footer", f"Generated by `sarcograde report` from {inputs.eval_dir}. "
                      "Research software; not a medical device."),
        Html("</main>")])
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>\n{css}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


def build_report(eval_dir, out, *, explain_dir=None, run_dir=None, cache_dir=None,
                 title: str | None = None) -> Path:
    """Write the report of an evaluate folder (and optionally explain/run/cache) to `out`."""
    inputs = ReportInputs(Path(eval_dir), explain_dir=explain_dir, run_dir=run_dir,
                          cache_dir=cache_dir)
    out = Path(out)
    folders = {"eval": inputs.eval_dir, "explain": inputs.explain_dir, "run": inputs.run_dir,
               "cache": inputs.cache_dir}
    config = {name: str(folder) if folder else None for name, folder in folders.items()}
    # The page's own record beside it: its folder may be shared with other stages' outputs.
    with RunRecord(out.parent, config={**config, "title": title},
                   inputs={"metrics": inputs.eval_dir / "metrics.json"},
                   name=file_record_name(out)):
        write_text(out, render_report(inputs, title))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("eval_dir", metavar="EVAL", type=Path,
                        help="output folder of `sarcograde evaluate` (holds metrics.json)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the HTML file to write (default: EVAL/report.html)")
    parser.add_argument("--explain", type=Path, default=None, metavar="DIR",
                        help="output folder of `sarcograde explain` (attention gallery)")
    parser.add_argument("--run", type=Path, default=None, metavar="RUN",
                        help="output folder of `sarcograde train` (learning curves, config)")
    parser.add_argument("--cache", type=Path, default=None, metavar="CACHE",
                        help="the test cohort's preprocess cache (preprocessing parameters)")
    parser.add_argument("--title", default=None, help="page title")


def run(args: argparse.Namespace) -> int:
    out = args.out or Path(args.eval_dir) / "report.html"
    path = build_report(args.eval_dir, out, explain_dir=args.explain, run_dir=args.run,
                        cache_dir=args.cache, title=args.title)
    info(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
