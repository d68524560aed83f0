"""`--executor ray` gives the local executor's results: the same NPZ bytes from `preprocess`,
the same out-of-fold predictions from `train` (byte for byte at the defaults, where another
count of threads per fold would give other numbers), also when a worker is killed in the middle
of a fold, the same predictions from `predict` and attention tables and maps from `explain`. One
local Ray with 2 CPUs for the module (it takes seconds to start). The local executor's worker
processes: tasks side by side, their lines heard once, a dead worker reported."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import yaml

from preprocess_phantom import phantom
import executor_tasks
from executor_tasks import dies, meet, noisy
from sarcograde import parallel
from sarcograde import train as train_mod
from sarcograde.cli import main
from sarcograde.console import warn
from sarcograde.errors import SarcogradeError
from sarcograde.executors import WORKER_DIED, LocalExecutor, RayExecutor
from fakes import cohort, graded_cache
from test_explain import cache_dir, run_dir, square_model  # noqa: F401 (fixtures)
from test_explain import explain
from test_formats_predictions import predict_after_damaging_b2
from test_formats_predictions import study  # noqa: F401 (fixture)
from test_preprocess_stage import preprocess, write_cohort
from test_train import config

try:
    import ray
except ImportError:
    ray = None


def on_ray(test):
    """A test on the module's local Ray (2 CPUs); skipped, with the reason, without Ray."""
    for mark in (pytest.mark.skipif(ray is None, reason="Ray is the optional extra "
                                    "sarcograde[cluster] (`make test` installs it)"),
                 pytest.mark.slow, pytest.mark.usefixtures("ray_session", "one_torch_thread")):
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def test_without_the_extra_the_ray_executor_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(["preprocess", str(tmp_path / "m.csv"), "--out", str(tmp_path / "c"),
                 "--executor", "ray"]) != 0
    assert main(["train", str(tmp_path / "cache"), "--out", str(tmp_path / "r"),
                 "--ray-address", "auto"]) != 0
    assert main(["train", str(tmp_path / "cache"), "--out", str(tmp_path / "r"),
                 "--ray-dashboard"]) != 0
    assert main(["explain", str(tmp_path / "r"), str(tmp_path / "cache"), "--out",
                 str(tmp_path / "x"), "--ray-address", "auto"]) != 0
    err = capsys.readouterr().err
    assert err.count("--ray-address needs --executor ray") == 2
    assert "--ray-dashboard needs --executor ray" in err
    assert "pip install 'sarcograde[cluster]'" in err


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@on_ray
def test_preprocess_on_ray_writes_the_local_bytes_and_reports_a_failing_patient(tmp_path,
                                                                                capsys):
    data = tmp_path / "data"
    data.mkdir()
    # BAD's mask is on another grid than its image: reported by name, the others go on
    manifest = write_cohort(data, ["BAD,2,siteA,P2_img.nii.gz,small_mask.nii.gz"])
    sitk.WriteImage(phantom(shape_zyx=(12, 40, 40), radius_mm=6.0)[1],
                    str(data / "small_mask.nii.gz"))
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert preprocess(manifest, local) == 1
    capsys.readouterr()
    assert preprocess(manifest, on_ray, "--executor", "ray") == 1
    err = capsys.readouterr().err
    assert err.count("failed: BAD: ") == 1 and "mask is not on the grid of the image" in err
    npz = sorted(p.name for p in (local / "patients").glob("*.npz"))
    assert npz == ["P1.npz", "P2.npz", "P3.npz"]
    assert sorted(p.name for p in (on_ray / "patients").glob("*.npz")) == npz
    assert [sha1(local / "patients" / n) for n in npz] == \
        [sha1(on_ray / "patients" / n) for n in npz]
    assert (local / "index.csv").read_text() == (on_ray / "index.csv").read_text()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A cache of 10 patients and its 2-fold quick-preset run on the local executor, at the
    defaults (one thread per fold) on 2 CPUs: the two folds in two worker processes."""
    root = tmp_path_factory.mktemp("train")
    cache = graded_cache(root / "cache", cohort(5, 5))
    cfg = config(max_epochs=3)
    pools = []
    real_pool = parallel.worker_pool
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parallel, "available_cpus", lambda: 2)
        patch.setattr(parallel, "worker_pool", lambda n: pools.append(n) or real_pool(n))
        run = train_mod.train_cv(cache, root / "local", cfg, seed=3, device="cpu")
    assert pools == [2]
    return cache, cfg, run


def assert_same_predictions(local: Path, other: Path) -> None:
    a, b = (pd.read_csv(run / "cv_predictions.csv", dtype={"patient_id": str})
            for run in (local, other))
    pd.testing.assert_frame_equal(a.drop(columns="p_high"), b.drop(columns="p_high"))
    assert (a["p_high"] - b["p_high"]).abs().max() <= 1e-6


@on_ray
def test_train_on_ray_gives_the_local_out_of_fold_predictions(tiny_run, tmp_path, capsys):
    cache, cfg, local = tiny_run
    capsys.readouterr()
    run = train_mod.train_cv(cache, tmp_path / "ray", cfg, seed=3, device="cpu",
                             executor=RayExecutor())
    assert_same_predictions(local, run)
    # the same threads per fold on both: the same numbers, bit for bit
    assert (run / "cv_predictions.csv").read_bytes() == (local / "cv_predictions.csv").read_bytes()
    # each fold's line from its task, once; the AUC line from the driver only, as locally
    err = capsys.readouterr().err
    assert err.count("fold_00: best epoch") == err.count("fold_01: best epoch") == 1
    assert err.count("out-of-fold patient AUC, repeat 0: ") == 1
    assert sorted(p.parent.name for p in run.glob("fold_*/model.pt")) == ["fold_00", "fold_01"]


def _kill_a_fold_worker_after_its_first_epoch(run: Path, killed: list[int]) -> None:
    """Watch for the first fold checkpoint (an epoch is done), then SIGKILL the Ray worker
    training a fold, once: Ray names a busy worker's process after its task."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list(run.glob("fold_*/checkpoint.pt")):
        time.sleep(0.05)
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if title.startswith(b"ray::train_folds"):
            os.kill(int(proc.name), signal.SIGKILL)
            killed.append(int(proc.name))
            return


