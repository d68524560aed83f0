"""Training data: the cached tumour slices in memory, and seeded on-the-fly augmentation.

All slices of a cache sit in one float16 array (5,000 slices of 224 x 224 take 0.5 GB), so a
batch is a gather, not a file read. Augmentation works on whole batches on the training device:
flips, rotation, zoom, elastic deformation and a random crop resized back to full size are
composed into ONE sampling grid and applied with one bilinear interpolation (chained resamplers
would blur the image once per step). Its random numbers come from a `torch.Generator` seeded per
fold, epoch and batch, so a run and its resumption see the same augmented images on any device.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .config import AugmentParams
from .console import progress, warn
from .device import to_device
from .errors import SarcogradeError
from .formats.cache import CacheIndex, read_cache_config, read_patient


@dataclass
class SliceSet:
    """Every cached slice of one sequence and the patient each belongs to."""

    images: np.ndarray          # (n_slices, S, S) float16, z-scored
    patient_index: np.ndarray   # (n_slices,) int: position in `patient_ids`
    patient_ids: list[str]
    labels: np.ndarray          # (n_patients,) int: 0 low, 1 high, -1 unknown
    sequence: str
    cache_config: dict[str, Any]
    cache_hash: str             # changes whenever a cached file or the preprocessing changes

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def slices_of(self, patients: np.ndarray) -> np.ndarray:
        """Indices of the slices of the patients at positions `patients`, in cache order."""
        return np.flatnonzero(np.isin(self.patient_index, patients))


def load_slices(cache: str | Path, sequence: str | None = None) -> SliceSet:
    """Read `CACHE/index.csv` and every patient's NPZ (format: docs/artifacts.md) into memory.

    A cache with several sequences needs `sequence`; patients without slices are left out with
    a warning. Any unreadable or inconsistent file stops with its patient and path named.
    """
    cache = Path(cache)
    index = CacheIndex.read(cache)
    cache_config = read_cache_config(cache, required=False)
    sequence = index.choose_sequence(sequence)
    rows = index.rows(sequence)
    images, owners, ids, labels = [], [], [], []
    size = None
    with progress(transient=True) as bar:
        task = bar.add_task("loading cache", total=len(rows))
        for row in rows.itertuples(index=False):
            image = read_patient(cache, row, arrays=("image",))["image"]
            size = size or image.shape[1]
            if image.shape[1] != size:
                raise SarcogradeError(f"slice size {image.shape[1]} differs from the cache's "
                                      f"{size}", patient=row.patient_id, path=cache / row.npz)
            if len(image) == 0:
                warn(f"{row.patient_id}: {cache / row.npz}: no tumour slices; left out")
                bar.advance(task)
                continue
            owners.append(np.full(len(image), len(ids)))
            images.append(image.astype(np.float16, copy=False))
            ids.append(row.patient_id)
            labels.append(-1 if pd.isna(row.label) else int(row.label))
            bar.advance(task)
    if not ids:
        raise SarcogradeError("no patient has cached slices", path=index.path)
    return SliceSet(images=np.concatenate(images), patient_index=np.concatenate(owners),
                    patient_ids=ids, labels=np.asarray(labels, dtype=np.int64), sequence=sequence,
                    cache_config=cache_config,
                    cache_hash=index.content_hash(sequence, cache_config))


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _happens(generator: torch.Generator, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64) < p


@dataclass(frozen=True)
class AugmentDraws:
    """The random draws of `augment_batch` for n slices: CPU float64 tensors, one row a slice.

    `draw_augmentation` takes them from a generator; `apply_augmentation` resamples with them.
    Draws of several generators concatenated (`AugmentDraws.cat`) augment their batches, also
    concatenated, in one resampling, each slice as its own generator's `augment_batch` would.
    """

    crop: torch.Tensor          # (n,) side of the crop, 1 = none
    offset: torch.Tensor        # (n, 2) crop centre, in [-1, 1] x (1 - crop)
    zoom: torch.Tensor          # (n,) 1 = none
    angle: torch.Tensor         # (n,) radians
    flips: torch.Tensor         # (n, 2) -1 = flipped along x, y
    elastic: torch.Tensor       # (n,) bool: deformed or not
    displacement: torch.Tensor  # (n, 2, g, g) control-point displacements, normalised units

    def __len__(self) -> int:
        return len(self.crop)

    @classmethod
    def cat(cls, draws: "list[AugmentDraws]") -> "AugmentDraws":
        """The draws of several batches, in order, as the draws of their concatenation."""
        return cls(*(torch.cat([getattr(d, f.name) for d in draws]) for f in fields(cls)))


def draw_augmentation(n: int, params: AugmentParams, generator: torch.Generator) -> AugmentDraws:
    """`augment_batch`'s random draws for n slices, from `generator` (on the CPU) in its order."""
    crop = torch.where(_happens(generator, n, params.crop_p),
                       _uniform(generator, n, params.crop_min, 1.0), torch.ones(n, dtype=torch.float64))
    offset = (torch.rand(n, 2, generator=generator, dtype=torch.float64) * 2 - 1) * (1 - crop)[:, None]
    zoom = torch.where(_happens(generator, n, params.zoom_p),
                       _uniform(generator, n, *params.zoom), torch.ones(n, dtype=torch.float64))
    angle = torch.where(_happens(generator, n, params.rotate_p),
                        _uniform(generator, n, -params.rotate_deg, params.rotate_deg),
                        torch.zeros(n, dtype=torch.float64)) * math.pi / 180
    flips = torch.where(_happens(generator, 2 * n, params.flip_p), -1.0, 1.0).reshape(n, 2)
    elastic = _happens(generator, n, params.elastic_p)
    # An SD of elastic_sd x side is 2 x elastic_sd in normalised units.
    displacement = torch.randn(n, 2, params.elastic_grid, params.elastic_grid,
                               generator=generator, dtype=torch.float64) * (2 * params.elastic_sd)
    return AugmentDraws(crop, offset, zoom, angle, flips, elastic, displacement)


