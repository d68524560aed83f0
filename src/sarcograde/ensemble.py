"""The ensemble of a training run: its fold models, their slice logits, the patient aggregation.

The paper's rule (Navarro et al. 2021): a patient's probability of high grade is the softmax of
the logits averaged over all fold models and all tumour slices. Train's validation, predict and
explain all aggregate here, and all choose the inference precision with `resolve_precision`.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy.special import softmax

from . import model as model_lib
from .artifacts import hash_config, hash_path
from .device import batches_that_fit, to_device
from .errors import SarcogradeError
from .formats.cache import CONFIG as CACHE_CONFIG
from .formats.common import first_line
from .formats.package import Package, is_package, package_file, read_package
from .formats.run import FOLDS, MODEL, read_folds
from .train.stacked_densenet import StackedDenseNet

AGGREGATES = ("logits", "probabilities")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Keys of the cache's config.json that name the cohort, not the processing: a test cohort's cache
# differs from the training cache in these and still fits the models.
COHORT_KEYS = frozenset({"manifest"})


def package_ensemble(package: Package, sequence: str, device: torch.device | str = "cpu",
                     engine: str = "torch") -> Ensemble:
    """A model package's ensemble of `sequence`: the same networks as the run it was exported
    from, each fold's weights checked against the package's SHA-256 as they are read, run by
    `engine` (an ONNX engine runs the package's ONNX graphs where it holds them)."""
    spec = package.model(sequence)
    device = torch.device(device)
    networks, metas = [], []
    for fold, state in package.state_dicts(sequence):
        network = model_lib.build_model(spec.model)
        try:
            network.load_state_dict(state)
        except RuntimeError as exc:
            raise SarcogradeError(f"weights do not fit the package's model settings "
                                  f"({first_line(exc)})",
                                  path=package.shown(fold.weights)) from None
        networks.append(network.to(device).eval())
        metas.append({"model": spec.model, "input": spec.input, "preprocess": spec.preprocess,
                      "best_epoch": fold.best_epoch, "repeat": fold.repeat, "fold": fold.fold})
    weights = [package.document["files"][fold.weights] for fold in spec.folds]
    ensemble = Ensemble(run_dir=package.path / sequence, names=[f.name for f in spec.folds],
                        models=networks, metas=metas, device=device, key=hash_config(weights),
                        preprocess=dict(spec.preprocess))
    from .engines import resolve_engine, use_engine

    if engine == "auto" and any(fold.onnx is None for fold in spec.folds):
        # exporting the graphs here costs more than one patient's forward passes gain
        engine = "torch"
    engine = resolve_engine(engine, ensemble.device)
    return use_engine(ensemble, engine,
                      None if engine == "torch" else package.onnx_graphs(sequence))


def models_file(run_dir: str | Path) -> Path:
    """The file that names a run's models (folds.json), or a package's (model.json, or the zip
    itself), as run.json records it among the inputs."""
    return package_file(run_dir) if is_package(run_dir) else Path(run_dir) / FOLDS


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full fp32.

    `auto` is bf16 on a CUDA device that supports it (fp16 otherwise) and fp32 on the CPU, where
    reduced precision is slower on most processors; bf16 and fp16 can always be asked for.
    """
    if name == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast(device: torch.device, precision: torch.dtype | None, cache: bool = True):
    """The autocast context of `precision` on `device` (none for fp32). `cache=False` casts a
    weight at each use instead of once per context, as a CUDA graph capture needs (a network
    uses each weight once per forward, so the numbers are the same)."""
    if precision is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision, cache_enabled=cache)


@dataclass
class Ensemble:
    """The fold models of a training run, loaded for inference."""

    run_dir: Path
    names: list[str]                  # "fold_00", ... in folds.json order
    models: list[torch.nn.Module]
    metas: list[dict]
    device: torch.device
    key: str                          # hash of the model files: changes when any model changes
    preprocess: dict = field(default_factory=dict)
    _stack: StackedDenseNet | None = field(default=None, repr=False)
    # the engine `engines.use_engine` set; None: torch, the models as they are (`forward_pass`
    # then makes a torch engine)
    engine: object | None = field(default=None, repr=False)
    _last_pass: tuple | None = field(default=None, repr=False)  # (key, logits, signed maps)

    def forget_pass(self) -> None:
        """Drop the last forward pass that `forward_pass` keeps (a benchmark times a new one)."""
        self._last_pass = None

    def uses_onnx(self) -> bool:
        return self.engine is not None and self.engine.name != "torch"

    @property
    def input_meta(self) -> dict:
        return self.metas[0]["input"]

    def stack(self, channels_last: bool = False) -> StackedDenseNet:
        """The fold models as one stacked network in evaluation mode: the live stack over them
        where there is one (`StackedDenseNet.of`), else a new one, which the ensemble keeps alive
        (the models then share its storage and stay usable one by one)."""
        self._stack = StackedDenseNet.of(self.models, channels_last=channels_last)
        return self._stack.eval()


def load_ensemble(run_dir: str | Path, device: torch.device | str = "cpu",
                  sequence: str | None = None) -> Ensemble:
    """Load every fold model listed in RUN/folds.json, checking that they share their input; or,
    where `run_dir` is a model package (`sarcograde export`), its ensemble of `sequence`."""
    if is_package(run_dir):
        return package_ensemble(read_package(run_dir), sequence, device)
    run_dir = Path(run_dir)
    names = read_folds(run_dir).names
    device = torch.device(device)
    models, metas, hashes = [], [], []
    for name in names:
        path = run_dir / name / MODEL
        if not path.is_file():
            raise SarcogradeError("model missing: training not finished "
                                  "(rerun `sarcograde train` on this run to resume)", path=path)
        module, meta = model_lib.load_fold_model(path, device=device)
        models.append(module)
        metas.append(meta)
        hashes.append(hash_path(path))
    first = metas[0]
    for name, meta in zip(names[1:], metas[1:]):
        for part in ("input", "preprocess"):
            if meta.get(part) != first.get(part):
                raise SarcogradeError(
                    f"fold models disagree on their {part} ({names[0]}: {first.get(part)}, "
                    f"{name}: {meta.get(part)}); a run's models must share it", path=run_dir)
    return Ensemble(run_dir=run_dir, names=names, models=models, metas=metas, device=device,
                    key=hash_config(hashes), preprocess=dict(first.get("preprocess") or {}))


def check_cache_fits(ensemble: Ensemble, cache_config: dict, cache_dir: str | Path) -> None:
    """Stop when the cache was not preprocessed the way the models were trained."""
    keys = (set(ensemble.preprocess) | set(cache_config)) - COHORT_KEYS
    differ = [f"{k} {ensemble.preprocess.get(k)!r} (models) vs {cache_config.get(k)!r} (cache)"
              for k in sorted(keys) if ensemble.preprocess.get(k) != cache_config.get(k)]
    if differ:
        raise SarcogradeError("wrong cache for this run, preprocess it with the run's parameters: "
                              + "; ".join(differ), path=Path(cache_dir) / CACHE_CONFIG)


def slice_logits(ensemble: Ensemble, images: np.ndarray, batch_size: int = 64,
                 precision: torch.dtype | None = None, stacked: bool | None = None) -> np.ndarray:
    """Logits of every fold model for every slice: float32 array (models, n, 2).

    `stacked` runs the fold models as one `StackedDenseNet` (each kernel launched once for all
    models); default: on a GPU, where a single model's launches, not its arithmetic, set the
    pace. On CPU cores it is slightly slower (benchmarks/README.md).
    """
    if ensemble.uses_onnx():
        if precision is not None:
            raise SarcogradeError(f"engine {ensemble.engine.name} runs in fp32 only; use "
                                  f"--engine torch for {precision_name(precision)}")
        return forward_pass(ensemble, images, batch_size)[0]
    models = ensemble.models
    if stacked is None:
        stacked = ensemble.device.type == "cuda"
    stack = None
    if stacked and len(models) > 1:
        stack = ensemble.stack(channels_last=ensemble.device.type == "cuda")
    device = ensemble.device

    def compute(start: int, stop: int) -> torch.Tensor:  # (models, stop - start, 2)
        # Half-precision slices travel to the device, the affine input map runs there.
        batch = model_lib.prepare_input(to_device(torch.from_numpy(images[start:stop]), device),
                                        ensemble.input_meta)
        if stack is not None:
            logits = stack(batch[:, None].expand(-1, len(models), -1, -1, -1))
            return logits.float().permute(1, 0, 2)
        return torch.stack([net(batch).float() for net in models])

    # The logits stay on the device until the end: one copy back, so the host queues the next
    # batch while the device computes this one.
    with torch.inference_mode(), autocast(device, precision):
        parts = [logits for _, _, logits in batches_that_fit(len(images), batch_size, device,
                                                             "slice logits", compute)]
        if not parts:
            return np.empty((len(models), 0, 2), dtype=np.float32)
        return torch.cat(parts, 1).cpu().numpy()


def forward_pass(ensemble: Ensemble, images: np.ndarray, batch_size: int = 64
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Every model's logits (models, n, 2) and signed Grad-CAM maps (models, n, h, w) of slices
    (n, S, S) from one forward pass each (`attention.ForwardGradCam`), by the ensemble's engine;
    fp32. A second call on the same slices with the same engine returns the first call's arrays
    (grade: predict's logits, then explain's maps of the same patient, from one pass)."""
    if ensemble.engine is None:
        from .engines import TorchEngine

        ensemble.engine = TorchEngine(ensemble.models)
    key = (id(ensemble.engine), images.shape, images.dtype.str,
           hashlib.sha256(np.ascontiguousarray(images).data).hexdigest())
    if ensemble._last_pass is not None and ensemble._last_pass[0] == key:
        return ensemble._last_pass[1], ensemble._last_pass[2]
    device = ensemble.device if ensemble.engine.name == "torch" else torch.device("cpu")

    def compute(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = model_lib.prepare_input(to_device(torch.from_numpy(images[start:stop]), device),
                                        ensemble.input_meta)
        return ensemble.engine.run(batch)

    parts = [outputs for _, _, outputs in batches_that_fit(len(images), batch_size, device,
                                                           "forward pass", compute)]
    if not parts:
        return (np.empty((len(ensemble.models), 0, 2), np.float32),
                np.empty((len(ensemble.models), 0, 1, 1), np.float32))
    logits, signed = (torch.cat([part[i] for part in parts], 1).cpu().numpy() for i in (0, 1))
    ensemble._last_pass = (key, logits, signed)
    return logits, signed


def p_high_of_mean_logits(mean_logits: np.ndarray) -> np.ndarray:
    """p_high = softmax of averaged logits `(..., 2)`, in float64."""
    return softmax(np.asarray(mean_logits, np.float64), axis=-1)[..., 1]


def aggregate(logits: np.ndarray, mode: str = "logits") -> tuple[float, np.ndarray]:
    """The patient's p_high and each model's p_high from per-slice logits (models, n, 2).

    `logits` (the paper's rule): softmax of the mean logits, over models and slices for the
    ensemble, over slices for each model. `probabilities`: the mean of per-slice softmax p_high.
    """
    if mode == "logits":
        p_high = p_high_of_mean_logits(logits.mean(axis=(0, 1), dtype=np.float64))
        per_model = p_high_of_mean_logits(logits.mean(axis=1, dtype=np.float64))
    elif mode == "probabilities":
        probs = p_high_of_mean_logits(logits)
        p_high, per_model = probs.mean(), probs.mean(axis=1)
    else:
        raise ValueError(f"unknown aggregate {mode!r}; choose one of {AGGREGATES}")
    return float(p_high), per_model


def slice_p_high(logits: np.ndarray) -> np.ndarray:
    """Each slice's ensemble p_high (n,) from logits (models, n, 2): mean over the models."""
    return p_high_of_mean_logits(logits.mean(axis=0, dtype=np.float64))


def patients_p_high(logits: np.ndarray, owner: np.ndarray, n_patients: int) -> np.ndarray:
    """p_high per patient from one model's slice logits (n, 2) and each slice's patient
    position `owner` (n,): the paper's rule over a patient's slices (train's validation)."""
    logits = np.asarray(logits, np.float64)
    sums = np.zeros((n_patients, logits.shape[1]))
    np.add.at(sums, owner, logits)
    counts = np.maximum(np.bincount(owner, minlength=n_patients), 1)[:, None]
    return p_high_of_mean_logits(sums / counts)
