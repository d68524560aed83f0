"""sarcograde.console: a warning is one line; recorded lines (a Ray task's) are kept instead of
printed and replayed elsewhere as they would have printed, once."""

from __future__ import annotations

import threading
import time

from sarcograde import console
from sarcograde.console import info, warn


def test_recorded_lines_are_kept_in_order_and_replayed_as_printed(capsys):
    with console.recorded() as lines:
        warn("P07: damaged saved maps recomputed")
        info("fold_01: best epoch 2")
        worker = threading.Thread(target=warn, args=("from another thread",))
        worker.start()
        worker.join()
    assert capsys.readouterr().err == ""
    assert lines == [("warn", "P07: damaged saved maps recomputed"),
                     ("info", "fold_01: best epoch 2"), ("warn", "from another thread")]
    console.replay(lines)
    err = capsys.readouterr().err
    warn("P07: damaged saved maps recomputed")
    info("fold_01: best epoch 2")
    warn("from another thread")
    assert err == capsys.readouterr().err  # the same lines as printed here
    assert err.splitlines()[0] == "warning: P07: damaged saved maps recomputed"


def test_replay_since_a_mark_leaves_out_lines_already_shown(capsys):
    warn("before the mark")
    mark = console.mark()
    warn("the driver's own")
    console.replay([("warn", "before the mark"), ("warn", "the driver's own"),
                    ("info", "new"), ("info", "new")], since=mark)
    console.replay([("info", "new"), ("warn", "another task's")], since=mark)
    err = capsys.readouterr().err
    assert err.count("before the mark") == 2
    assert err.count("the driver's own") == 1
    assert err.count("new") == 2  # twice in one task, as that task printed it
    assert err.count("another task's") == 1


def test_off_a_terminal_progress_is_a_line_per_advance_at_most_every_few_seconds(capsys,
                                                                                 monkeypatch):
    """A slow task is followed line by line, a fast one leaves nothing in the log."""
    # capsys's stderr is not a terminal, as a cluster job's log file is not
    monkeypatch.setattr(console, "LOG_EVERY_S", 0.0)
    with console.progress() as bar:
        patients = bar.add_task("explain (patients)", total=3)
        quiet = bar.add_task("batches", total=5, logged=False)
        bar.update(patients, description="explain (patients)")   # no progress: no line
        for _ in range(3):
            bar.advance(patients)
            bar.advance(quiet)
    assert capsys.readouterr().err.splitlines() == [
        f"explain (patients): {k}/3 (0 s)" for k in (1, 2, 3)]

    monkeypatch.setattr(console, "LOG_EVERY_S", 0.5)
    with console.progress() as bar:
        fast = bar.add_task("checking", total=2)
        slow = bar.add_task("predict (slices)", total=90)
        bar.advance(fast, 2)                  # done well within the interval: no line at all
        bar.update(slow, advance=30)          # within the interval: no line
        time.sleep(0.6)
        bar.update(slow, advance=30)          # the interval has passed: a line
        bar.update(slow, advance=30)          # within the interval, but a slow task's end
    assert capsys.readouterr().err.splitlines() == ["predict (slices): 60/90 (1 s)",
                                                    "predict (slices): 90/90 (1 s)"]

    with console.progress(transient=True) as bar:  # a transient bar leaves nothing in a log
        task = bar.add_task("loading cache", total=2)
        bar.advance(task, 2)
    assert capsys.readouterr().err == ""
