"""Cache loading and batch augmentation (sarcograde.data).

Caches with a planted, learnable grade signal come from tests/fakes.py (`graded_cache`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from sarcograde.data import (AugmentDraws, AugmentParams, Resampling, apply_augmentation,
                             augment_batch, draw_augmentation, epoch_generator, load_slices)
from sarcograde.errors import SarcogradeError
from fakes import SIZE, cohort, graded_cache, tumour_slices

def test_load_slices_reads_every_patient(tmp_path):
    cache = graded_cache(tmp_path, cohort(3, 4, 1))
    index = pd.read_csv(cache / "index.csv", dtype={"patient_id": str})
    s = load_slices(cache)
    assert s.patient_ids == index["patient_id"].tolist()
    assert s.images.dtype == np.float16 and s.images.shape[1:] == (SIZE, SIZE)
    assert len(s.images) == index["n_slices"].sum()
    assert s.labels.tolist() == [0, 0, 0, 1, 1, 1, 1, -1]
    for i, pid in enumerate(s.patient_ids):
        own = np.load(cache / "patients" / f"{pid}.npz")["image"]
        np.testing.assert_array_equal(s.images[s.slices_of(np.array([i]))], own)
    assert s.size == SIZE and s.sequence == "T1"


def test_cache_hash_follows_content(tmp_path):
    a = load_slices(graded_cache(tmp_path / "a", cohort(2, 2), seed=0)).cache_hash
    b = load_slices(graded_cache(tmp_path / "b", cohort(2, 2), seed=0)).cache_hash
    c = load_slices(graded_cache(tmp_path / "c", cohort(2, 2), seed=1)).cache_hash
    assert a == b != c


def test_bad_cache_names_patient_and_file(tmp_path):
    cache = graded_cache(tmp_path, cohort(2, 2))
    (cache / "patients" / "H01.npz").write_bytes(b"not a zip")
    with pytest.raises(SarcogradeError, match=r"^H01: .*H01\.npz: cannot read"):
        load_slices(cache)
    (cache / "patients" / "H01.npz").unlink()
    with pytest.raises(SarcogradeError, match=r"^H01: .*H01\.npz: cached slices not found"):
        load_slices(cache)
    with pytest.raises(SarcogradeError, match="index.csv"):
        load_slices(tmp_path / "nowhere")


def test_augment_is_seeded_and_keeps_shape():
    x = torch.from_numpy(tumour_slices(np.random.default_rng(0), 6, True)).float()
    params = AugmentParams(elastic_p=1.0)
    a = augment_batch(x, params, epoch_generator(3, 1))
    b = augment_batch(x, params, epoch_generator(3, 1))
    c = augment_batch(x, params, epoch_generator(3, 2))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augment_flips_exactly():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 8, 8)
    none = AugmentParams(flip_p=0, rotate_p=0, zoom_p=0, crop_p=0, elastic_p=0)
    torch.testing.assert_close(augment_batch(x, none, torch.Generator()), x)
    flip_both = AugmentParams(flip_p=1, rotate_p=0, zoom_p=0, crop_p=0, elastic_p=0)
    torch.testing.assert_close(augment_batch(x, flip_both, torch.Generator()),
                               torch.flip(x, dims=(1, 2)))


def test_crop_resize_matches_a_cropped_ramp():
    # On a linear ramp, a crop of side c resized back is again a ramp with slope c: check it.
    size = 33
    ramp = torch.linspace(-1, 1, size)[None, None, :].expand(4, size, size).contiguous()
    params = AugmentParams(flip_p=0, rotate_p=0, zoom_p=0, crop_p=1, crop_min=0.5, elastic_p=0)
    out = augment_batch(ramp, params, torch.Generator().manual_seed(0))
    slopes = (out[:, :, 1:] - out[:, :, :-1]).mean(dim=(1, 2)) / (2 / (size - 1))
    assert ((slopes > 0.5 - 1e-4) & (slopes < 1 + 1e-4)).all() and slopes.std() > 0
    assert (out.amin(dim=(1, 2)) >= -1 - 1e-5).all() and (out.amax(dim=(1, 2)) <= 1 + 1e-5).all()


def test_rotation_keeps_a_centred_disc():
    size = 32
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disc = (((yy - 15.5) ** 2 + (xx - 15.5) ** 2) < 8 ** 2).float()[None].repeat(8, 1, 1)
    params = AugmentParams(flip_p=0, rotate_p=1, rotate_deg=90, zoom_p=0, crop_p=0, elastic_p=0)
    out = augment_batch(disc, params, torch.Generator().manual_seed(1))
    assert torch.allclose(out.sum(dim=(1, 2)), disc.sum(dim=(1, 2)), rtol=0.02)


def test_augment_params_from_config():
    assert AugmentParams.from_config(False) is None
    assert AugmentParams.from_config(True) == AugmentParams()
    assert AugmentParams.from_config({"zoom": [0.8, 1.2]}).zoom == (0.8, 1.2)
    with pytest.raises(SarcogradeError, match="unknown setting train.augment.shear"):
        AugmentParams.from_config({"shear": 1})


def test_elastic_field_is_smooth_and_sized_as_asked():
    # On a ramp equal to the normalised x coordinate, the output minus the ramp IS the field's
    # x displacement (bilinear sampling is exact on a linear image).
    size = 64
    centres = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    ramp = centres[None, None, :].expand(16, size, size).contiguous()
    params = AugmentParams(flip_p=0, rotate_p=0, zoom_p=0, crop_p=0, elastic_p=1,
                           elastic_sd=0.02)
    out = augment_batch(ramp, params, torch.Generator().manual_seed(5))
    inner = slice(8, -8)  # away from the mirrored border
    shift = (out - ramp)[:, inner, inner]
    assert 0.02 < shift.std().item() < 0.06  # SD 2 x 0.02 at the control points, in [-1, 1] units
    curvature = shift[:, :, 2:] - 2 * shift[:, :, 1:-1] + shift[:, :, :-2]
    assert curvature.abs().max().item() < 0.1 * shift.abs().max().item()


@pytest.mark.parametrize("elastic_p", [0.0, 1.0, 0.5])
def test_batched_draws_augment_each_batch_as_its_own_generator(elastic_p):
    # Stacked training augments K folds' batches in one resampling: each fold's slices must be
    # exactly those augment_batch gives it alone, and its generator left where it would be.
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(tumour_slices(rng, n, True)).float() for n in (5, 7, 6)]
    params = AugmentParams(elastic_p=elastic_p)
    alone_gens = [epoch_generator(seed, 4) for seed in (0, 1, 2)]
    alone = [augment_batch(x, params, g) for x, g in zip(batches, alone_gens)]
    gens = [epoch_generator(seed, 4) for seed in (0, 1, 2)]
    draws = AugmentDraws.cat([draw_augmentation(len(x), params, g) for x, g in zip(batches, gens)])
    together = apply_augmentation(torch.cat(batches), draws)
    deformed = int(draws.elastic.sum())  # none, all, or a mixture of the 18 slices
    assert len(draws) == 18 and deformed == {0.0: 0, 1.0: 18}.get(elastic_p, deformed)
    assert elastic_p != 0.5 or 0 < deformed < 18
    assert torch.equal(together, torch.cat(alone))  # bit-identical on the CPU
    for g, g_alone in zip(gens, alone_gens):
        assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=g_alone))


def test_a_slice_not_deformed_ignores_its_drawn_displacement():
    # The resampling has the same shapes whatever was drawn (a CUDA graph replays it): every
    # slice's displacement is interpolated, and a slice not deformed must get exactly none.
    rng = np.random.default_rng(1)
    x = torch.from_numpy(tumour_slices(rng, 8, True)).float()
    draws = draw_augmentation(8, AugmentParams(elastic_p=0.5), epoch_generator(3, 1))
    kept = ~draws.elastic
    assert 0 < int(kept.sum()) < 8 and draws.displacement[kept].abs().min() > 0
    resampling = Resampling.of(draws)
    assert resampling.displacement.shape == (8, 2, *draws.displacement.shape[-2:])
    no_displacement = replace(draws, displacement=torch.zeros_like(draws.displacement))
    assert torch.equal(apply_augmentation(x, draws)[kept],
                       apply_augmentation(x, no_displacement)[kept])
    assert not torch.equal(apply_augmentation(x, draws)[~kept],
                           apply_augmentation(x, no_displacement)[~kept])


def test_draws_must_match_the_batch():
    draws = draw_augmentation(3, AugmentParams(), torch.Generator())
    with pytest.raises(ValueError, match="3 slices' draws for a batch of 4"):
        apply_augmentation(torch.zeros(4, 8, 8), draws)
