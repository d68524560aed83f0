"""Cross-validated training: splits, class weights, learning, early stopping, resume, CLI, what a
run shows while it trains, the paper preset's epoch time on a CPU. Folds trained side by side:
test_train_stacked.py."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score
from sklearn.utils.class_weight import compute_class_weight

from sarcograde import model as model_lib
from sarcograde import parallel
from sarcograde import train as train_mod
from sarcograde.cli import main
from sarcograde.config import load_config
from sarcograde.data import load_slices
from sarcograde.errors import SarcogradeError
from sarcograde.formats.run import HISTORY_COLUMNS
from sarcograde.train import stage as train_stage
from sarcograde.splits import make_splits
from sarcograde.train import fold as train_fold
from fakes import cohort, graded_cache

TINY = {"architecture": "densenet", "init_features": 8, "growth_rate": 8, "block_config": [2, 2],
        "pretrained": "none"}


@pytest.fixture
def folds_in_this_process(monkeypatch):
    """One CPU for the local executor: the folds train in the test's own process, where its
    monkeypatches reach them (folds in worker processes: test_executors.py)."""
    monkeypatch.setattr(parallel, "available_cpus", lambda: 1)


pytestmark = pytest.mark.usefixtures("one_torch_thread", "folds_in_this_process")


def config(**train) -> dict:
    cfg = load_config("quick")
    cfg["model"] = dict(TINY)
    # A checkpoint after every epoch, which the resume tests interrupt.
    cfg["train"].update({"folds": 2, "repeats": 1, "batch_size": 16, "max_epochs": 3,
                         "patience": 10, "checkpoint_every_s": 0, **train})
    return cfg


# A fold's finished epoch as a line of a log (stderr not a terminal).
EPOCH_LINE = (r"^{fold} epoch {epoch}/{of}: train loss \d+\.\d{{3}}, val loss \d+\.\d{{3}}, "
              r"val AUC (\d\.\d\d|nan) \(\d+ s\)$")


def read_state(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


# --- splits -------------------------------------------------------------------------------

def test_fifteen_splits_never_leak_and_validate_everyone_once_per_repeat():
    ids = [f"P{i:02d}" for i in range(43)]
    labels = np.array([0] * 12 + [1] * 31)
    splits, adaptation = make_splits(ids, labels, folds=5, repeats=3, seed=7)
    assert adaptation is None and len(splits) == 15
    assert [s.name for s in splits] == [f"fold_{i:02d}" for i in range(15)]
    low = {p for p, lab in zip(ids, labels) if lab == 0}
    for repeat in range(3):
        in_repeat = [s for s in splits if s.repeat == repeat]
        validated = [p for s in in_repeat for p in s.val]
        assert sorted(validated) == ids  # every patient exactly once per repeat
        for s in in_repeat:
            assert not set(s.train) & set(s.val) and sorted(s.train + s.val) == ids
            assert len(set(s.val) & low) in (2, 3)  # 12 low-grade over 5 folds
            assert len(s.val) in (8, 9)
    assert splits[0].val != splits[5].val  # repeats shuffle differently
    again, _ = make_splits(ids, labels, folds=5, repeats=3, seed=7)
    assert again == splits


def test_slices_of_a_patient_stay_on_one_side(tmp_path):
    slices = load_slices(graded_cache(tmp_path, cohort(6, 9)))
    splits, _ = make_splits(slices.patient_ids, slices.labels, folds=3, repeats=2, seed=0)
    images = torch.from_numpy(slices.images)
    labels = torch.from_numpy(slices.labels[slices.patient_index])
    for split in splits:
        data = train_mod.fold_data(slices, split, images, labels)
        train_owners = {slices.patient_ids[i] for i in slices.patient_index[data.train.numpy()]}
        val_owners = [slices.patient_ids[i] for i in slices.patient_index[data.val.numpy()]]
        assert train_owners == set(split.train) and set(val_owners) == set(split.val)
        assert len(data.train) + len(data.val) == len(slices.images)
        # val_owner points each validation slice at its own patient
        assert [data.val_patients[i] for i in data.val_owner.numpy()] == val_owners


def test_folds_adapt_to_two_low_grade_patients():
    ids = [f"P{i}" for i in range(12)]
    splits, adaptation = make_splits(ids, np.array([0, 0] + [1] * 10), folds=5, repeats=3, seed=0)
    assert len(splits) == 6 and {s.fold for s in splits} == {0, 1}
    assert "only 2 low-grade patients" in adaptation and "2 folds" in adaptation
    for s in splits:
        assert sum(p in ("P0", "P1") for p in s.val) == 1
    with pytest.raises(SarcogradeError, match="at least 2 patients of each grade"):
        make_splits(ids, np.array([0] + [1] * 11), folds=5, repeats=1, seed=0)


def test_class_weights_are_inverse_slice_frequency():
    labels = np.random.default_rng(0).choice([0, 1], size=97, p=[0.2, 0.8])
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    np.testing.assert_allclose(train_mod.class_weights(labels), expected)
    with pytest.raises(SarcogradeError, match="one grade only"):
        train_mod.class_weights(np.ones(5, dtype=int))


# --- training ------------------------------------------------------------------------------

def test_learns_the_planted_grade_signal(tmp_path):
    cache = graded_cache(tmp_path / "cache", cohort(12, 12), seed=3)
    run = train_mod.train_cv(cache, tmp_path / "run", config(folds=3, max_epochs=5), seed=0,
                             device="cpu")
    cv = pd.read_csv(run / "cv_predictions.csv", dtype={"patient_id": str})
    assert sorted(cv["patient_id"]) == sorted(cohort(12, 12))
    assert roc_auc_score(cv["label"], cv["p_high"]) > 0.8
    slices = load_slices(cache)
    for k in range(3):
        fold = run / f"fold_{k:02d}"
        history = pd.read_csv(fold / "history.csv")
        assert list(history.columns) == list(HISTORY_COLUMNS)
        assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
        assert (fold / "learning_curve.png").stat().st_size > 0
        assert not (fold / train_mod.CHECKPOINT).exists()
        # model.pt predicts the out-of-fold patients as recorded: mean logits, then softmax
        net, info = model_lib.load_fold_model(fold / "model.pt")
        assert info["best_epoch"] == history["val_loss"].idxmin() + 1
        for row in cv[cv["fold"] == k].itertuples():
            own = slices.images[slices.slices_of(np.array([slices.patient_ids.index(row.patient_id)]))]
            with torch.no_grad():
                logits = net(model_lib.prepare_input(own, info["input"])).mean(0)
            assert torch.softmax(logits, 0)[1].item() == pytest.approx(row.p_high, abs=1e-5)
    folds = json.loads((run / "folds.json").read_text(encoding="utf-8"))
    assert folds["folds"] == 3 and folds["adaptation"] is None and len(folds["splits"]) == 3
    assert json.loads((run / "run.json").read_text(encoding="utf-8"))["status"] == "finished"


def test_early_stopping_keeps_the_best_epoch(tmp_path, monkeypatch):
    cache = graded_cache(tmp_path / "cache", cohort(4, 4))
    scripted = iter([1.0, 0.6, 0.8, 0.9, 0.7, 0.5])  # best at epoch 2; patience 3 stops at 5
    snapshots = []
    real_evaluate = train_fold.evaluate

    def controlled(model, *args, **kwargs):
        result = real_evaluate(model, *args, **kwargs)
        loss = next(scripted, None)
        if loss is not None:  # during training; the final evaluation keeps its real loss
            snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
            result.loss = loss
        return result

    monkeypatch.setattr(train_fold, "evaluate", controlled)
    run = train_mod.train_cv(cache, tmp_path / "run", config(max_epochs=20, patience=3),
                             seed=0, device="cpu", only_fold=0)
    history = pd.read_csv(run / "fold_00" / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert history["val_loss"].tolist() == [1.0, 0.6, 0.8, 0.9, 0.7]
    saved = read_state(run / "fold_00" / "model.pt")
    assert torch.load(run / "fold_00" / "model.pt", weights_only=True)["best_epoch"] == 2
    assert all(torch.equal(saved[k], snapshots[1][k]) for k in saved)
    assert not all(torch.equal(saved[k], snapshots[4][k]) for k in saved)
    assert not (run / "fold_01").exists()  # --fold 0 trains one split only


def interrupt_fold_01_after(monkeypatch, epochs: int):
    """Training stops (as at Ctrl-C) once fold_01's checkpoint after `epochs` epochs is written;
    returns the real checkpoint writer, to put back."""
    real_save = train_fold.save_checkpoint

    def interrupted(path, state):
        real_save(path, state)
        if path.parent.name == "fold_01" and len(state["history"]) == epochs:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_fold, "save_checkpoint", interrupted)
    return real_save


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    cache = graded_cache(tmp_path / "cache", cohort(5, 5))
    cfg = config(max_epochs=4, augment={"elastic_p": 0.5})
    full = train_mod.train_cv(cache, tmp_path / "full", cfg, seed=1, device="cpu")

    real_save = interrupt_fold_01_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train_cv(cache, tmp_path / "resumed", cfg, seed=1, device="cpu")
    assert (tmp_path / "resumed" / "fold_01" / train_mod.CHECKPOINT).is_file()
    assert not (tmp_path / "resumed" / "fold_01" / "model.pt").exists()
    first_fold = (tmp_path / "resumed" / "fold_00" / "model.pt").stat().st_mtime_ns
    monkeypatch.setattr(train_fold, "save_checkpoint", real_save)
    resumed = train_mod.train_cv(cache, tmp_path / "resumed", cfg, seed=1, device="cpu")

    assert (resumed / "fold_00" / "model.pt").stat().st_mtime_ns == first_fold  # not retrained
    for fold in ("fold_00", "fold_01"):
        a, b = read_state(full / fold / "model.pt"), read_state(resumed / fold / "model.pt")
        assert all(torch.equal(a[k], b[k]) for k in a)
        ha, hb = (pd.read_csv(r / fold / "history.csv") for r in (full, resumed))
        pd.testing.assert_frame_equal(ha.drop(columns="seconds"), hb.drop(columns="seconds"))
    pd.testing.assert_frame_equal(pd.read_csv(full / "cv_predictions.csv"),
                                  pd.read_csv(resumed / "cv_predictions.csv"))

    other = config(max_epochs=4, augment={"elastic_p": 0.5}, learning_rate=3e-3)
    with pytest.raises(SarcogradeError, match="config.json: this run folder was trained with "
                                              "another configuration"):
        train_mod.train_cv(cache, resumed, other, seed=1, device="cpu")


def test_bf16_is_the_old_spelling_of_precision_bf16(tmp_path, monkeypatch, capsys):
    configs = []
    monkeypatch.setattr(train_stage, "train_cv",
                        lambda cache, out, config, **kwargs: configs.append(config))
    base = ["train", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "--preset", "quick"]
    assert main([*base, "--precision", "bf16"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*base, "--bf16"]) == 0
    assert capsys.readouterr().err == (
        "sarcograde train: note: --bf16 is deprecated; use --precision bf16 (the old spelling "
        "goes in the next version)\n")
    assert configs[0] == configs[1] and configs[0]["train"]["precision"] == "bf16"
    with pytest.raises(SystemExit):
        main([*base, "--bf16", "--precision", "fp32"])
    assert "argument --precision: not allowed with argument --bf16" in capsys.readouterr().err


def test_cli_trains_one_fold_with_adapted_splits_and_unknown_grades(tmp_path, capsys):
    grades = {**cohort(2, 6), "U0": None}
    cache = graded_cache(tmp_path / "cache", grades)
    user = tmp_path / "tiny.yaml"
    user.write_text(yaml.safe_dump({"model": TINY, "train": {"max_epochs": 1, "batch_size": 8}}))
    code = main(["train", str(cache), "--out", str(tmp_path / "run"), "--preset", "quick",
                 "--config", str(user), "--fold", "1", "--device", "cpu", "--seed", "4"])
    assert code == 0
    err = capsys.readouterr().err
    assert "only 2 low-grade patients" in err and "U0" in err
    assert re.search(EPOCH_LINE.format(fold="fold_01", epoch=1, of=1), err, re.M)
    assert "paper preset on a CPU" not in err  # the quick preset says nothing of its speed
    folds = json.loads((tmp_path / "run" / "folds.json").read_text(encoding="utf-8"))
    assert folds["folds"] == 2 and folds["folds_requested"] == 5 and folds["seed"] == 4
    assert "only 2 low-grade" in folds["adaptation"]
    assert all("U0" not in s["train"] + s["val"] for s in folds["splits"])
    assert sorted(p.name for p in (tmp_path / "run").glob("fold_*")) == ["fold_01"]

    grades["L01"] = 3  # one low-grade patient left: no stratified split is possible
    bad = graded_cache(tmp_path / "bad", grades)
    code = main(["train", str(bad), "--out", str(tmp_path / "bad_run"), "--preset", "quick",
                 "--config", str(user), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "sarcograde train: error: stratified cross-validation needs at least 2 patients of each "
        "grade; the cohort has 1 low-grade and 7 high-grade patients with a known grade")
    assert not (tmp_path / "bad_run").exists()


def test_a_fold_trains_with_threads_per_fold_and_a_resume_with_another_count_is_refused(
        tmp_path, capsys, monkeypatch):
    cache = graded_cache(tmp_path / "cache", cohort(4, 4))
    user = tmp_path / "tiny.yaml"
    user.write_text(yaml.safe_dump({"model": TINY, "train": {"max_epochs": 1, "batch_size": 8}}))
    run = tmp_path / "run"
    common = ["train", str(cache), "--out", str(run), "--preset", "quick", "--config", str(user),
              "--device", "cpu", "--fold", "0"]
    threads = []
    real_epoch = train_fold.train_epoch
    monkeypatch.setattr(train_fold, "train_epoch", lambda *a, **k: threads.append(
        torch.get_num_threads()) or real_epoch(*a, **k))
    assert main([*common, "--threads-per-fold", "2"]) == 0
    assert threads == [2] and torch.get_num_threads() == 1  # the module's one thread, restored
    for name in ("config.json", "run.json"):
        record = json.loads((run / name).read_text(encoding="utf-8"))
        assert record.get("config", record)["train"]["threads_per_fold"] == 2
    capsys.readouterr()
    for flags in ([], ["--threads", "1"]):  # the preset's 1; the old flag, with a note
        assert main([*common, *flags]) == 1
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == (
            f"sarcograde train: error: {run / 'config.json'}: this run folder was trained with "
            "another configuration, seed or cache (train.threads_per_fold 2 there, 1 here); use "
            "a new --out folder (or delete this one to retrain)")
    assert err.count("--threads is deprecated; use --threads-per-fold") == 1
    assert main([*common, "--threads", "2"]) == 0
    assert "fold_00: finished earlier, not retrained" in capsys.readouterr().err


# --- what a run shows while it trains --------------------------------------------------------

def test_history_is_rewritten_after_every_epoch_and_each_epoch_is_a_line(tmp_path, monkeypatch,
                                                                         capsys):
    cache = graded_cache(tmp_path / "cache", cohort(4, 4))
    fold = tmp_path / "run" / "fold_00"
    rows_seen = []
    real_end_epoch = train_mod.Bars.end_epoch

    def stopped_after_epoch_2(bars, name, row):
        real_end_epoch(bars, name, row)
        rows_seen.append(len(pd.read_csv(fold / "history.csv")))
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod.Bars, "end_epoch", stopped_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):  # no checkpoint yet: history.csv does not wait for one
        train_mod.train_cv(cache, tmp_path / "run", config(max_epochs=4, checkpoint_every_s=3600),
                           seed=0, device="cpu", only_fold=0)
    assert rows_seen == [1, 2]
    history = pd.read_csv(fold / "history.csv")
    assert list(history.columns) == list(HISTORY_COLUMNS) and history["epoch"].tolist() == [1, 2]
    assert not (fold / "model.pt").exists() and not (fold / train_mod.CHECKPOINT).exists()
    lines = [line for line in capsys.readouterr().err.splitlines() if " epoch " in line]
    assert lines == [f"fold_00 epoch {r.epoch}/4: train loss {r.train_loss:.3f}, val loss "
                     f"{r.val_loss:.3f}, val AUC {r.val_auc:.2f} ({r.seconds:.0f} s)"
                     for r in history.itertuples()]
    assert all(re.fullmatch(EPOCH_LINE.format(fold="fold_00", epoch=k + 1, of=4), line)
               for k, line in enumerate(lines))


def test_the_epoch_estimate_reads_as_a_person_would_say_it():
    assert train_mod.epoch_estimate(41, 30, 2310) == (
        "paper preset on a CPU: one step of 30 slices takes 41 s here, so an epoch of this "
        "cache's 2,310 training slices takes about 53 min; the quick preset runs in minutes")
    assert train_mod.epoch_estimate(41, 30, 20_000).endswith(
        "training slices takes about 7.6 h; the quick preset runs in minutes")
    assert train_mod.epoch_estimate(0.43, 30, None) == (
        "paper preset on a CPU: one step of 30 slices takes 0.4 s here, so an epoch takes about "
        "14 s per 1,000 training slices; the quick preset runs in minutes")


def test_the_paper_preset_on_a_cpu_says_first_how_long_an_epoch_takes(tmp_path, capsys):
    # The paper preset with a tiny network, so that the one timed step is quick.
    cache = graded_cache(tmp_path / "cache", cohort(4, 4))
    user = tmp_path / "tiny.yaml"
    user.write_text(yaml.safe_dump({"model": TINY, "train": {"max_epochs": 1, "batch_size": 8}}))
    assert main(["train", str(cache), "--out", str(tmp_path / "run"), "--preset", "paper",
                 "--config", str(user), "--fold", "0", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("paper preset on a CPU")]
    slices = load_slices(cache)
    folds = json.loads((tmp_path / "run" / "folds.json").read_text(encoding="utf-8"))
    train_ids = [slices.patient_ids.index(p) for p in folds["splits"][0]["train"]]
    n_train = len(slices.slices_of(np.array(train_ids)))
    assert len(said) == 1 and re.fullmatch(
        rf"paper preset on a CPU: one step of 8 slices takes [\d.]+ s here, so an epoch of this "
        rf"cache's {n_train:,} training slices takes about [\d.]+ (s|min|h); the quick preset "
        r"runs in minutes", said[0])
    assert err.index(said[0]) < err.index("fold_00 epoch 1/1")  # before training starts


# --- deterministic mode ----------------------------------------------------------------------

def test_deterministic_mode_is_set_for_training_and_restored():
    import torch.utils.deterministic as torch_deterministic

    before = (torch.are_deterministic_algorithms_enabled(),
              torch_deterministic.fill_uninitialized_memory, torch.backends.cudnn.benchmark)
    with train_mod.deterministic():
        assert torch.are_deterministic_algorithms_enabled()
        assert torch_deterministic.fill_uninitialized_memory is False
        assert torch.backends.cudnn.benchmark is False
    assert (torch.are_deterministic_algorithms_enabled(),
            torch_deterministic.fill_uninitialized_memory,
            torch.backends.cudnn.benchmark) == before


def test_a_training_step_reads_no_uninitialised_memory():
    # Deterministic mode may fill every new tensor with NaN; `deterministic()` leaves that off to
    # save the kernels. A step that read memory it had not written would give NaN with the fill
    # and something else without it: both must give the same numbers.
    import torch.utils.deterministic as torch_deterministic

    settings = train_mod.Settings.from_config(config()["train"], torch.device("cpu"))
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1] * 4)
    results = []
    for fill in (True, False):
        torch.manual_seed(0)
        net = model_lib.build_model(TINY)
        optimizer = settings.optimizer(net)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        with train_mod.deterministic():
            torch_deterministic.fill_uninitialized_memory = fill
            losses = [train_mod.train_step(net, optimizer, scaler, x, labels,
                                           torch.tensor([1.0, 2.0]), settings) for _ in range(3)]
        results.append((torch.stack(losses), [p.detach().clone() for p in net.parameters()]))
    (loss_a, params_a), (loss_b, params_b) = results
    assert torch.isfinite(loss_a).all() and torch.equal(loss_a, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))


# --- train.checkpoint_every_s ----------------------------------------------------------------

def test_checkpoint_interval_is_checked():
    cpu = torch.device("cpu")
    for bad in ("often", -1, True, None):
        with pytest.raises(SarcogradeError, match="train.checkpoint_every_s .* is not a number "
                                                  "of seconds >= 0"):
            train_mod.Settings.from_config({**config()["train"], "checkpoint_every_s": bad}, cpu)


def test_checkpoints_are_written_at_most_as_often_as_asked_and_change_no_number(
        tmp_path, monkeypatch):
    cache = graded_cache(tmp_path / "cache", cohort(5, 5))
    written = []
    real_save = train_fold.save_checkpoint
    monkeypatch.setattr(train_fold, "save_checkpoint",
                        lambda path, state: written.append(path.parent.name) or
                        real_save(path, state))
    runs = {}
    for every in (0, 3600):
        written.clear()
        runs[every] = train_mod.train_cv(cache, tmp_path / f"every_{every}", config(
            checkpoint_every_s=every), seed=4, device="cpu")
        epochs = sum(len(pd.read_csv(h)) for h in runs[every].glob("fold_*/history.csv"))
        assert len(written) == (epochs if every == 0 else 0)
    pd.testing.assert_frame_equal(pd.read_csv(runs[3600] / "cv_predictions.csv"),
                                  pd.read_csv(runs[0] / "cv_predictions.csv"))
    assert json.loads((runs[0] / "config.json").read_text())["config_hash"] == \
        json.loads((runs[3600] / "config.json").read_text())["config_hash"]
