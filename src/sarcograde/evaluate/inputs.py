"""What evaluate reads: each model's predictions (one per patient, out-of-fold predictions
averaged over the repeats, or a file per site when pooled), the test cohort (a manifest or the
union of several sites'), the training cohort, and the graded patients every model predicted,
matched by patient_id, never by row position."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import model_kinds as kinds
from ..cohort import Cohort, Patient, load_manifest
from ..console import info, warn
from ..errors import SarcogradeError
from ..formats import predictions as predictions_format
from ..formats import run as run_format
from ..options import split_assignment
from ..outcome import Outcome, outcome

CV_COLUMNS = set(run_format.CV_COLUMNS)


@dataclass
class Inputs:
    """The evaluation's inputs, read and matched."""

    paths: dict[str, str]                 # model -> its predictions ({site} template if pooled)
    single: bool                          # one predictions file given alone, as before issue 12
    sources: dict[str, str]               # model -> its predictions' source in words
    shown: dict[str, Path]                # model -> its predictions' path as shown
    test_cohort: Cohort
    sites: dict[str, Path] | None         # pooled: site -> its manifest
    train_cohort: Cohort | None           # --train-manifest: the baselines and Table 1
    sequence: str | None                  # the tumour volume's mask sequence (with train_cohort)
    cohort: str                           # the evaluated patients in titles: "test cohort", ...
    patients: list[Patient]               # graded and predicted by every model
    probabilities: dict[str, np.ndarray]  # model -> p_high of `patients`
    flow: dict                            # patient_flow.json
    outcome: Outcome                      # what label 0/1 stands for (--target)
    # model -> the ensemble's SD of p_high for `patients`; None where its file has none
    spreads: dict[str, np.ndarray | None] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """The first model: the Youden threshold's, and the baselines' DeLong reference."""
        return next(iter(self.paths))

    @property
    def labels(self) -> np.ndarray:
        return np.array([pt.label for pt in self.patients], int)


def read_predictions(path: Path) -> tuple[pd.DataFrame, str]:
    """One row per patient (patient_id, p_high; and label for out-of-fold predictions) and the
    predictions' source in words.

    predictions.csv of `sarcograde predict` has one row per patient; a training run's
    cv_predictions.csv (recognised by its columns) has one per patient and repeat, averaged here.
    """
    frame = predictions_format.read_predictions(path)
    if CV_COLUMNS <= set(frame.columns):
        return out_of_fold(frame, path)
    duplicated = frame["patient_id"][frame["patient_id"].duplicated()]
    if len(duplicated):
        raise SarcogradeError("patient predicted twice", patient=duplicated.iloc[0], path=path)
    spread = [predictions_format.SPREAD] if predictions_format.SPREAD in frame else []
    return (frame[["patient_id", "p_high", *spread]],
            "one prediction per patient (sarcograde predict)")


def out_of_fold(frame: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, str]:
    """cv_predictions.csv rows -> one row per patient (label, p_high = mean over repeats)."""
    bad = ~frame["label"].isin([0, 1])
    if bad.any():
        raise SarcogradeError(f"label {frame['label'][bad].iloc[0]!r} is not 0 (low) or 1 (high)",
                              patient=frame["patient_id"][bad].iloc[0], path=path)
    twice = frame[frame.duplicated(["patient_id", "repeat"])]
    if len(twice):
        raise SarcogradeError(f"patient validated twice in repeat {twice['repeat'].iloc[0]}",
                              patient=twice["patient_id"].iloc[0], path=path)
    labels = frame.groupby("patient_id")["label"].nunique()
    if (labels > 1).any():
        raise SarcogradeError("patient with different labels in different repeats",
                              patient=labels[labels > 1].index[0], path=path)
    repeats = frame["repeat"].nunique()
    counts = frame.groupby("patient_id")["repeat"].size()
    if (counts < repeats).any():  # e.g. a run trained fold by fold, not finished yet
        warn(f"{int((counts < repeats).sum())} patient(s) have fewer than {repeats} out-of-fold "
             f"predictions in {path} (unfinished folds?); their mean is over those they have")
    per_patient = frame.groupby("patient_id", sort=False).agg(
        label=("label", "first"), p_high=("p_high", "mean")).reset_index()
    return per_patient, (f"out-of-fold cross-validation (mean over {repeats} "
                         f"repeat{'s' if repeats > 1 else ''})")


