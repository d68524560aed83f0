"""The paper preset on a machine without a GPU: how long an epoch will take here, from one
timed training step of the real network at the real batch and slice size, said in one line
before training starts. Nothing is refused: the line only says what to expect, and that the
quick preset exists."""

from __future__ import annotations

from .. import model as model_lib
from ..console import info
from ..device import resolve_device
from .settings import Settings
from .step import trial_step

PAPER = "paper"


def duration(seconds: float) -> str:
    """`seconds` as a person would say it: 0.4 s, 41 s, 53 min, 5.2 h."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def epoch_estimate(step_seconds: float, batch_size: int, training_slices: int | None) -> str:
    """The line, from one step's seconds: an epoch of `training_slices` (a cache's), or per
    1,000 training slices where the cache does not exist yet."""
    if training_slices is None:
        epoch = (f"an epoch takes about {duration(step_seconds * 1000 / batch_size)} per 1,000 "
                 "training slices")
    else:
        epoch = (f"an epoch of this cache's {training_slices:,} training slices takes about "
                 f"{duration(step_seconds * training_slices / batch_size)}")
    return (f"paper preset on a CPU: one step of {batch_size} slices takes "
            f"{duration(step_seconds)} here, so {epoch}; the quick preset runs in minutes")


def say_epoch_time(config: dict, settings: Settings, meta: dict,
                   training_slices: int | None = None) -> None:
    """With the paper preset on a CPU, time one step of `config`'s network and say the line;
    nothing with another preset or on a GPU."""
    if config.get("preset") != PAPER or settings.device.type != "cpu":
        return
    seconds = trial_step(config["model"], settings, meta)
    info(epoch_estimate(seconds, settings.batch_size, training_slices))


def say_epoch_time_before_study(config: dict) -> None:
    """`say_epoch_time` for a study about to run `train` (on the device it will pick) on the
    slices its preprocessing will cut, before any cache exists."""
    settings = Settings.from_config(config["train"], resolve_device("auto"))
    pretrained = str(config["model"].get("pretrained", "none")).lower() != "none"
    say_epoch_time(config, settings,
                   model_lib.input_meta(int(config["preprocess"]["size"]), pretrained))
