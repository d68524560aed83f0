"""Baselines: tumour volumes from masks (cached), features, CV splits, fold-model ensembles."""

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from sarcograde import baselines as bl
from sarcograde.cohort import Patient
from sarcograde.errors import SarcogradeError


def _mask(path, voxels: int, spacing=(0.5, 0.8, 3.0)):
    array = np.zeros((6, 10, 10), np.uint8)
    array.flat[:voxels] = 1
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def _patient(pid, mask, **clinical):
    return Patient(pid, 2, 2, images={"T1": mask}, masks={"T1": mask}, clinical=clinical)


def test_tumour_volume_is_voxels_times_voxel_volume_and_cached(tmp_path, monkeypatch):
    patients = [_patient("A", _mask(tmp_path / "a.nii.gz", 40)),
                _patient("B", _mask(tmp_path / "b.nii.gz", 7, spacing=(1, 1, 1)))]
    cache = tmp_path / "eval" / "volumes.csv"
    volumes = bl.tumour_volumes(patients, "T1", cache)
    assert volumes == pytest.approx({"A": 40 * 0.5 * 0.8 * 3.0 / 1000, "B": 7 / 1000})

    def no_reading(*args):
        raise AssertionError("a cached volume was measured again")
    monkeypatch.setattr(bl, "_measure_volume", no_reading)
    assert bl.tumour_volumes(patients, "T1", cache) == volumes
    _mask(tmp_path / "b.nii.gz", 9, spacing=(1, 1, 1))  # the mask changed: measure again
    monkeypatch.undo()
    assert bl.tumour_volumes(patients, "T1", cache)["B"] == pytest.approx(9 / 1000)
    assert pd.read_csv(cache)["voxels"].tolist() == [40, 9]


def test_empty_or_missing_mask_names_patient_and_file(tmp_path):
    empty = _patient("E", _mask(tmp_path / "e.nii.gz", 0))
    with pytest.raises(SarcogradeError, match=r"^E: .*e\.nii\.gz: empty mask"):
        bl.tumour_volumes([empty], "T1", tmp_path / "v.csv")
    gone = _patient("G", tmp_path / "gone.nii.gz")
    with pytest.raises(SarcogradeError, match=r"^G: .*gone\.nii\.gz: file not found"):
        bl.tumour_volumes([gone], "T1", tmp_path / "v.csv")


def test_a_sequence_without_its_own_contour_takes_the_drawn_volume(tmp_path):
    drawn = _mask(tmp_path / "t1.nii.gz", 40)
    patient = Patient("C", 2, 2, images={"T1": drawn, "T2": tmp_path / "t2.nii.gz"},
                      masks={"T1": drawn})
    volumes = bl.tumour_volumes([patient], "T2", tmp_path / "v.csv")
    assert volumes == pytest.approx({"C": 40 * 0.5 * 0.8 * 3.0 / 1000})
    assert pd.read_csv(tmp_path / "v.csv")["mask"].tolist() == [str(drawn)]
    with pytest.raises(SarcogradeError, match=r"^D: no mask_T2 given"):
        bl.tumour_volumes([Patient("D", 2, 2, images={"T2": drawn})], "T2", tmp_path / "w.csv")


def test_feature_table_logs_the_volume_and_keeps_missing_values():
    patients = [Patient("A", 2, 1, clinical={"t_stage": 2, "n_stage": 0, "m_stage": 0, "age": 61}),
                Patient("B", 3, 3, clinical={"t_stage": None, "n_stage": 1, "m_stage": 1,
                                             "age": 40})]
    table = bl.feature_table(patients, {"A": 250.0})
    assert table.loc["A", "log_volume_ml"] == pytest.approx(np.log(250))
    assert np.isnan(table.loc["B", "log_volume_ml"]) and np.isnan(table.loc["B", "t_stage"])
    assert list(table.columns) == list(bl.CLINICAL + bl.VOLUME)


def _training_cohort(n=60, seed=0):
    rng = np.random.default_rng(seed)
    labels = pd.Series((rng.random(n) < 0.65).astype(int), index=[f"P{i:02d}" for i in range(n)])
    features = pd.DataFrame({
        "t_stage": rng.integers(1, 3, n).astype(float), "n_stage": (rng.random(n) < 0.1) * 1.0,
        "m_stage": (rng.random(n) < 0.1) * 1.0, "age": rng.normal(55, 15, n),
        "log_volume_ml": np.log(100) + 0.8 * labels.to_numpy() + rng.normal(0, 0.7, n)},
        index=labels.index)
    features.iloc[3, 3] = np.nan  # one missing age
    return features, labels


def test_stratified_splits_cover_each_patient_once_per_repeat():
    features, labels = _training_cohort()
    splits = bl.stratified_splits(list(labels.index), labels.to_numpy(), 5, 3, seed=1)
    assert [s.name for s in splits] == [f"fold_{i:02d}" for i in range(15)]
    for repeat in range(3):
        val = [pid for s in splits if s.repeat == repeat for pid in s.val]
        assert sorted(val) == sorted(labels.index)
    for s in splits:
        assert not set(s.train) & set(s.val)
        share = labels.loc[list(s.val)].mean()
        assert share == pytest.approx(labels.mean(), abs=0.1)  # stratified by grade
    again = bl.stratified_splits(list(labels.index), labels.to_numpy(), 5, 3, seed=1)
    assert again == splits


def test_fit_baseline_is_the_mean_of_fold_pipelines_with_training_median_imputation():
    features, labels = _training_cohort()
    splits = bl.stratified_splits(list(labels.index), labels.to_numpy(), 3, 2, seed=2)
    fit = bl.fit_baseline(features, labels, splits, bl.BASELINES["clinical_volume"])
    assert len(fit.models) == 6
    oof = fit.cv_predictions
    assert len(oof) == 2 * len(labels) and oof.groupby("repeat").size().tolist() == [60] * 2

    test = features.iloc[:5].copy()
    test.iloc[0, 3] = np.nan
    expected = []
    for split in splits:  # the same pipeline refitted by hand, then imputed by hand
        train = features.loc[list(split.train)]
        x = test.to_numpy(float).copy()
        x[0, 3] = np.nanmedian(train["age"])
        reference = bl.make_model().fit(train.fillna(train.median()).to_numpy(float),
                                        labels.loc[list(split.train)])
        expected.append(reference.predict_proba(x)[:, 1])
    np.testing.assert_allclose(fit.predict(test), np.mean(expected, axis=0), rtol=1e-6)


def test_volume_baseline_learns_the_volume_signal():
    features, labels = _training_cohort(n=200, seed=3)
    splits = bl.stratified_splits(list(labels.index), labels.to_numpy(), 5, 1, seed=0)
    fit = bl.fit_baseline(features, labels, splits, bl.VOLUME)
    from sklearn.metrics import roc_auc_score
    oof = fit.cv_predictions.set_index("patient_id").loc[labels.index]
    assert roc_auc_score(labels, oof["p_high"]) > 0.65


def test_single_class_fold_is_refused():
    features, labels = _training_cohort()
    high = tuple(labels.index[labels == 1][:10])
    split = bl.Split("fold_00", 0, 0, high, tuple(labels.index[:3]))
    with pytest.raises(ValueError, match="one grade class"):
        bl.fit_baseline(features, labels, [split], bl.CLINICAL)
