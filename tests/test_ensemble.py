"""sarcograde.ensemble: the paper's aggregation and the precision choice, shared by train's
validation, predict and explain; checked against scipy's softmax computed independently."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax

from sarcograde import model as model_lib
from sarcograde.ensemble import (Ensemble, aggregate, patients_p_high, resolve_precision,
                                 slice_logits, slice_p_high)


def test_aggregate_is_the_softmax_of_mean_logits_over_models_and_slices():
    logits = np.random.default_rng(0).normal(size=(3, 5, 2)).astype(np.float32)
    p_high, per_model = aggregate(logits)
    assert p_high == pytest.approx(softmax(logits.reshape(-1, 2).mean(0))[1])
    np.testing.assert_allclose(per_model, [softmax(m.mean(0))[1] for m in logits], rtol=1e-6)
    p_prob, _ = aggregate(logits, "probabilities")
    assert p_prob == pytest.approx(softmax(logits, axis=-1)[..., 1].mean())
    np.testing.assert_allclose(slice_p_high(logits), softmax(logits.mean(0), axis=-1)[:, 1],
                               rtol=1e-6)


def test_train_validation_aggregates_as_predict_does():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(9, 2))
    owner = np.array([2, 0, 0, 1, 2, 2, 1, 0, 2])
    got = patients_p_high(logits, owner, 3)
    expected = [aggregate(logits[None, owner == k])[0] for k in range(3)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_automatic_precision_is_fp32_on_the_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("fp32", cpu) is None


def test_stacked_ensemble_gives_each_model_its_own_logits(one_torch_thread):
    cfg = {"architecture": "densenet", "init_features": 8, "growth_rate": 4, "block_config": [2, 2]}
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(model_lib.build_model(cfg).eval())
    meta = model_lib.input_meta(32, pretrained=False)
    ensemble = Ensemble(run_dir=None, names=["a", "b", "c"], models=models,
                        metas=[{"input": meta}] * 3, device=torch.device("cpu"), key="k")
    images = np.random.default_rng(2).normal(size=(11, 32, 32)).astype(np.float16)
    alone = slice_logits(ensemble, images, batch_size=4, stacked=False)
    together = slice_logits(ensemble, images, batch_size=4, stacked=True)
    assert together.shape == (3, 11, 2)
    assert np.abs(alone[0] - alone[1]).max() > 1e-3  # three different models
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)
    # The models stay usable one by one (explain's Grad-CAM hooks them) after stacking.
    np.testing.assert_array_equal(slice_logits(ensemble, images, batch_size=4, stacked=False),
                                  alone)
