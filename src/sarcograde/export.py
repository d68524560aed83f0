"""Export trained models as a model package to share (docs/artifacts.md): each sequence's fold
models as fp32 safetensors weights, the preprocessing and model settings the runs used, the
fusion where there is one, the operating threshold and how it was chosen, the training cohort's
counts, the cross-validated metrics with bootstrap CIs (and, from a study, every external
site's), the versions, and a model card, MODEL_CARD.md. With `--onnx`, each fold model also as
an ONNX graph (`engines.onnx_graph`), checked before it is written: its logits must equal torch's
within ONNX_TOLERANCE on real slices of the run's training cache, run by ONNX Runtime.

`--study DIR` takes a study's runs (DIR/train/<SEQ>), its fusion (DIR/train/fusion) and its
evaluations (DIR/evaluate/<site>/metrics.json); `--run SEQ=RUN` (one per sequence) and
`--fusion FUSION` take runs made one by one. The threshold is the Youden point of the training
cohort's out-of-fold predictions of the graded model (DL-fusion where there is one, else the
sequence's ensemble), or `--threshold`. The package holds no patient id, no path of this machine
and no DICOM tag; its record, PKG.run.json (with the paths), stays beside it.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from . import LABELS, __version__
from . import model_kinds as kinds
from .acquisition import not_recorded, training_ranges
from .artifacts import RunRecord, package_versions
from .console import info, warn
from .dicom_series import default_series_rules
from .ensemble import COHORT_KEYS, Ensemble, load_ensemble
from .errors import SarcogradeError
from .evaluate import metric_block
from .evaluate.inputs import read_cv_predictions
from .formats.cache import INDEX, CacheIndex, read_patient
from .formats.evaluation import METRICS, read_metrics
from .formats.fusion import FUSION_MODEL, read_fusion_model
from .formats.package import FORMAT, FORMAT_VERSION, onnx_name, weights_name, write_package
from .formats.records import file_record_name, read_record, record_path
from .formats.run import CV_PREDICTIONS, FOLDS, read_run_config
from .formats.study import read_study
from .model_card import INTENDED_USE, LIMITATIONS, render_card
from .options import named_paths, split_assignment
from .stats import resample_indices, youden_threshold

FUSION_NAME = kinds.name(kinds.FUSION)
# The CIs of the cross-validated metrics: patient-level percentile bootstrap, as evaluate's.
BOOTSTRAP, SEED = 1000, 0
MAIN_PACKAGES = ("python", "sarcograde", "torch", "monai", "numpy", "SimpleITK", "scikit-learn",
                 "pydicom", "safetensors")
AGGREGATE = ("p_high = softmax of the logits averaged over every fold model and every tumour "
             "slice (the paper's rule)")
YOUDEN_RULE = ("maximises sensitivity + specificity - 1 on the training cohort's out-of-fold "
               "predictions of {model}")
ONNX_TOLERANCE = 1e-4
CHECK_SLICES = 16   # slices of the training cache each ONNX graph is checked on
EXTERNAL_THRESHOLD = "sensitivity and specificity at 0.5 (the argmax), as evaluate reports them"


@dataclass
class Sources:
    """What the package is made of: each sequence's run and training cache, the fusion, the
    study whose evaluations it carries, and the predicted target."""

    runs: dict[str, Path]
    caches: dict[str, Path | None]
    fusion: Path | None = None
    study: Path | None = None
    target: str = "grade"
    series_rules: dict[str, list[str]] = field(default_factory=dict)  # --series-rule's, by SEQ
    onnx: bool = False   # --onnx: the fold models as ONNX graphs too


@dataclass
class Trained:
    """One sequence's run as the package takes it."""

    sequence: str
    run: Path
    ensemble: Ensemble
    config: dict | None          # the run's config.json (absent from a hand-made run)
    out_of_fold: pd.DataFrame    # patient_id, label, p_high (mean over repeats)
    cohort: pd.DataFrame         # the training patients' label, grade and site
    acquisition_range: dict      # the training patients' range of each acquisition value


# ------------------------------------------------------------------------------- sources

