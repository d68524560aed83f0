"""Folds trained side by side: the fold models of a run as one `StackedDenseNet`.

Every fold keeps its own batches, augmentation, Adam state, early stopping and checkpoint, as it
would alone (`fold.fit_fold`); only the network's kernels are launched once for all of them.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from .. import model as model_lib
from ..data import AugmentDraws, Resampling, draw_augmentation, resample
from ..ensemble import autocast
from .fold import FoldRun, fit_fold
from .progress import Bars
from .settings import Settings
from .stacked_densenet import StackedDenseNet
from .step import Evaluation, augmented, epoch_batches, score, train_step


def stacked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                          weights: torch.Tensor) -> torch.Tensor:
    """Each model's class-weighted mean cross-entropy, as `F.cross_entropy(weight=)` computes
    it, from logits `(B, K, 2)`, labels `(B, K)` and class weights `(K, 2)`: a tensor `(K,)`."""
    # The label's log-probability picked by a one-hot product, not `gather`: the backward of a
    # gather is a scatter, which deterministic mode runs through a sort.
    one_hot = (labels[..., None] == torch.arange(logits.shape[-1], device=labels.device))
    nll = -(F.log_softmax(logits, -1) * one_hot).sum(-1)
    w = weights.gather(1, labels.T).T
    return (w * nll).sum(0) / w.sum(0)


class StackedStep:
    """The full-batch training step of a stack of fold models: gather each fold's batch from the
    slices on the device, resample all K batches at once, forward, each model's loss, backward
    and each model's Adam step, as each model alone would (Adam's state is each fold's own).

    The step reads its inputs from fixed buffers (the K batches' slice indices and resampling)
    filled before each call, so every call has the same shapes. With `train.cuda_graphs` on a GPU
    the step is captured once in a CUDA graph, after a few eager steps on a side stream (the
    warm-up CUDA graphs ask for; they are real steps), and replayed from then on: the GPU is
    handed thousands of kernels at once instead of one by one. Otherwise it runs eagerly. The
    numbers are the same either way.
    """

    WARM_UP_STEPS = 3

    def __init__(self, stack: StackedDenseNet, runs: list[FoldRun]):
        settings = runs[0].settings
        if any(run.data.images is not runs[0].data.images for run in runs):
            raise ValueError("the folds of a stack train on one slice set")
        self.stack, self.runs, self.settings, self.meta = stack, runs, settings, runs[0].meta
        n, device = len(runs) * settings.batch_size, settings.device
        self.index = torch.zeros(n, dtype=torch.long, device=device)
        grid = settings.augment.elastic_grid if settings.augment is not None else 0
        self.resampling = None if settings.augment is None else Resampling(
            torch.zeros(n, 2, 2, device=device), torch.zeros(n, 2, device=device),
            torch.zeros(n, 2, grid, grid, device=device))
        self.weights = torch.stack([run.weights for run in runs])
        self.capture = settings.cuda_graphs and device.type == "cuda"
        self.side = torch.cuda.Stream(device) if self.capture else None  # for the warm-up
        self.eager_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.losses: torch.Tensor | None = None

    def __call__(self, batches: list[torch.Tensor],
                 generators: list[torch.Generator]) -> torch.Tensor:
        """One step on fold k's `batches[k]`, augmented with the next draws of `generators[k]`;
        each model's loss `(K,)`."""
        self.index.copy_(torch.cat(batches))
        if self.resampling is not None:
            self.resampling.copy_(Resampling.of(AugmentDraws.cat([
                draw_augmentation(len(b), self.settings.augment, g)
                for b, g in zip(batches, generators)])))
        if self.graph is not None:
            self.graph.replay()
            return self.losses.clone()
        if not self.capture:
            return self._step()
        device = self.settings.device
        if self.eager_steps < self.WARM_UP_STEPS:
            self.eager_steps += 1
            self.side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(self.side):
                losses = self._step()
            torch.cuda.current_stream(device).wait_stream(self.side)
            return losses
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # recorded, not run: the replay runs this step
            self.losses = self._step()
        self.graph.replay()
        return self.losses.clone()

    def _step(self) -> torch.Tensor:
        k, b = len(self.runs), self.settings.batch_size
        x = self.runs[0].data.images[self.index]
        if self.resampling is not None:
            x = resample(x, self.resampling)
        x = model_lib.prepare_input(x, self.meta).reshape(k, b, -1, *x.shape[-2:]).transpose(0, 1)
        labels = self.runs[0].data.slice_labels[self.index].reshape(k, b).T
        return self.update(x, labels)

    def update(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Forward of network input `x` `(B, K, 3, S, S)`, each model's loss on `labels` `(B, K)`,
        backward and each model's Adam step; the losses `(K,)`. (Gradients are set to None
        first: in a capture that records no kernel, and the backward writes them afresh.)"""
        for run in self.runs:
            run.optimizer.zero_grad(set_to_none=True)
        with autocast(self.settings.device, self.settings.amp_dtype, cache=False):
            logits = self.stack(x)
        losses = stacked_cross_entropy(logits.float(), labels, self.weights)
        losses.sum().backward()  # the models share no weight: each gets its own gradient
        self.stack.member_grads()
        for run in self.runs:
            run.optimizer.step()
        return losses.detach()


def stacked_epoch(step: StackedStep, on_batch=None) -> list[float]:
    """Each fold's next epoch, the folds side by side; each fold's mean training loss.

    Every fold takes its own batches, in its own seeded order, with its own augmentation and
    its own Adam step, as it would alone. While every fold has a full batch left the step is one
    `StackedStep`; the last batches (folds differ in size) are stepped fold by fold.
    """
    runs, settings, meta = step.runs, step.settings, step.meta
    step.stack.train()
    for run in runs:
        run.net.train()
    generators = [run.generator() for run in runs]
    batches = [epoch_batches(run.data, settings, g) for run, g in zip(runs, generators)]
    together = min(sum(len(b) == settings.batch_size for b in bs) for bs in batches)
    totals = torch.zeros(len(runs), device=settings.device)
    for i in range(together):
        totals += step([bs[i] for bs in batches], generators) * settings.batch_size
        if on_batch is not None:
            on_batch()
    seen = [together * settings.batch_size] * len(runs)
    for k, (run, bs, g) in enumerate(zip(runs, batches, generators)):
        for batch in bs[together:]:
            x = settings.to_input(augmented(run.data, batch, settings, g), meta)
            totals[k] += train_step(run.net, run.optimizer, run.scaler, x,
                                    run.data.slice_labels[batch], run.weights,
                                    settings) * len(batch)
            seen[k] += len(batch)
    return [float(t) / max(n, 1) for t, n in zip(totals.cpu(), seen)]


@torch.no_grad()
def evaluate_stacked(stack: StackedDenseNet, runs: list[FoldRun], settings: Settings,
                     meta: dict) -> list[Evaluation]:
    """`FoldRun.evaluate` of every fold in one stacked pass over the validation slices.

    In evaluation mode a slice's logits do not depend on the rest of its batch, so a fold with
    fewer validation slices is padded with its first slice and the padding dropped.
    """
    stack.eval()
    chunk = 2 * settings.batch_size
    vals = [run.data.val for run in runs]
    longest = max(len(v) for v in vals)
    logits: list[list[torch.Tensor]] = [[] for _ in runs]
    for start in range(0, longest, chunk):
        width = min(chunk, longest - start)
        parts = []
        for v in vals:
            idx = v[start:start + width]
            idx = torch.cat([idx, v[:1].expand(width - len(idx))])
            parts.append(model_lib.prepare_input(runs[0].data.images[idx], meta))
        with settings.autocast():
            out = stack(torch.stack(parts, 1)).float()
        for k, v in enumerate(vals):
            logits[k].append(out[:max(0, min(width, len(v) - start)), k])
    return [score(torch.cat(parts), run.data.slice_labels[run.data.val], run.data.val_owner,
                  run.data.val_labels, run.weights) for parts, run in zip(logits, runs)]


def fit_stacked(runs: list[FoldRun], bars: Bars | None = None) -> None:
    """Train folds side by side as one `StackedDenseNet` until each stops.

    A fold that stops early leaves the stack; the others go on in a smaller one, the last one
    alone (with `train.cuda_graphs`, in a stack of one, so that its steps are replayed too).
    Checkpoints, histories and fold files are those of `fit_fold`.
    """
    settings, meta = runs[0].settings, runs[0].meta
    active = [run for run in runs if not run.finished]
    while len(active) > (0 if settings.cuda_graphs else 1):
        stack = StackedDenseNet([run.net for run in active], settings.channels_last)
        step = StackedStep(stack, active)
        while not any(run.finished for run in active):
            start = time.perf_counter()
            on_batch = None
            if bars is not None:
                on_batch = bars.new_epoch(
                    max(run.next_epoch for run in active),
                    max(math.ceil(len(run.data.train) / settings.batch_size) for run in active))
            losses = stacked_epoch(step, on_batch)
            evaluations = evaluate_stacked(stack, active, settings, meta)
            seconds = time.perf_counter() - start
            for run, loss, ev in zip(active, losses, evaluations):
                run.end_epoch(loss, ev, seconds, bars)
        del step  # its graph before the stack's memory
        stack.unstack()
        active = [run for run in active if not run.finished]
    for run in active:  # the last one left trains alone
        fit_fold(run, bars)
