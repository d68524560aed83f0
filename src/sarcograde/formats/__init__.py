"""One reader and one writer per artifact of docs/artifacts.md, the contract between the stages.

Stages meet only through files: each file has exactly one reader here, which checks what it reads
and stops with a one-line `SarcogradeError` naming the patient, the file and the problem (and, for
a damaged artifact of an earlier stage, the stage to rerun), and exactly one writer, which writes
atomically. As nnU-Net's `PlansManager` reads `plans.json` for every stage, a stage never parses
another stage's file itself. One module per artifact family:

- `cache`: `CACHE/config.json`, `CACHE/index.csv`, `CACHE/patients/<patient_id>.npz`;
- `run`: `RUN/config.json`, `folds.json`, `fold_XX/model.pt`, `checkpoint.pt`, `history.csv`,
  `val_predictions.csv`, `cv_predictions.csv`;
- `predictions`: `predictions.csv`, `<stem>.slices/<patient_id>.npz`, explain's `maps/*.npz`
  and `attention.csv`;
- `evaluation`: evaluate's outputs (metrics.json of one model or several, patient_flow.json,
  survival.json, Table 1, CSVs, figures) as the report and the demo read them;
- `radiomics`: `radiomics fit`'s `RUN/models.json` (the fold models as plain numbers);
- `study`: the study folder's study.json;
- `records`: the naming rule of the run records (`run.json`, `<stem>.run.json`).
"""
