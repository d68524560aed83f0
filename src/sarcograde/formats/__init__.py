"""One reader and one writer per artifact of docs/artifacts.md, the contract between the stages.

Stages meet only through files: each file has exactly one reader here, which checks what it reads
and stops with a one-line `SarcogradeError` naming the patient, the file and the problem (and, for
a damaged artifact of an earlier stage, the stage to rerun), and exactly one writer, which writes
atomically. As nnU-Net's `PlansManager` reads `plans.json` for every stage, a stage never parses
another stage's file itself. Each file's name is a constant (or, for a file per patient, a path
function) of its module, and stages, the study plan and the run records' inputs use it instead
of spelling the name. One module per artifact family:

- `synth`: synth's `OUT/manifest.csv`, `truth.csv`, `synth.json`, `preview.png`;
- `qa`: check's `qa.csv`;
- `cache`: `CACHE/config.json`, `CACHE/index.csv`, `CACHE/patients/<patient_id>.npz`,
  `CACHE/preview/<patient_id>.png`;
- `run`: `RUN/config.json`, `folds.json`, `fold_XX/model.pt`, `checkpoint.pt`, `history.csv`,
  `val_predictions.csv`, `learning_curve.png`, `cv_predictions.csv`;
- `predictions`: `predictions.csv`, `<stem>.slices/<patient_id>.npz`, explain's `maps/*.npz`,
  `<patient_id>.png`, `attention.csv` and `attention_slices.csv`;
- `radiomics`: `radiomics extract`'s `features.csv`, `config.json` and `patients/*.json`,
  `radiomics fit`'s `RUN/models.json` (the fold models as plain numbers) and
  `selected_features.csv`;
- `fusion`: `fusion fit`'s `model.json`;
- `package`: `export`'s model package (`model.json`, `MODEL_CARD.md`, the fold weights as
  safetensors), as a folder or a zip;
- `grade`: grade's `DIR/<id>/grade.json`, `case-report.html` and a batch's `grades.csv`;
- `evaluation`: evaluate's outputs (metrics.json of one model or several, patient_flow.json,
  survival.json, Table 1, CSVs, figures) as the report and the demo read them;
- `report`: report's `report.html`;
- `study`: the study folder's study.json;
- `records`: the naming rule of the run records (`run.json`, `<stem>.run.json`).
"""