def study_sources(folder: Path) -> Sources:
    """A study's runs, fusion and evaluations (docs/study.md's layout)."""
    from .study.plan import Layout

    layout = Layout(folder)
    config = (read_study(folder) or {}).get("config") or {}
    if config and kinds.DL not in config.get("models", [kinds.DL]):
        raise SarcogradeError("the study trained no DL model (its `models` lack dl); there is "
                              "nothing to export", path=layout.state)
    sequences = config.get("sequences") or sorted(
        p.name for p in (folder / "train").glob("*")
        if (p / FOLDS).is_file() and kinds.kind_of(p.name) is None)
    if not sequences:
        raise SarcogradeError("no training run in the study's train/ folder; run the study "
                              "(`sarcograde study`) to its train stage", path=folder)
    fusion = layout.fusion if (layout.fusion / FUSION_MODEL).is_file() else None
    return Sources(runs={seq: layout.run(seq) for seq in sequences},
                   caches={seq: layout.cache("train", seq) for seq in sequences},
                   fusion=fusion, study=folder, target=config.get("target", "grade"))


def run_sources(specs: list[str], fusion: Path | None) -> Sources:
    """Runs given as SEQ=RUN, their training caches as their config.json records them."""
    runs = named_paths(specs, "--run")
    caches = {}
    for seq, run in runs.items():
        path = (read_run_config(run, required=False) or {}).get("cache_path")
        caches[seq] = Path(path) if path else None
    if fusion is not None and fusion.is_file():
        fusion = fusion.parent  # fusion apply takes the model.json itself; either is fine
    return Sources(runs=runs, caches=caches, fusion=fusion)


def load_trained(sequence: str, run: Path, cache: Path | None, graded: bool = True) -> Trained:
    """The run of `sequence`: its fold models and out-of-fold predictions, and its training
    patients (their FNCLCC grades only where `graded`: a study's other target replaces them)."""
    ensemble = load_ensemble(run, "cpu")
    trained_on = ensemble.preprocess.get("sequence")
    if trained_on not in (None, sequence):
        raise SarcogradeError(f"--run {sequence}=...: this run was trained on sequence "
                              f"{trained_on}; name it {trained_on}", path=run)
    oof = read_cv_predictions(run)
    patients = training_patients(oof, cache)
    if not graded:
        patients["grade"] = pd.NA
    return Trained(sequence, run, ensemble, read_run_config(run, required=False), oof, patients,
                   acquisition_range(sequence, oof, cache))


def acquisition_range(sequence: str, out_of_fold: pd.DataFrame, cache: Path | None) -> dict:
    """The range of each acquisition value over the run's training patients, from the training
    cache's index.csv (`known: false` and why, when it is not there or predates them)."""
    if cache is None or not (cache / INDEX).is_file():
        return not_recorded(f"the training cache was not there at export, so the training "
                            f"cohort's acquisition of {sequence} is unknown")
    rows = CacheIndex.read(cache).frame
    return training_ranges(rows[(rows["sequence"] == sequence)
                                & rows["patient_id"].isin(out_of_fold["patient_id"])])


def training_patients(out_of_fold: pd.DataFrame, cache: Path | None) -> pd.DataFrame:
    """The run's training patients (those it predicted out of fold) with their label, and their
    FNCLCC grade and site where the training cache's index is still there."""
    frame = out_of_fold[["patient_id", "label"]].assign(grade=pd.NA, site="")
    if cache is None or not (cache / INDEX).is_file():
        warn(f"export: the training cache {cache or '(not recorded)'} is not here: the "
             "package's cohort summary has no grades and sites")
        return frame
    index = CacheIndex.read(cache).frame.drop_duplicates("patient_id").set_index("patient_id")
    ids = frame["patient_id"]
    frame["grade"] = index["grade"].reindex(ids).to_numpy()
    frame["site"] = index["site"].reindex(ids).fillna("").to_numpy()
    return frame


# ------------------------------------------------------------------------------- numbers

