"""Folds trained side by side (`train.concurrent_folds`, `train.cuda_graphs`): each fold learns
what it learns alone, the stacked step's input, resume, the setting and its GPU memory sizing."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from sarcograde import model as model_lib
from sarcograde import train as train_mod
from sarcograde.cli import main
from sarcograde.config import PRESETS, load_config
from sarcograde.data import SliceSet
from sarcograde.errors import SarcogradeError
from sarcograde.splits import Split
from sarcograde.train import fold as train_fold
from sarcograde.train.stacked_densenet import StackedDenseNet
from fakes import cohort, graded_cache
from test_train import EPOCH_LINE, TINY, config, read_state
from test_train import folds_in_this_process  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread", "folds_in_this_process")


# --- folds trained side by side (train.concurrent_folds) -----------------------------------

def stacked_and_alone(cache, tmp_path, seed, **train):
    return [train_mod.train_cv(cache, tmp_path / f"run_{k}", config(
        folds=3, concurrent_folds=k, **train), seed=seed, device="cpu") for k in (1, 3)]


# The stated tolerances: fp32 on the CPU, grouped and single convolutions round differently and
# training amplifies it (one epoch agrees to 1e-5, six to 1e-3); bf16 autocast with channels_last
# (the GPU's settings, here on the CPU) rounds every layer to 8 bits of mantissa.
PRECISIONS = {"fp32": ({}, 1e-5, 1e-3, 5e-3),
              "bf16": ({"precision": "bf16", "channels_last": True}, 1e-3, 3e-2, 2e-2)}


@pytest.mark.parametrize("precision", PRECISIONS)
def test_folds_trained_side_by_side_learn_as_each_fold_alone(tmp_path, precision):
    settings, first_epoch, losses, p_high = PRECISIONS[precision]
    cache = graded_cache(tmp_path / "cache", cohort(6, 6))
    # Patience 1: fold_00 stops after 2 epochs and leaves the stack, the others go on.
    alone, stacked = stacked_and_alone(cache, tmp_path, seed=2, max_epochs=6, patience=1,
                                       **settings)
    lengths = []
    for fold in ("fold_00", "fold_01", "fold_02"):
        a, b = (pd.read_csv(run / fold / "history.csv") for run in (alone, stacked))
        assert a["epoch"].tolist() == b["epoch"].tolist()  # the same early stopping
        lengths.append(len(a))
        assert abs(a["train_loss"][0] - b["train_loss"][0]) < first_epoch
        np.testing.assert_allclose(b[["train_loss", "val_loss"]], a[["train_loss", "val_loss"]],
                                   atol=losses)
        assert (torch.load(alone / fold / "model.pt", weights_only=True)["best_epoch"]
                == torch.load(stacked / fold / "model.pt", weights_only=True)["best_epoch"])
    assert len(set(lengths)) > 1
    a, b = (pd.read_csv(run / "cv_predictions.csv") for run in (alone, stacked))
    pd.testing.assert_frame_equal(a.drop(columns="p_high"), b.drop(columns="p_high"))
    np.testing.assert_allclose(b["p_high"], a["p_high"], atol=p_high)
    assert json.loads((stacked / "config.json").read_text())["config_hash"] == \
        json.loads((alone / "config.json").read_text())["config_hash"]  # speed, not numbers


def in_memory_runs(settings, out, k: int, size: int = 24) -> list[train_mod.FoldRun]:
    """K fold runs (seeds 0..K-1) on one in-memory slice set of 6 patients x 8 slices."""
    rng = np.random.default_rng(0)
    ids = [f"P{i}" for i in range(6)]
    slices = SliceSet(images=rng.normal(size=(48, size, size)).astype(np.float16),
                      patient_index=np.repeat(np.arange(6), 8), patient_ids=ids,
                      labels=np.arange(6) % 2, sequence="T1", cache_config={"size": size},
                      cache_hash="test")
    images = torch.from_numpy(slices.images)
    labels = torch.from_numpy(slices.labels[slices.patient_index])
    meta = model_lib.input_meta(size, pretrained=False)
    return [train_mod.FoldRun(Split(f"fold_{i:02d}", 0, i, ids[:4], ids[4:]), slices, images,
                              labels, TINY, "none", meta, settings, out, seed=i,
                              config_hash="test") for i in range(k)]


@pytest.mark.parametrize("augment", [True, False])
def test_stacked_step_input_is_each_folds_own_augmented_batch(tmp_path, augment):
    # The stacked step gathers the K folds' batches and augments them in one resampling: fold
    # k's input must be what `augmented` gives fold k alone, bit for bit, its labels fold k's,
    # and each generator must end where it would.
    settings = train_mod.Settings.from_config({**config()["train"], "augment": augment},
                                              torch.device("cpu"))
    runs = in_memory_runs(settings, tmp_path, k=3)
    step = train_mod.StackedStep(StackedDenseNet([run.net for run in runs]), runs)
    seen = []   # (input, logits) of the stacked forward
    real_forward = step.stack.forward
    step.stack.forward = lambda x: seen.append((x.clone(), real_forward(x))) or seen[-1][1]
    rng = np.random.default_rng(1)
    batches = [torch.from_numpy(rng.choice(32, 16, replace=False)) for _ in runs]
    gens, alone_gens = ([torch.Generator().manual_seed(k) for k in range(3)] for _ in range(2))
    losses = step(batches, gens)
    for k, (run, batch, g) in enumerate(zip(runs, batches, alone_gens)):
        alone = model_lib.prepare_input(train_mod.augmented(run.data, batch, settings, g),
                                        run.meta)
        x, logits = seen[0]
        assert torch.equal(x[:, k], alone)
        assert torch.allclose(losses[k], torch.nn.functional.cross_entropy(
            logits[:, k].detach(), run.data.slice_labels[batch], weight=run.weights), atol=1e-6)
    for g, g_alone in zip(gens, alone_gens):
        assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=g_alone))


def test_side_by_side_training_resumes_as_if_never_stopped(tmp_path, monkeypatch):
    cache = graded_cache(tmp_path / "cache", cohort(6, 6))
    cfg = config(folds=3, concurrent_folds=3, max_epochs=3)
    full = train_mod.train_cv(cache, tmp_path / "full", cfg, seed=1, device="cpu")
    real_save = train_fold.save_checkpoint

    def interrupted(path, state):
        real_save(path, state)
        if path.parent.name == "fold_01" and len(state["history"]) == 2:
            raise KeyboardInterrupt  # fold_00 and fold_01 after epoch 2, fold_02 after epoch 1

    monkeypatch.setattr(train_fold, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train_cv(cache, tmp_path / "resumed", cfg, seed=1, device="cpu")
    monkeypatch.setattr(train_fold, "save_checkpoint", real_save)
    resumed = train_mod.train_cv(cache, tmp_path / "resumed", cfg, seed=1, device="cpu")
    # Not bit for bit: after the resume fold_02 trains its last epoch in a stack of one, not of
    # three, and a grouped convolution rounds differently from a single one.
    for fold in ("fold_00", "fold_01", "fold_02"):
        a, b = read_state(full / fold / "model.pt"), read_state(resumed / fold / "model.pt")
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=f"{fold} {k}")
        ha, hb = (pd.read_csv(r / fold / "history.csv") for r in (full, resumed))
        np.testing.assert_allclose(hb[["train_loss", "val_loss"]], ha[["train_loss", "val_loss"]],
                                   atol=1e-5)
    np.testing.assert_allclose(pd.read_csv(resumed / "cv_predictions.csv")["p_high"],
                               pd.read_csv(full / "cv_predictions.csv")["p_high"], atol=1e-5)


def test_concurrent_folds_setting_is_checked_and_sized_to_the_gpu_memory():
    gib = train_mod.GIB
    assert train_mod.fitting_folds(None, 15, 4 * gib, 60 * gib, "cuda:0") == 12  # 0.85 x 60 / 4
    assert train_mod.fitting_folds(None, 5, 4 * gib, 60 * gib, "cuda:0") == 5
    assert train_mod.fitting_folds(None, 5, 90 * gib, 60 * gib, "cuda:0") == 1
    assert train_mod.fitting_folds(12, 15, 4 * gib, 60 * gib, "cuda:0") == 12
    assert train_mod.fitting_folds(15, 3, 4 * gib, 60 * gib, "cuda:0") == 3
    with pytest.raises(SarcogradeError, match=r"^train.concurrent_folds 13 does not fit on "
                       r"cuda:0: one fold needs about 4.0 GiB and 60.0 GiB is free, room for 12; "
                       r"use 12 or fewer, or auto$"):
        train_mod.fitting_folds(13, 15, 4 * gib, 60 * gib, "cuda:0")
    cpu = torch.device("cpu")
    # one fold at a time unless asked: stacking has not run on a GPU yet
    assert {load_config(preset)["train"]["concurrent_folds"] for preset in PRESETS} == {1}
    for bad in ("many", 0, 1.5, True):
        with pytest.raises(SarcogradeError, match="concurrent_folds .* is not auto or a whole"):
            train_mod.Settings.from_config({**config()["train"], "concurrent_folds": bad}, cpu)
    auto = train_mod.Settings.from_config({**config()["train"], "concurrent_folds": "auto"}, cpu)
    assert train_mod.concurrent_folds(auto, 5, TINY, {}) == 1  # a CPU trains one at a time
    three = train_mod.Settings.from_config({**config()["train"], "concurrent_folds": 3}, cpu)
    assert train_mod.concurrent_folds(three, 5, TINY, {}) == 3
    assert train_mod.concurrent_folds(three, 2, TINY, {}) == 2
    with pytest.raises(SarcogradeError, match="cannot be used with model.dropout > 0"):
        train_mod.concurrent_folds(three, 5, {**TINY, "dropout": 0.2}, {})
    assert train_mod.concurrent_folds(auto, 5, {**TINY, "dropout": 0.2}, {}) == 1


def test_cli_concurrent_folds_flag(tmp_path, capsys):
    cache = graded_cache(tmp_path / "cache", cohort(4, 4))
    user = tmp_path / "tiny.yaml"
    user.write_text(yaml.safe_dump({"model": TINY, "train": {"max_epochs": 1, "batch_size": 8}}))
    common = ["train", str(cache), "--preset", "quick", "--config", str(user), "--device", "cpu",
              "--folds", "2"]
    assert main([*common, "--out", str(tmp_path / "bad"), "--concurrent-folds", "many"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == ("sarcograde train: error: train.concurrent_folds "
                                            "'many' is not auto or a whole number >= 1")
    assert not (tmp_path / "bad").exists()
    assert main([*common, "--out", str(tmp_path / "run"), "--concurrent-folds", "2"]) == 0
    err = capsys.readouterr().err
    assert "training 2 folds at a time, side by side on cpu" in err
    for fold in ("fold_00", "fold_01"):  # off a terminal, each fold's epoch is a line
        assert re.search(EPOCH_LINE.format(fold=fold, epoch=1, of=1), err, re.M)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"][
        "concurrent_folds"] == 2
    assert len(list((tmp_path / "run").glob("fold_*/model.pt"))) == 2


# --- train.cuda_graphs ---------------------------------------------------------------------

def test_cuda_graphs_setting_is_checked():
    cpu = torch.device("cpu")
    for bad in ("yes", 1, None):
        with pytest.raises(SarcogradeError, match="train.cuda_graphs .* is not true or false"):
            train_mod.Settings.from_config({**config()["train"], "cuda_graphs": bad}, cpu)
    assert train_mod.Settings.from_config(config()["train"], cpu).cuda_graphs is False


def test_cuda_graphs_refuse_dropout_in_one_line(tmp_path):
    cache = graded_cache(tmp_path / "cache", cohort(4, 4))
    cfg = config(cuda_graphs=True)
    cfg["model"]["dropout"] = 0.2
    with pytest.raises(SarcogradeError, match=r"^train.cuda_graphs cannot be used with "
                                              r"model.dropout > 0"):
        train_mod.train_cv(cache, tmp_path / "run", cfg, seed=0, device="cpu")
    assert not (tmp_path / "run").exists()


def test_with_cuda_graphs_each_fold_trains_as_a_stack_and_learns_as_alone(tmp_path, monkeypatch):
    # On a CPU nothing is captured: the step that a GPU replays runs eagerly, every fold (one at
    # a time here) in a stack of one. It must learn what the plain loop learns.
    cache = graded_cache(tmp_path / "cache", cohort(6, 6))
    stacked_steps = []
    real_call = train_mod.StackedStep.__call__
    monkeypatch.setattr(train_mod.StackedStep, "__call__",
                        lambda self, *a: stacked_steps.append(len(self.runs)) or
                        real_call(self, *a))
    plain, graphs = [train_mod.train_cv(cache, tmp_path / f"run_{on}", config(
        folds=3, concurrent_folds=1, cuda_graphs=on, max_epochs=3), seed=2, device="cpu")
        for on in (False, True)]
    assert stacked_steps and set(stacked_steps) == {1}
    for fold in ("fold_00", "fold_01", "fold_02"):
        a, b = (pd.read_csv(run / fold / "history.csv") for run in (plain, graphs))
        np.testing.assert_allclose(b[["train_loss", "val_loss"]], a[["train_loss", "val_loss"]],
                                   atol=1e-4)
    np.testing.assert_allclose(pd.read_csv(graphs / "cv_predictions.csv")["p_high"],
                               pd.read_csv(plain / "cv_predictions.csv")["p_high"], atol=1e-3)
    assert json.loads((graphs / "config.json").read_text())["config_hash"] == \
        json.loads((plain / "config.json").read_text())["config_hash"]  # speed, not numbers