@on_ray
def test_a_worker_killed_in_the_middle_of_a_fold_is_retried_with_the_same_numbers(tiny_run,
                                                                                tmp_path):
    cache, cfg, local = tiny_run
    run = tmp_path / "killed"
    killed: list[int] = []
    watcher = threading.Thread(target=_kill_a_fold_worker_after_its_first_epoch,
                               args=(run, killed))
    watcher.start()
    code = main(["train", str(cache), "--out", str(run), "--preset", "quick", "--config",
                 str(_write_config(tmp_path, cfg)), "--seed", "3", "--device", "cpu",
                 "--executor", "ray"])
    watcher.join()
    assert killed, "no Ray worker was training a fold"
    assert code == 0
    assert_same_predictions(local, run)


def _write_config(folder: Path, cfg: dict) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": cfg["model"], "train": cfg["train"]}))
    return path


@on_ray
def test_predict_on_ray_gives_the_local_predictions(tiny_run, tmp_path):
    cache, _, run = tiny_run
    for name, flags in (("local", []), ("ray", ["--executor", "ray"])):
        assert main(["predict", str(run), str(cache), "--out", str(tmp_path / name / "p.csv"),
                     "--device", "cpu", *flags]) == 0
    local, on_ray = (pd.read_csv(tmp_path / name / "p.csv", dtype={"patient_id": str})
                     for name in ("local", "ray"))
    pd.testing.assert_frame_equal(local, on_ray, check_exact=False, atol=1e-6, rtol=0)
    assert len(list((tmp_path / "ray" / "p.slices").glob("*.npz"))) == len(local)


@pytest.mark.slow
def test_a_fold_trained_with_two_threads_gets_other_numbers(tiny_run, tmp_path):
    """What makes the equality above worth testing: on this cohort a fold's thread count
    changes its numbers (a CPU's sums are split over its threads and round differently)."""
    cache, cfg, local = tiny_run
    two = train_mod.train_cv(cache, tmp_path / "two", config(max_epochs=3, threads_per_fold=2),
                             seed=3, device="cpu")
    a, b = (pd.read_csv(run / "cv_predictions.csv") for run in (local, two))
    pd.testing.assert_frame_equal(a.drop(columns="p_high"), b.drop(columns="p_high"))
    assert (a["p_high"] != b["p_high"]).any()


@pytest.fixture
def tasks_of_this_module():
    """The task functions sent to Ray by value: its workers cannot import tests/."""
    ray.cloudpickle.register_pickle_by_value(executor_tasks)
    yield
    ray.cloudpickle.unregister_pickle_by_value(executor_tasks)


def task_lines_reach_the_driver_once(make_executor, noun: str, capsys) -> None:
    warn("every task says this")  # before the executor: the tasks' copy is still shown
    executor = make_executor()
    capsys.readouterr()
    assert executor.map(noisy, ["a", "b", "c"], label="noisy", names=list("abc")) == list("ABC")
    err = capsys.readouterr().err
    for item in "abc":
        assert err.count(f"warning: {item}: something to know\n") == 1
    assert err.count("warning: every task says this\n") == 1
    results = executor.map(noisy, ["d", "bad"], label="noisy", names=["d", "bad"],
                           on_error=lambda item, message: f"failed: {message}")
    assert results == ["D", "failed: bad: no way"]
    err = capsys.readouterr().err
    assert err.count("warning: bad: something to know\n") == 1
    assert "every task says this" not in err  # shown by this executor already
    with pytest.raises(SarcogradeError, match=f"1 {noun}.*bad: no way"):  # a new command's
        make_executor().map(noisy, ["bad", "e"], label="noisy", names=["bad", "e"])
    assert capsys.readouterr().err.count("warning: bad: something to know\n") == 1