def fused_out_of_fold(fusion_model: dict, runs: dict[str, Path]) -> pd.DataFrame:
    """DL-fusion's out-of-fold predictions of the training cohort: the fusion applied to each
    sequence's out-of-fold margins averaged over the repeats, the input it was fitted on."""
    from .fusion import apply, out_of_fold_margins

    margins = {seq: out_of_fold_margins(run / CV_PREDICTIONS) for seq, run in runs.items()}
    fused = apply(fusion_model, {
        seq: pd.DataFrame({"patient_id": m.index, "p_high": expit(m["margin"].to_numpy())})
        for seq, m in margins.items()})
    labels = pd.concat([m["label"] for m in margins.values()])
    labels = labels[~labels.index.duplicated()]
    return fused.assign(label=labels.reindex(fused["patient_id"]).to_numpy().astype(int))


def operating_threshold(model: str, trained_as: str, out_of_fold: pd.DataFrame,
                        given: float | None) -> dict:
    """The threshold of the graded `model` (high grade when p_high > threshold) and how it was
    chosen; `trained_as` is its name in the study (DL-fusion, DL-<SEQ>)."""
    if given is not None:
        if not 0 < given < 1:
            raise SarcogradeError(f"--threshold {given} is not between 0 and 1")
        return {"value": float(given), "model": model, "rule": "given",
                "description": "given to `sarcograde export --threshold`"}
    try:
        value = youden_threshold(out_of_fold["label"].to_numpy(int),
                                 out_of_fold["p_high"].to_numpy(float))
    except ValueError:
        raise SarcogradeError(f"{model}'s out-of-fold predictions hold one grade class only: no "
                              "Youden threshold; give one with --threshold") from None
    return {"value": float(value), "model": model, "rule": "youden",
            "description": YOUDEN_RULE.format(model=trained_as), "n_training": len(out_of_fold)}


def cross_validation(out_of_fold: dict[str, pd.DataFrame], threshold: dict) -> dict:
    """Each packaged model's out-of-fold AUC with its bootstrap CI; the graded model's
    sensitivity and specificity at the threshold too."""
    models = {}
    for name, frame in out_of_fold.items():
        y, p = frame["label"].to_numpy(int), frame["p_high"].to_numpy(float)
        graded = name == threshold["model"]
        block = metric_block(y, p, threshold["value"], resample_indices(len(y), BOOTSTRAP, SEED),
                             ("auc", "sensitivity", "specificity") if graded else ("auc",))
        if not graded:
            del block["confusion"]  # at a threshold that is not this model's
        models[name] = {"n": len(y), "n_low": int((y == 0).sum()), "n_high": int(y.sum()),
                        **block}
    note = ("out-of-fold predictions of the training cohort (mean over the repeats); "
            "sensitivity and specificity at the package's threshold")
    if threshold["rule"] == "youden":
        note += ", chosen on these same predictions: optimistic"
    return {"source": note, "bootstrap": {"resamples": BOOTSTRAP, "seed": SEED,
                                          "interval": "percentile, 95%", "unit": "patient"},
            "models": models}


def cohort_counts(patients: pd.DataFrame) -> dict:
    """Counts by grade class, FNCLCC grade and site: no patient id."""
    labels = patients["label"].astype(int)
    counts = {"n": len(patients), "n_low": int((labels == 0).sum()),
              "n_high": int((labels == 1).sum())}
    grades = pd.to_numeric(patients["grade"], errors="coerce").dropna().astype(int)
    if len(grades):
        counts["grades"] = {f"G{g}": int(n) for g, n in sorted(grades.value_counts().items())}
    sites = patients["site"].fillna("").astype(str)
    if (sites != "").any():
        counts["sites"] = {s or "(none)": int(n) for s, n in sorted(sites.value_counts().items())}
    return counts


def external_validation(study: Path, names: dict[str, str]) -> dict:
    """Every external site's metrics of the packaged models (`names`: the study's model name ->
    the package's), read from the study's evaluations."""
    from .study.plan import Layout

    layout = Layout(study)
    config = (read_study(study) or {}).get("config") or {}
    sites = list(config.get("test") or sorted(
        p.name for p in (study / "evaluate").glob("*") if p.name != kinds.POOLED))
    sites += [kinds.POOLED] if len(sites) > 1 else []
    blocks = {}
    for site in sites:
        if not (layout.evaluate(site) / METRICS).is_file():
            warn(f"export: site {site} was not evaluated; run the study to its evaluate stage "
                 "to carry its metrics")
            blocks[site] = {"note": "not evaluated"}
            continue
        metrics = read_metrics(layout.evaluate(site))
        evaluated = dict(metrics.get("models") or {})
        evaluated.setdefault(metrics.get("model"), metrics)
        blocks[site] = {
            "n": metrics.get("n"), "n_low": metrics.get("n_low"), "n_high": metrics.get("n_high"),
            "models": {ours: {"n": evaluated[theirs].get("n", metrics.get("n")),
                              **{k: _estimate(evaluated[theirs].get(k))
                                 for k in ("auc", "sensitivity", "specificity")}}
                       for theirs, ours in names.items() if theirs in evaluated}}
    return {"source": "the study's evaluations (evaluate/<site>/metrics.json)",
            "threshold": EXTERNAL_THRESHOLD, "sites": blocks}