@dataclass(frozen=True)
class Resampling:
    """The draws of n slices as the resampling uses them, float32: in normalised coordinates
    ([-1, 1] across the slice) output pixel u samples the input at `linear` u + `shift` +
    elastic(u), elastic(u) interpolating the control-point `displacement` (zero where a slice
    is not deformed). Fixed shapes whatever was drawn, so a CUDA graph can replay it."""

    linear: torch.Tensor        # (n, 2, 2): flip(rotate(zoom(crop(u))))
    shift: torch.Tensor         # (n, 2)
    displacement: torch.Tensor  # (n, 2, g, g)

    @classmethod
    def of(cls, draws: AugmentDraws) -> "Resampling":
        """Computed on the host in float64 from the draws, then rounded to float32."""
        crop = draws.crop
        cos, sin = torch.cos(draws.angle), torch.sin(draws.angle)
        rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        linear = draws.flips[:, :, None] * rotation * (crop / draws.zoom)[:, None, None]
        shift = (linear @ (draws.offset / crop[:, None])[:, :, None])[:, :, 0]
        displacement = draws.displacement * draws.elastic[:, None, None, None]
        return cls(linear.float(), shift.float(), displacement.float())

    def to(self, device: torch.device) -> "Resampling":
        return Resampling(*(to_device(getattr(self, f.name), device) for f in fields(self)))

    def copy_(self, other: "Resampling") -> None:
        """Fill these tensors (a CUDA graph's inputs) with `other`'s, from the host without
        waiting for the device."""
        for f in fields(self):
            getattr(self, f.name).copy_(to_device(getattr(other, f.name),
                                                  getattr(self, f.name).device))


def resample(images: torch.Tensor, resampling: Resampling) -> torch.Tensor:
    """A batch `(n, S, S)` resampled in one `grid_sample`, `resampling` on its device; float32."""
    n, size = images.shape[0], images.shape[-1]
    if len(resampling.linear) != n:
        raise ValueError(f"{len(resampling.linear)} slices' draws for a batch of {n}")
    a = resampling.linear[:, :, :, None, None]
    # The sampling grid written out (what F.affine_grid computes, without its batched matmul):
    # pixel centres at (2i + 1) / S - 1, x along the width. Held as (n, 2, S, S), x then y, and
    # handed to grid_sample as a (n, S, S, 2) view: no interleaving copy.
    centres = (torch.arange(size, device=images.device, dtype=torch.float32) * 2 + 1) / size - 1
    grid = a[:, :, 0] * centres[None, None, None, :] + a[:, :, 1] * centres[None, None, :, None]
    grid += resampling.shift[:, :, None, None]
    # Smooth displacement: the control points interpolated bicubically (separable: M C M^T); it
    # adds exactly zero to a slice that is not deformed.
    m = _cubic_interpolation_matrix(resampling.displacement.shape[-1], size, str(images.device))
    grid += m @ resampling.displacement @ m.T
    out = F.grid_sample(images[:, None].float(), grid.permute(0, 2, 3, 1),
                        mode="bilinear", padding_mode="reflection", align_corners=False)
    return out[:, 0]


def apply_augmentation(images: torch.Tensor, draws: AugmentDraws) -> torch.Tensor:
    """Resample a batch `(n, S, S)` with the draws of n slices in one `grid_sample` (see
    `augment_batch`); float32 `(n, S, S)` on the images' device."""
    return resample(images, Resampling.of(draws).to(images.device))


def augment_batch(images: torch.Tensor, params: AugmentParams,
                  generator: torch.Generator) -> torch.Tensor:
    """Randomly flip, rotate, zoom, deform and crop-resize a batch `(B, S, S)` in one resampling.

    The random draws come from `generator` (on the CPU, in a fixed order), so the result depends
    only on its seed, not on the device. Outside the slice the image is mirrored, which keeps
    tissue texture at the border instead of a black frame. It is `apply_augmentation(images,
    draw_augmentation(B, params, generator))`.
    """
    return apply_augmentation(images, draw_augmentation(images.shape[0], params, generator))


@functools.lru_cache(maxsize=8)
def _cubic_interpolation_matrix(n_in: int, n_out: int, device: str) -> torch.Tensor:
    """(n_out, n_in): 1-D bicubic interpolation (align_corners) of n_in points to n_out."""
    basis = torch.eye(n_in).reshape(n_in, 1, n_in, 1)
    columns = F.interpolate(basis, size=(n_out, 1), mode="bicubic", align_corners=True)
    return columns.reshape(n_in, n_out).T.contiguous().to(device)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch of the fold seeded `seed`: independent of what ran before it."""
    return int(seed) * 1_000_003 + int(epoch)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of one epoch (shuffling and augmentation) of the fold seeded `seed`."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch))