def match_patients(predictions: pd.DataFrame, cohort: Cohort, path: Path | None = None
                   ) -> tuple[list[Patient], np.ndarray, dict]:
    """The graded patients present in both files (by id, in prediction order) and the flow.

    A `label` column (out-of-fold predictions) must agree with the manifest's grade.
    """
    by_id = cohort.by_id()
    predicted = set(predictions["patient_id"])
    labels = predictions["label"] if "label" in predictions else [None] * len(predictions)
    included, p, excluded = [], [], []
    for pid, p_high, label in zip(predictions["patient_id"], predictions["p_high"], labels):
        patient = by_id.get(pid)
        if patient is None:
            excluded.append({"patient_id": pid, "reason": "not in manifest"})
        elif patient.label is None:
            excluded.append({"patient_id": pid, "reason": "grade unknown"})
        elif label is not None and int(label) != patient.label:
            raise SarcogradeError(f"label {int(label)} differs from the manifest's grade "
                                  f"{patient.grade} (label {patient.label}): is this run "
                                  "trained on this manifest?", patient=pid, path=path)
        else:
            included.append(patient)
            p.append(p_high)
    # an ungraded patient is left out for its grade, predicted or not (train never predicts it)
    excluded += [{"patient_id": patient.patient_id,
                  "reason": "grade unknown" if patient.label is None else "not predicted"}
                 for patient in cohort if patient.patient_id not in predicted]
    flow = {"n_predictions": len(predictions), "n_manifest": len(cohort),
            "n_included": len(included), "included": [pt.patient_id for pt in included],
            "excluded": excluded}
    return included, np.asarray(p, float), flow


def read_cv_predictions(run: Path) -> pd.DataFrame:
    """Out-of-fold predictions of the training run, one row per patient (mean over repeats)."""
    path = run / run_format.CV_PREDICTIONS
    frame = run_format.read_cv_predictions(
        path, f"{run_format.CV_PREDICTIONS} (is this a `sarcograde train` run?)")
    return out_of_fold(frame, path)[0]


def prediction_inputs(args, reference: str) -> dict[str, str]:
    """Model name -> predictions path (a `{site}` template when pooled), in the order given.

    The positional file is the model `reference` (DL or DL-<SEQ>), then the --predictions ones,
    each under any name that can be a file name (`model_kinds.check_model_name`).
    """
    inputs = {} if args.predictions is None else {reference: str(args.predictions)}
    for spec in args.model_predictions:
        name, path = split_assignment(spec, "--predictions")
        kinds.check_model_name(name)
        if name in inputs:
            raise SarcogradeError(f"model {name} given twice")
        inputs[name] = path
    if not inputs:
        raise SarcogradeError("no predictions: give a predictions file or --predictions MODEL=CSV")
    return inputs


def read_manifest(path: Path, target: str) -> Cohort:
    """A cohort as evaluate reads it: `target` as each patient's label, images and masks
    optional (only the tumour volume needs masks)."""
    return load_manifest(path, strict=True, images=False, target=target)


def pooled_cohort(specs: list[str], target: str) -> tuple[Cohort, dict[str, Path]]:
    """The union of the sites' manifests; a patient's id becomes `<site>/<patient_id>` (ids may
    repeat between hospitals) and its `site` the site's name."""
    cohorts = {}
    for spec in specs:
        site, path = split_assignment(spec, "--pooled")
        if site in cohorts:
            raise SarcogradeError(f"site {site} given twice to --pooled")
        cohorts[site] = read_manifest(Path(path), target)
    if len(cohorts) < 2:
        raise SarcogradeError("--pooled needs at least two sites (SITE=MANIFEST each)")
    first = next(iter(cohorts.values()))
    patients = [replace(pt, patient_id=f"{site}/{pt.patient_id}", site=site)
                for site, cohort in cohorts.items() for pt in cohort]
    sequences = [seq for seq in first.sequences
                 if all(seq in cohort.sequences for cohort in cohorts.values())]
    return (Cohort(first.path, patients, sequences, [], []),
            {site: cohort.path for site, cohort in cohorts.items()})