def _estimate(block) -> dict | None:
    if not isinstance(block, dict):
        return None
    return {k: block[k] for k in ("value", "ci95", "note") if k in block}


def versions(found: dict[str, str]) -> dict[str, str]:
    return {name: found[name] for name in MAIN_PACKAGES if name in found}


# ------------------------------------------------------------------------------- model.json

def sequence_block(trained: Trained, series_rules: list[str] | None = None,
                   onnx: bool = False) -> dict:
    """model.json's `models[SEQ]`: what rebuilds the ensemble, what it was trained with, and the
    SeriesDescription rules that find its series in an exam (`grade --exam`)."""
    ensemble, config = trained.ensemble, trained.config or {}
    meta = ensemble.metas[0]
    model = dict(meta["model"])
    if str(model.get("pretrained", "none")).lower() not in ("none", "imagenet"):
        model["pretrained"] = "a weights file"  # its path is this machine's
    record = read_record(record_path(trained.run)) or {}
    block = {
        "name": kinds.name(kinds.PACKAGE, trained.sequence),
        "trained_as": kinds.name(kinds.DL, trained.sequence),
        "preprocess": {k: v for k, v in ensemble.preprocess.items() if k not in COHORT_KEYS},
        "model": model, "input": dict(ensemble.input_meta), "classes": list(LABELS),
        "aggregate": AGGREGATE,
        "folds": [{"name": name, "repeat": int(m.get("repeat", 0)), "fold": int(m.get("fold", 0)),
                   "best_epoch": int(m.get("best_epoch", 0)),
                   "weights": weights_name(trained.sequence, name),
                   **({"onnx": onnx_name(trained.sequence, name)} if onnx else {})}
                  for name, m in zip(ensemble.names, ensemble.metas)],
        "training_cohort": cohort_counts(trained.cohort),
        "acquisition_range": trained.acquisition_range,
        "series_rules": (default_series_rules(trained.sequence) if series_rules is None
                         else list(series_rules)),
    }
    for key in ("preset", "seed", "train"):
        if key in config:
            block[key] = config[key]
    if "packages" in record:
        block["trained_with"] = versions(record["packages"])
    return block


def build_document(sources: Sources, trained: list[Trained], fusion_model: dict | None,
                   given_threshold: float | None) -> dict:
    out_of_fold = {kinds.name(kinds.PACKAGE, t.sequence): t.out_of_fold for t in trained}
    # the study's model name -> the package's
    names = {kinds.name(kinds.DL, t.sequence): kinds.name(kinds.PACKAGE, t.sequence)
             for t in trained}
    fusion = None
    if fusion_model is not None:
        names[FUSION_NAME] = kinds.name(kinds.PACKAGE_FUSION)
        out_of_fold[names[FUSION_NAME]] = fused_out_of_fold(fusion_model, sources.runs)
        fusion = {"name": names[FUSION_NAME], "trained_as": FUSION_NAME, **fusion_model}
    trained_as = FUSION_NAME if fusion_model is not None else next(iter(names))
    graded = names[trained_as]
    threshold = operating_threshold(graded, trained_as, out_of_fold[graded], given_threshold)
    everyone = pd.concat([t.cohort for t in trained]).drop_duplicates("patient_id")
    document = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "target": sources.target, "classes": list(LABELS),
        "sequences": [t.sequence for t in trained],
        "models": {t.sequence: sequence_block(t, sources.series_rules.get(t.sequence),
                                              sources.onnx)
                   for t in trained},
        "fusion": fusion,
        "graded_model": graded,
        "threshold": threshold,
        "intended_use": INTENDED_USE, "limitations": list(LIMITATIONS),
        "training_cohort": cohort_counts(everyone),
        "cross_validation": cross_validation(out_of_fold, threshold),
        "external_validation": None,
        "versions": {"exported_with": versions(
            {**package_versions(), "sarcograde": __version__,
             "safetensors": metadata.version("safetensors")})},
    }
    if sources.onnx:
        from .engines import OPSET

        document["onnx"] = {
            "opset": OPSET, "outputs": ["logits", "signed Grad-CAM map of class 1"],
            "exported_with": {"torch": metadata.version("torch"),
                              "onnx": metadata.version("onnx"),
                              "checked_with": f"onnxruntime {metadata.version('onnxruntime')}"},
            "check": (f"checked at export: logits within {ONNX_TOLERANCE:g} of torch's on up to "
                      f"{CHECK_SLICES} slices of the training cache")}
    if sources.study is not None:
        document["external_validation"] = external_validation(sources.study, names)
    return document


