"""A study's folder layout and its steps, in pipeline order (docs/study.md).

Each step is one `sarcograde` command into its own subfolder (or a small file the study derives
itself), with the files it reads and leaves, so that the runner can tell what is finished.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from .. import model_kinds as kinds
from ..cohort import is_missing, read_table
from ..formats.cache import INDEX
from ..formats.evaluation import METRICS
from ..formats.package import package_file
from ..model_kinds import POOLED
from ..formats.fusion import FUSION_MODEL
from ..formats.predictions import ATTENTION
from ..formats.qa import QA
from ..formats.radiomics import FEATURES, MODELS as RADIOMICS_MODELS
from ..formats.report import REPORT
from ..formats.run import CV_PREDICTIONS, FOLDS
from ..formats.study import STUDY
from .runner import Step
from .spec import RADIOMICS, Study
from .target import target_manifest

STAGES = ("check", "preprocess", "train", "predict", "evaluate", "explain", "report")


@dataclass(frozen=True)
class Layout:
    out: Path

    @property
    def state(self) -> Path:
        return self.out / STUDY

    @property
    def config(self) -> Path:
        return self.out / "config.yaml"

    @property
    def radiomics_config(self) -> Path:
        return self.out / "radiomics.yaml"

    def derived_manifest(self, cohort: str) -> Path:
        return self.out / "manifests" / f"{cohort}.csv"

    def check(self, cohort: str) -> Path:
        return self.out / "check" / cohort

    def cache(self, cohort: str, sequence: str) -> Path:
        return self.out / "preprocess" / cohort / sequence

    def run(self, sequence: str) -> Path:
        return self.out / "train" / sequence

    def features(self, cohort: str, sequence: str) -> Path:
        return self.out / "radiomics" / cohort / sequence / FEATURES

    def radiomics_run(self, sequence: str) -> Path:
        return self.out / "train" / kinds.name(kinds.RADIOMICS, sequence)

    @property
    def fusion(self) -> Path:
        return self.out / "train" / "fusion"

    def predict(self, site: str) -> Path:
        return self.out / "predict" / site

    def predictions(self, site: str, model: str) -> Path:
        """A model's predictions of a site (`site` "{site}": the template evaluate --pooled
        fills in)."""
        return self.predict(site) / kinds.prediction_file(model)

    def evaluate(self, site: str) -> Path:
        return self.out / "evaluate" / site

    def explain(self, site: str, sequence: str) -> Path:
        return self.out / "explain" / site / sequence

    @property
    def report(self) -> Path:
        return self.out / REPORT


def evaluated_sites(study: Study) -> list[str]:
    """Every test site, then `pooled` where there are several."""
    return list(study.test) + ([POOLED] if len(study.test) > 1 else [])


def _manifest_files(manifest: Path, sequences: list[str]) -> list[Path]:
    """The manifest and every image and mask it names for these sequences (what check and
    preprocess read), so that a changed image reruns them."""
    frame = read_table(manifest)
    files = [manifest]
    for seq in sequences:
        for column in (f"image_{seq}", f"mask_{seq}"):
            if column in frame.columns:
                files += [manifest.parent / str(v).strip() for v in frame[column]
                          if not is_missing(v)]
    return files


def _run_files(run: Path) -> list[Path]:
    return [run / FOLDS, run / CV_PREDICTIONS]


def build_steps(study: Study, layout: Layout, *, jobs: int = 1, until: str = STAGES[-1],
                executor: tuple[str, ...] = ()) -> list[Step]:
    """The study's steps in order; `executor` (e.g. `--executor ray --ray-address A`) is passed
    to the stages that take it (preprocess, train, predict, explain)."""
    seq0 = study.sequences[0]
    config = ["--preset", study.preset] + (["--config", str(layout.config)]
                                           if study.config_overrides else [])
    config_files = [layout.config] if study.config_overrides else []
    radiomics_files = [layout.radiomics_config] if study.overrides.get(RADIOMICS) else []
    radiomics_config = [a for f in radiomics_files for a in ("--config", str(f))]
    evaluate_options = study.overrides.get("evaluate", {})
    bootstrap = str(evaluate_options.get("bootstrap", 1000))
    steps: list[Step] = []

    manifests = dict(study.cohorts)
    if study.target != "grade":
        for cohort, manifest in study.cohorts.items():
            manifests[cohort] = layout.derived_manifest(cohort)
            steps.append(Step(f"manifest/{cohort}", "check", [manifest], [manifests[cohort]],
                              action=functools.partial(target_manifest, manifest,
                                                       study.target, manifests[cohort]),
                              params={"target": study.target}))

    for cohort, manifest in manifests.items():
        steps.append(Step(f"check/{cohort}", "check",
                          _manifest_files(study.cohorts[cohort], study.sequences),
                          [layout.check(cohort) / QA],
                          ["check", str(manifest),
                           *[a for seq in study.sequences for a in ("--sequence", seq)],
                           "--out", str(layout.check(cohort))]))
    dl_sequences = study.sequences if kinds.DL in study.models else []
    radiomics_sequences = study.sequences if kinds.RADIOMICS in study.models else []
    # A received package's models: preprocessed with its settings, nothing of them trained here.
    received = study.model is not None
    dl_settings = ["--model", str(study.model)] if received else config
    dl_files = [package_file(study.model)] if received else config_files
    for cohort, manifest in manifests.items():
        for seq in dl_sequences if cohort != "train" or not received else []:
            steps.append(Step(f"preprocess/{cohort}/{seq}", "preprocess",
                              _manifest_files(study.cohorts[cohort], [seq]) + dl_files,
                              [layout.cache(cohort, seq) / INDEX],
                              ["preprocess", str(manifest), "--sequence", seq,
                               "--out", str(layout.cache(cohort, seq)), *dl_settings,
                               "--jobs", str(jobs), *executor]))
        # radiomics features are extracted from the manifest's images (with their own settings,
        # configs/radiomics.yaml and overrides.radiomics), in the preprocess stage
        for seq in radiomics_sequences:
            steps.append(Step(f"radiomics/{cohort}/{seq}", "preprocess",
                              _manifest_files(study.cohorts[cohort], [seq]) + radiomics_files,
                              [layout.features(cohort, seq)],
                              ["radiomics", "extract", str(manifest), "--sequence", seq,
                               "--out", str(layout.features(cohort, seq).parent),
                               *radiomics_config, "--jobs", str(jobs)]))
    for seq in dl_sequences if not received else []:
        steps.append(Step(f"train/{seq}", "train",
                          [layout.cache("train", seq) / INDEX, *config_files],
                          _run_files(layout.run(seq)),
                          ["train", str(layout.cache("train", seq)), "--out", str(layout.run(seq)),
                           *config, "--seed", str(study.seed), *executor]))
    # the radiomics model's CV: the DL runs' preset, folds, repeats and seed (`radiomics fit`
    # draws its splits with splits.make_splits as train does; it does not read a folds.json)
    cv = {k: study.overrides.get("train", {}).get(k) for k in ("folds", "repeats")}
    cv_flags = [a for k, v in cv.items() if v is not None for a in (f"--{k}", str(v))]
    for seq in radiomics_sequences:
        steps.append(Step(f"train/{kinds.name(kinds.RADIOMICS, seq)}", "train",
                          [layout.features("train", seq), manifests["train"], *radiomics_files],
                          [*_run_files(layout.radiomics_run(seq)),
                           layout.radiomics_run(seq) / RADIOMICS_MODELS],
                          ["radiomics", "fit", str(layout.features("train", seq)),
                           "--manifest", str(manifests["train"]),
                           "--out", str(layout.radiomics_run(seq)), "--preset", study.preset,
                           *cv_flags, "--seed", str(study.seed), *radiomics_config]))
    fused = kinds.FUSION in study.models
    if fused and not received:
        steps.append(Step("train/fusion", "train",
                          [f for seq in study.sequences for f in _run_files(layout.run(seq))],
                          [layout.fusion / FUSION_MODEL],
                          ["fusion", "fit", *[a for seq in study.sequences
                                              for a in ("--run", f"{seq}={layout.run(seq)}")],
                           "--out", str(layout.fusion)]))

    baselines = [m for m in kinds.BASELINES if m in study.models]
    dl_kind, fusion_kind = ((kinds.PACKAGE, kinds.PACKAGE_FUSION) if received
                            else (kinds.DL, kinds.FUSION))

    def dl_models(seq: str) -> tuple[list[Path], str]:
        """The files of a sequence's DL models and the argument naming them: the study's run,
        or the received package."""
        if received:
            return dl_files, str(study.model)
        return _run_files(layout.run(seq)), str(layout.run(seq))

    fusion_file = package_file(study.model) if received else layout.fusion / FUSION_MODEL
    for site in study.test:
        for seq in dl_sequences:
            model = kinds.name(dl_kind, seq)
            files, models = dl_models(seq)
            steps.append(Step(f"predict/{site}/{model}", "predict",
                              [*files, layout.cache(site, seq) / INDEX],
                              [layout.predictions(site, model)],
                              ["predict", models, str(layout.cache(site, seq)),
                               "--out", str(layout.predictions(site, model)), *executor]))
        if fused:
            model = kinds.name(fusion_kind)
            inputs = {seq: layout.predictions(site, kinds.name(dl_kind, seq))
                      for seq in study.sequences}
            steps.append(Step(f"predict/{site}/{model}", "predict",
                              [fusion_file, *inputs.values()],
                              [layout.predictions(site, model)],
                              ["fusion", "apply", str(study.model if received else fusion_file),
                               *[a for seq, file in inputs.items()
                                 for a in ("--sequence", f"{seq}={file}")],
                               "--out", str(layout.predictions(site, model))]))
        for seq in radiomics_sequences:
            run, model = layout.radiomics_run(seq), kinds.name(kinds.RADIOMICS, seq)
            steps.append(Step(f"predict/{site}/{model}", "predict",
                              [run / RADIOMICS_MODELS, layout.features(site, seq)],
                              [layout.predictions(site, model)],
                              ["radiomics", "predict", str(run), str(layout.features(site, seq)),
                               "--out", str(layout.predictions(site, model))]))

    # DL and fusion models are read from their files; the baselines are fitted by evaluate on
    # the training cohort (with Table 1), which also writes their predictions of each site.
    files_of = [m for m in study.model_names() if m not in baselines]
    # the first model's run: its Youden threshold and the baselines' folds (same formats); a
    # received package brings its own threshold, and the baselines draw their own folds
    if received:
        reference, reference_files = ["--model", str(study.model)], dl_files
    else:
        run = layout.run(seq0) if kinds.DL in study.models else layout.radiomics_run(seq0)
        reference, reference_files = ["--run", str(run)], _run_files(run)
    common = [*reference, "--bootstrap", bootstrap, "--seed", str(study.seed),
              "--sequence", seq0]
    # evaluate reads another target from its own column, and keeps the real grade for Table 1:
    # it takes the study's manifests, not the derived ones that code the target as a grade
    evaluated = study.cohorts
    if study.target != "grade":
        common += ["--target", study.target]
    common += [a for key in ("coverage", "recalibrate") if key in evaluate_options
               for a in (f"--{key}", str(evaluate_options[key]))]
    train_manifest = [evaluated["train"]] if "train" in evaluated else []
    if baselines:
        common += ["--train-manifest", str(evaluated["train"])]
    for site in study.test:
        files = [layout.predictions(site, m) for m in files_of]
        written = ["--baseline-predictions", str(layout.predict(site))] if baselines else []
        steps.append(Step(f"evaluate/{site}", "evaluate",
                          [*files, evaluated[site], *train_manifest, *reference_files],
                          [layout.evaluate(site) / METRICS,
                           *[layout.predictions(site, m) for m in baselines]],
                          ["evaluate", *[a for m, f in zip(files_of, files)
                                         for a in ("--predictions", f"{m}={f}")],
                           "--manifest", str(evaluated[site]), *written,
                           "--out", str(layout.evaluate(site)), *common]))
    if len(study.test) > 1:
        # evaluate reads each model's file per site from the {site} template
        templates = {m: layout.predictions("{site}", m) for m in files_of}
        steps.append(Step(f"evaluate/{POOLED}", "evaluate",
                          [*[layout.predictions(s, m) for s in study.test for m in files_of],
                           *[evaluated[s] for s in study.test], *train_manifest,
                           *reference_files],
                          [layout.evaluate(POOLED) / METRICS],
                          ["evaluate", *[a for m, template in templates.items()
                                         for a in ("--predictions", f"{m}={template}")],
                           *[a for s in study.test for a in ("--pooled", f"{s}={evaluated[s]}")],
                           "--out", str(layout.evaluate(POOLED)), *common]))
    if kinds.DL in study.models:
        for site in study.test:
            for seq in study.sequences:
                files, models = dl_models(seq)
                steps.append(Step(f"explain/{site}/{seq}", "explain",
                                  [*files, layout.cache(site, seq) / INDEX],
                                  [layout.explain(site, seq) / ATTENTION],
                                  ["explain", models, str(layout.cache(site, seq)),
                                   "--out", str(layout.explain(site, seq)), "--slice-logits",
                                   str(layout.predictions(site, kinds.name(dl_kind, seq))),
                                   *(["--target", study.target] if study.target != "grade"
                                     else []),
                                   *executor]))
    explained = [layout.explain(site, seq) / ATTENTION for site in study.test
                 for seq in study.sequences] if kinds.DL in study.models else []
    steps.append(Step("report", "report",
                      [layout.evaluate(s) / METRICS for s in evaluated_sites(study)]
                      + explained,
                      [layout.report],
                      ["report", "--study", str(layout.out), "--out", str(layout.report),
                       "--title", f"sarcograde study: {study.path.stem}"]))
    last = STAGES.index(until)
    return [s for s in steps if STAGES.index(s.stage) <= last]