def read_model_predictions(path: str, sites: list[str] | None) -> tuple[pd.DataFrame, str, Path]:
    """One model's predictions (see `read_predictions`); pooled: each site's file, ids prefixed
    with the site as in `pooled_cohort`. Returns the frame, its source and the path shown."""
    if sites is None:
        frame, source = read_predictions(Path(path))
        return frame, source, Path(path)
    if "{site}" not in path:
        raise SarcogradeError("with --pooled a predictions path needs {site} (e.g. "
                              "predict/{site}/DL-T2FS.csv)", path=path)
    frames = []
    for site in sites:
        frame, source = read_predictions(Path(path.replace("{site}", site)))
        frames.append(frame.assign(patient_id=site + "/" + frame["patient_id"]))
    return pd.concat(frames, ignore_index=True), source, Path(path)


def match_models(frames: dict[str, tuple[pd.DataFrame, Path]], cohort: Cohort
                 ) -> tuple[list[Patient], dict[str, np.ndarray], dict]:
    """The graded patients every model predicted (in the first model's order), each model's
    p_high for them, and the flow. One model: `match_patients` as it is."""
    matched = {name: match_patients(frame, cohort, path) for name, (frame, path) in frames.items()}
    if len(matched) == 1:
        (name, (patients, p, flow)), = matched.items()
        return patients, {name: p}, flow
    ids = {name: [pt.patient_id for pt in patients] for name, (patients, _, _) in matched.items()}
    common = set.intersection(*map(set, ids.values()))
    first_patients = next(iter(matched.values()))[0]
    patients = [pt for pt in first_patients if pt.patient_id in common]
    p = {name: pd.Series(p_m, index=ids[name])[[pt.patient_id for pt in patients]].to_numpy()
         for name, (_, p_m, _) in matched.items()}
    graded = [pt.patient_id for pt in cohort if pt.label is not None]
    excluded = [{"patient_id": pt.patient_id, "reason": "grade unknown"}
                for pt in cohort if pt.label is None]
    for pid in graded:
        missing = [name for name in matched if pid not in ids[name]]
        if len(missing) == len(matched):
            excluded.append({"patient_id": pid, "reason": "not predicted"})
        elif missing:
            excluded.append({"patient_id": pid, "reason": "not predicted by every model",
                             "missing_from": missing})
    unknown = {}
    for name, (_, _, flow) in matched.items():
        for entry in flow["excluded"]:
            if entry["reason"] == "not in manifest":
                unknown.setdefault(entry["patient_id"], []).append(name)
    excluded += [{"patient_id": pid, "reason": "not in manifest", "models": names}
                 for pid, names in unknown.items()]
    flow = {"n_predictions": next(iter(matched.values()))[2]["n_predictions"],
            "n_manifest": len(cohort), "n_included": len(patients),
            "included": [pt.patient_id for pt in patients], "excluded": excluded,
            "comparison": f"the {len(patients)} graded patients predicted by all "
                          f"{len(matched)} models",
            "models": {name: {"predictions": str(path), "n_predictions": len(frame),
                              "n_matched": len(ids[name])}
                       for name, (frame, path) in frames.items()}}
    return patients, p, flow


def patient_spreads(frame: pd.DataFrame, patients: list[Patient]) -> np.ndarray | None:
    """A predictions file's p_high_sd for `patients` (NaN where empty); None without it."""
    if predictions_format.SPREAD not in frame:
        return None
    spread = pd.to_numeric(frame.set_index("patient_id")[predictions_format.SPREAD],
                           errors="coerce")
    return spread.reindex([pt.patient_id for pt in patients]).to_numpy(float)


def read_test_cohort(args) -> tuple[Cohort, dict[str, Path] | None]:
    """The test cohort: --manifest, or the sites of --pooled (then also site -> manifest)."""
    if (args.manifest is None) == (not args.pooled):
        raise SarcogradeError("give the test cohort as --manifest or as --pooled SITE=MANIFEST "
                              "(repeated), not both")
    if args.pooled:
        if args.baseline_predictions is not None:
            raise SarcogradeError("--baseline-predictions writes one site's predictions: "
                                  "evaluate each site without --pooled")
        return pooled_cohort(args.pooled, args.target)
    return read_manifest(args.manifest, args.target), None