def fold_weights(trained: list[Trained]):
    """(weights file name, state dict) of every fold model, sequence by sequence."""
    for t in trained:
        for name, network in zip(t.ensemble.names, t.ensemble.models):
            yield weights_name(t.sequence, name), network.state_dict()


def check_slices(sequence: str, cache: Path | None, size: int) -> np.ndarray:
    """Up to CHECK_SLICES tumour slices of the run's training cache (n, S, S)."""
    if cache is None or not (cache / INDEX).is_file():
        raise SarcogradeError(f"--onnx checks each {sequence} graph on slices of the run's "
                              f"training cache, which is not found; export on the machine that "
                              f"trained, or without --onnx", path=cache)
    images = []
    for row in CacheIndex.read(cache).rows(drop_empty=True).itertuples(index=False):
        images.append(read_patient(cache, row, ("image",), size)["image"])
        if sum(map(len, images)) >= CHECK_SLICES:
            break
    return np.concatenate(images)[:CHECK_SLICES].astype(np.float32)


def fold_graphs(trained: list[Trained], caches: dict[str, Path | None], largest: dict):
    """(ONNX file name, graph) of every fold model, each checked first: its logits by ONNX
    Runtime within ONNX_TOLERANCE of torch's on real slices, else the export stops. The largest
    difference of each sequence goes into `largest`."""
    import torch

    from . import model as model_lib
    from .engines import OnnxEngine, onnx_graph

    for t in trained:
        size = int(t.ensemble.input_meta["size"])
        x = model_lib.prepare_input(check_slices(t.sequence, caches.get(t.sequence), size),
                                    t.ensemble.input_meta)
        largest[t.sequence] = 0.0
        for name, network in zip(t.ensemble.names, t.ensemble.models):
            graph = onnx_graph(network, size)
            logits = OnnxEngine("onnxruntime", [graph], torch.get_num_threads()).run(x)[0][0]
            with torch.no_grad():
                difference = float((logits - network(x)).abs().max())
            if not difference <= ONNX_TOLERANCE:
                raise SarcogradeError(f"--onnx: the ONNX graph of {t.sequence} {name} gives "
                                      f"logits up to {difference:.3g} from torch's on {len(x)} "
                                      f"training slices (at most {ONNX_TOLERANCE:g}); nothing "
                                      "was written", path=t.run / name)
            largest[t.sequence] = max(largest[t.sequence], difference)
            yield onnx_name(t.sequence, name), graph


# ------------------------------------------------------------------------------- command

