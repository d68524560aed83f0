"""sarcograde.console: a warning is one line; recorded lines (a Ray task's) are kept instead of
printed and replayed elsewhere as they would have printed, once."""

from __future__ import annotations

import threading

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