def _training_cohort(args, test_cohort: Cohort, models: dict[str, str]
                     ) -> tuple[Cohort | None, str | None]:
    """--train-manifest's cohort and the sequence of the tumour volume, both checked; no
    sequence where neither cohort names images and masks and none is asked for (then the
    baselines that need the volume say so)."""
    if args.train_manifest is None:
        return None, None
    train_cohort = read_manifest(args.train_manifest, args.target)
    sequence = None
    if args.sequence is not None or test_cohort.sequences or train_cohort.sequences:
        sequence = test_cohort.require_sequence(args.sequence)
        train_cohort.require_sequence(sequence)
    for name in kinds.BASELINES:
        if name in models:
            raise SarcogradeError(f"model {name} given as a predictions file and fitted by "
                                  "--train-manifest: give one of them")
    return train_cohort, sequence


def _warn_left_out(flow: dict) -> None:
    for entry in flow["excluded"]:
        if "missing_from" in entry:
            warn(f"{entry['patient_id']} left out of the comparison: not predicted by "
                 f"{', '.join(entry['missing_from'])}")
    for reason in ("not in manifest", "not predicted", "grade unknown"):
        ids = [e["patient_id"] for e in flow["excluded"] if e["reason"] == reason]
        if ids:
            warn(f"{len(ids)} patient(s) left out, {reason}: {', '.join(ids[:8])}"
                 + (" ..." if len(ids) > 8 else ""))


def read_inputs(args) -> Inputs:
    """Read every input named by the arguments and match the patients; one-line errors."""
    unnamed = kinds.name(kinds.DL, args.sequence) if args.sequence else kinds.UNNAMED_DL
    paths = prediction_inputs(args, unnamed)
    single = len(paths) == 1 and args.predictions is not None
    test_cohort, sites = read_test_cohort(args)
    frames, sources = {}, {}
    for name, path in paths.items():
        frame, sources[name], shown = read_model_predictions(path, sites and list(sites))
        frames[name] = (frame, shown)
        info(f"predictions of {name}: {sources[name]}, {len(frame)} patients, from {shown}")
    reference = next(iter(paths))
    cohort = "out-of-fold CV" if "label" in frames[reference][0].columns else "test cohort"
    if sites is not None:
        cohort = f"pooled {' + '.join(sites)}"
    train_cohort, sequence = _training_cohort(args, test_cohort, paths)

    patients, probabilities, flow = match_models(frames, test_cohort)
    _warn_left_out(flow)
    if not patients:
        raise SarcogradeError("no patient is both predicted and graded in the manifest "
                              "(patients are matched by patient_id)"
                              + ("" if single else " by every model"),
                              path=frames[reference][1])
    if "comparison" in flow:
        info(f"models compared on {flow['comparison']}")
    return Inputs(paths=paths, single=single, sources=sources,
                  shown={name: shown for name, (_, shown) in frames.items()},
                  test_cohort=test_cohort, sites=sites, train_cohort=train_cohort,
                  sequence=sequence, cohort=cohort, patients=patients,
                  probabilities=probabilities, flow=flow, outcome=outcome(args.target),
                  spreads={name: patient_spreads(frame, patients)
                           for name, (frame, _) in frames.items()})


def record_inputs(args, inputs: Inputs) -> dict[str, Path]:
    """The files run.json records the hashes of, by role."""
    sites = inputs.sites
    if sites is None:
        record = {"manifest": args.manifest}
        files = {name: {None: Path(path)} for name, path in inputs.paths.items()}
    else:
        record = {f"manifest/{site}": path for site, path in sites.items()}
        files = {name: {site: Path(path.replace("{site}", site)) for site in sites}
                 for name, path in inputs.paths.items()}
    for name, by_site in files.items():
        for site, path in by_site.items():
            key = "predictions" if len(files) == 1 else f"predictions/{name}"
            record[key if site is None else f"{key}/{site}"] = path
    if args.train_manifest is not None:
        record["train_manifest"] = args.train_manifest
    if args.run is not None:
        for name in (run_format.CV_PREDICTIONS, run_format.FOLDS):
            if (args.run / name).is_file():
                record[f"run/{name}"] = args.run / name
    if args.model is not None:
        from ..formats.package import package_file

        record["model"] = package_file(args.model)
    return record