def series_rules(specs: list[str], sequences: list[str]) -> dict[str, list[str]]:
    """--series-rule SEQ=REGEX values by sequence, each a valid pattern of a packaged sequence."""
    rules: dict[str, list[str]] = {}
    for spec in specs:
        sequence, rule = split_assignment(spec, "--series-rule", "SEQ=REGEX")
        if sequence not in sequences:
            raise SarcogradeError(f"--series-rule {spec!r}: the package has no sequence "
                                  f"{sequence} ({', '.join(sequences)})")
        try:
            re.compile(rule)
        except re.error as exc:
            raise SarcogradeError(f"--series-rule {spec!r} is not a regular expression "
                                  f"({exc})") from None
        rules.setdefault(sequence, []).append(rule)
    return rules


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--study", type=Path, metavar="DIR",
                        help="a study folder: its runs, fusion and external evaluations")
    source.add_argument("--run", action="append", metavar="SEQ=RUN",
                        help="a sequence's training run (repeat for each sequence)")
    parser.add_argument("--fusion", type=Path, metavar="FUSION",
                        help="with --run: the fusion folder of `fusion fit` (needed for more "
                             "than one sequence)")
    parser.add_argument("--threshold", type=float, metavar="X",
                        help="operating threshold (high grade when p_high > X); default: the "
                             "Youden point of the out-of-fold predictions")
    parser.add_argument("--series-rule", action="append", default=[], metavar="SEQ=REGEX",
                        help="a SeriesDescription pattern (case-insensitive) that finds SEQ's "
                             "series in an exam for `grade --exam`; repeat for several; replaces "
                             "the defaults for SEQ (T1FSGd: T1 fat-saturated after contrast, "
                             "T2FS: T2 fat-saturated or STIR)")
    parser.add_argument("--onnx", action="store_true",
                        help="also write each fold model as an ONNX graph (checked against "
                             "torch on slices of the training cache), for `grade --engine "
                             "onnxruntime|openvino` and inference servers")
    parser.add_argument("--zip", action="store_true",
                        help="write one zip file instead of a folder")
    parser.add_argument("--out", type=Path, required=True, metavar="PKG",
                        help="the package: a new folder (or file with --zip); an earlier "
                             "package there is replaced, anything else refused")


def run(args: argparse.Namespace) -> int:
    if args.study is not None:
        if args.fusion is not None:
            raise SarcogradeError("--fusion goes with --run; a study's fusion is "
                                  "DIR/train/fusion")
        sources = study_sources(args.study)
    else:
        sources = run_sources(args.run, args.fusion)
    sources.series_rules = series_rules(args.series_rule, list(sources.runs))
    sources.onnx = args.onnx
    if args.onnx:
        from .engines import require

        for package in ("onnx", "onnxruntime"):   # the export, the check
            require(package)
    fusion_model = None
    if sources.fusion is not None:
        fusion_model = read_fusion_model(sources.fusion / FUSION_MODEL, FUSION_NAME)
        if set(fusion_model["sequences"]) != set(sources.runs):
            raise SarcogradeError(f"the fusion was fitted on {', '.join(fusion_model['sequences'])}"
                                  f", the package has {', '.join(sources.runs)}; give a run for "
                                  "each of the fusion's sequences", path=sources.fusion)
    elif len(sources.runs) > 1:
        raise SarcogradeError("several sequences need their fusion to give one grade: add "
                              "--fusion FUSION (`sarcograde fusion fit`) or export one sequence")
    inputs = {f"{seq}/{name}": run / name for seq, run in sources.runs.items()
              for name in (FOLDS, CV_PREDICTIONS)}
    if sources.fusion is not None:
        inputs["fusion"] = sources.fusion / FUSION_MODEL
    out = Path(args.out)
    with RunRecord(out.parent, config={"zip": args.zip, "threshold": args.threshold},
                   inputs=inputs, name=file_record_name(out)) as record:
        trained = [load_trained(seq, run, sources.caches.get(seq), sources.target == "grade")
                   for seq, run in sources.runs.items()]
        document = build_document(sources, trained, fusion_model, args.threshold)
        largest: dict[str, float] = {}
        graphs = fold_graphs(trained, sources.caches, largest) if args.onnx else ()
        document = write_package(out, document, fold_weights(trained), render_card, args.zip,
                                 graphs)
        record.record["package"] = {"id": document["id"], "format_version": FORMAT_VERSION,
                                    "sarcograde": __version__}
        if args.onnx:
            record.record["onnx_largest_logit_difference"] = largest
    threshold = document["threshold"]
    folds = sum(len(t.ensemble.names) for t in trained)
    info(f"export: {', '.join(document['sequences'])} ({folds} fold models"
         f"{', fusion' if fusion_model else ''}), threshold {threshold['value']:.3f} "
         f"({threshold['rule']}), package {document['id']} -> {out}")
    return 0