@on_ray
def test_a_task_warning_reaches_the_driver_once_before_a_failure(tasks_of_this_module, capsys):
    task_lines_reach_the_driver_once(RayExecutor, "Ray task", capsys)


def test_a_local_worker_process_is_heard_once_as_on_ray(capsys):
    task_lines_reach_the_driver_once(lambda: LocalExecutor(workers=2), "task", capsys)


def test_local_tasks_run_side_by_side_in_worker_processes(tmp_path):
    pids = LocalExecutor(workers=2).map(meet, [(tmp_path, "a"), (tmp_path, "b")], label="meet",
                                        names=["a", "b"])
    assert len(set(pids)) == 2 and os.getpid() not in pids
    # as many at a time as the CPUs hold at the CPUs a task asks for; one: here
    assert LocalExecutor().slots(num_cpus=1) == parallel.available_cpus()
    assert LocalExecutor().slots(num_cpus=parallel.available_cpus()) == 1
    assert LocalExecutor().map(lambda _: os.getpid(), [0], label="here",
                               names=["here"]) == [os.getpid()]


def test_a_dead_local_worker_is_reported_by_the_task(capsys):
    executor = LocalExecutor(workers=2)
    assert executor.map(dies, ["dead", "dead"], label="dies", names=["a", "b"],
                        on_error=lambda item, message: message) == [WORKER_DIED] * 2
    with pytest.raises(SarcogradeError, match=rf"^2 task\(s\) failed: a: {re.escape(WORKER_DIED)}"):
        executor.map(dies, ["dead", "dead"], label="dies", names=["a", "b"])


@on_ray
def test_predict_on_ray_warns_once_of_a_damaged_slices_file(study, tmp_path, capsys):
    err = predict_after_damaging_b2(study, tmp_path, capsys, "--executor", "ray")
    assert err.count("damaged saved logits") == 1 and "warning: B2: " in err


def test_batches_are_consecutive_two_per_slot(monkeypatch):
    executor = RayExecutor()
    monkeypatch.setattr(executor, "resources", lambda: {"CPU": 2.0, "GPU": 1.0})
    assert executor.batches(list("abcdefg"), gpu=False) == [
        ("a", "b"), ("c", "d"), ("e", "f"), ("g",)]
    assert executor.batches(list("abc"), gpu=True) == [("a", "b"), ("c",)]
    assert executor.batches(["a"], gpu=False) == [("a",)]


def assert_same_explanations(local: Path, other: Path) -> None:
    for table in ("attention.csv", "attention_slices.csv"):
        a, b = (pd.read_csv(out / table, dtype={"patient_id": str}) for out in (local, other))
        pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-6, rtol=0)
    names = sorted(p.name for p in (local / "maps").glob("*.npz"))
    assert names == sorted(p.name for p in (other / "maps").glob("*.npz")) and names
    for name in names:
        with np.load(local / "maps" / name) as a, np.load(other / "maps" / name) as b:
            assert str(a["key"]) == str(b["key"])
            np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-6, rtol=0)
            # float16 maps scaled to 1 per slice: at most one step of float16 apart
            np.testing.assert_allclose(a["cam"].astype(np.float32), b["cam"].astype(np.float32),
                                       atol=2.0 ** -10, rtol=0)
    assert sorted(p.name for p in local.glob("*.png")) == sorted(p.name for p in other.glob("*.png"))


@on_ray
def test_explain_on_ray_gives_the_local_attention_and_maps(run_dir, cache_dir, tmp_path):
    explain(run_dir, cache_dir, tmp_path / "local", "--device", "cpu")
    table = explain(run_dir, cache_dir, tmp_path / "ray", "--device", "cpu", "--executor", "ray")
    assert list(table.index) == ["ON", "OFF", "PLAIN"]
    assert_same_explanations(tmp_path / "local", tmp_path / "ray")


@on_ray
def test_explain_on_ray_reuses_the_maps_of_patients_already_done(run_dir, cache_dir, tmp_path):
    """What a retried task (or a rerun) finds: the patients done before keep their maps."""
    out = tmp_path / "ray"
    explain(run_dir, cache_dir, out, "--device", "cpu", "--executor", "ray", "--patient-ids", "OFF")
    stamp = (out / "maps" / "OFF.npz").stat().st_mtime_ns
    explain(run_dir, cache_dir, out, "--device", "cpu", "--executor", "ray")
    assert (out / "maps" / "OFF.npz").stat().st_mtime_ns == stamp
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "maps").glob("*.npz")}
    assert sorted(stamps) == ["OFF.npz", "ON.npz", "PLAIN.npz"]
    explain(run_dir, cache_dir, tmp_path / "local", "--device", "cpu")
    assert_same_explanations(tmp_path / "local", out)
    explain(run_dir, cache_dir, out, "--device", "cpu", "--executor", "ray")
    assert {p.name: p.stat().st_mtime_ns for p in (out / "maps").glob("*.npz")} == stamps
