"""Tests of `sarcograde synth`: determinism, valid cohorts, grade signal, sites, clinical data."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist
from sklearn.metrics import roc_auc_score

from sarcograde.cli import main
from sarcograde.cohort import load_manifest
from sarcograde.errors import SarcogradeError
from sarcograde.io import grid_mismatches, orientation_code, read_image, read_mask
from sarcograde.synth import make_cohort, site_profile
from sarcograde.synth.patients import (HAZARD_RATIOS, draw_clinical, draw_grades, draw_grid,
                                       sample_cohort, t_stage)
from sarcograde.synth.phantom import TumourLattice, contrast, render


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` but run.json, which records the time by design."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "run.json"}


def physical_points(image: sitk.Image, index_zyx: np.ndarray) -> np.ndarray:
    direction = np.array(image.GetDirection()).reshape(3, 3)
    xyz = index_zyx[:, ::-1] * np.array(image.GetSpacing())
    return np.array(image.GetOrigin()) + xyz @ direction.T


def mask_diameter_mm(mask: sitk.Image) -> float:
    """Largest distance between two tumour voxel centres (via the convex hull)."""
    points = physical_points(mask, np.argwhere(sitk.GetArrayViewFromImage(mask) > 0))
    return float(pdist(points[ConvexHull(points).vertices]).max())


@pytest.fixture(scope="module")
def cohort20(tmp_path_factory) -> Path:
    # siteA's own profile, with coarser voxels to keep the test fast on two cores.
    return make_cohort(tmp_path_factory.mktemp("synth20"), 20, "siteA", seed=7,
                       pixel_mm=(0.9, 1.0), slice_mm=(5.0, 6.0))


@pytest.fixture(scope="module")
def mixed_pair(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two cohorts with one seed and one with another; three orientations in each."""
    base = tmp_path_factory.mktemp("synth_mixed")
    site = {"orientations": ("LPS", "RAS", "PLI"), "pixel_mm": (0.9, 1.0), "slice_mm": 6.0}
    return tuple(make_cohort(base / name, 3, "hospX", seed=seed, **site).parent
                 for name, seed in (("a", 11), ("b", 11), ("c", 12)))


def test_same_seed_gives_byte_identical_files(mixed_pair):
    first, second, _ = mixed_pair
    hashes = file_hashes(first)
    assert len([name for name in hashes if name.startswith(("images/", "masks/"))]) == 12
    assert {"manifest.csv", "truth.csv", "synth.json"} <= set(hashes)
    assert hashes == file_hashes(second)
    # gzip stores a modification time in bytes 4-8: it must be zero, or the bytes would differ.
    for name in hashes:
        if name.endswith(".gz"):
            assert (first / name).read_bytes()[4:8] == b"\0\0\0\0", name
    assert json.loads((first / "run.json").read_text(encoding="utf-8"))["status"] == "finished"


def test_different_seed_gives_different_images(mixed_pair):
    first, _, other = mixed_pair
    a, b = file_hashes(first), file_hashes(other)
    images = [name for name in a if name.startswith("images/")]
    assert images and all(a[name] != b[name] for name in images)


def test_manifest_is_valid_and_every_mask_fits_its_image(cohort20):
    cohort = load_manifest(cohort20, strict=True)
    assert cohort.sequences == ["T1FSGd", "T2FS"]
    assert [p.patient_id for p in cohort] == [f"siteA-{i:03d}" for i in range(1, 21)]
    assert all(p.site == "siteA" and p.grade in (1, 2, 3) for p in cohort)
    assert all(value is not None for p in cohort for value in p.clinical.values())
    raw = pd.read_csv(cohort20)
    assert not any(Path(v).is_absolute() for c in raw if c.startswith(("image_", "mask_"))
                   for v in raw[c])
    for patient in cohort:
        for seq in cohort.sequences:
            image, mask = read_image(patient.images[seq]), read_mask(patient.masks[seq])
            assert image.GetPixelID() == sitk.sitkInt16
            assert grid_mismatches(image, mask) == []
            values = np.unique(sitk.GetArrayViewFromImage(mask))
            assert values.tolist() == [0, 1], (patient.patient_id, seq)
            # The field of view holds the whole tumour and the whole limb, with air around it.
            tumour = sitk.GetArrayViewFromImage(mask)
            pixels = sitk.GetArrayViewFromImage(image)
            air = 0.1 * np.median(pixels[tumour > 0])
            for axis in range(3):
                for end in (0, -1):
                    assert not np.take(tumour, end, axis=axis).any()
                    if axis > 0:   # in-plane edges
                        assert np.median(np.take(pixels, end, axis=axis)) < air


def test_check_accepts_the_synthetic_cohort(cohort20, tmp_path):
    assert main(["check", str(cohort20), "--out", str(tmp_path)]) == 0
    qa = pd.read_csv(tmp_path / "qa.csv")
    assert len(qa) == 40 and qa["usable"].all()


def image_features(manifest: Path, sequence: str) -> pd.DataFrame:
    """Simple image features of one sequence per patient, the same for every sequence: the
    coefficient of variation of the tumour core (the mask eroded by 2 mm in-plane), the share of
    tumour voxels darker than 0.6 x its median, and the share of a 1-5 mm ring outside the mask
    brighter than 0.5 x the tumour's median (in-plane, slices being thick)."""
    rows = []
    for patient in load_manifest(manifest, strict=True):
        image = sitk.GetArrayFromImage(read_image(patient.images[sequence])).astype(float)
        mask_image = read_mask(patient.masks[sequence])
        mask = sitk.GetArrayFromImage(mask_image).astype(bool)
        in_plane = np.zeros((1, 3, 3), bool)
        in_plane[0] = True
        pixel = mask_image.GetSpacing()[0]
        ring = ndimage.binary_dilation(mask, in_plane, iterations=round(5 / pixel)) \
            & ~ndimage.binary_dilation(mask, in_plane, iterations=round(1 / pixel))
        core = image[ndimage.binary_erosion(mask, in_plane, iterations=round(2 / pixel))]
        inside = image[mask]
        median = np.median(inside)
        rows.append({"patient_id": patient.patient_id, "label": patient.label,
                     "cv": core.std() / core.mean(), "dark": np.mean(inside < 0.6 * median),
                     "ring": np.mean(image[ring] > 0.5 * median)})
    return pd.DataFrame(rows).set_index("patient_id")


def test_grade_features_are_drawn_with_their_grade_dependent_probability(cohort20):
    from sarcograde.synth.patients import FEATURE_PROBABILITY, draw_features

    rng = np.random.default_rng(0)
    n = 4000
    for grade in (1, 2, 3):
        shares = pd.DataFrame([draw_features(rng, grade) for _ in range(n)]).mean()
        for name, p in FEATURE_PROBABILITY.items():
            expected = p[grade - 1]
            assert abs(shares[name] - expected) < 3 * np.sqrt(expected * (1 - expected) / n)
    # Each feature in some low-grade and missed in some high-grade tumours: none decides alone.
    assert all(0 < p[0] < p[1] < 1 and p[2] >= p[1] for name, p in FEATURE_PROBABILITY.items()
               if name != "capsule")
    truth = pd.read_csv(cohort20.parent / "truth.csv")
    assert not (truth["capsule"] & truth["lobulated"]).any()
    lobulated = truth["lobulated"] == 1
    assert truth.loc[lobulated, "lobes"].min() > truth.loc[~lobulated, "lobes"].max()


@pytest.fixture(scope="module")
def cohort64(tmp_path_factory) -> Path:
    """A larger cohort with coarse voxels, for statistics of the grade signal."""
    return make_cohort(tmp_path_factory.mktemp("synth64"), 64, "siteA", seed=1,
                       pixel_mm=(1.5, 1.6), slice_mm=(5.0, 6.0))


@pytest.fixture(scope="module")
def features64(cohort64) -> dict[str, pd.DataFrame]:
    return {seq: image_features(cohort64, seq) for seq in ("T1FSGd", "T2FS")}


@pytest.mark.slow
def test_each_feature_shows_on_its_own_sequence(cohort64, features64):
    truth = pd.read_csv(cohort64.parent / "truth.csv").set_index("patient_id")
    t1, t2 = features64["T1FSGd"], features64["T2FS"]
    necrotic, oedema = truth["necrosis"] > 0, truth["oedema"] > 0
    # The non-enhancing core is dark on T1FSGd, nearly isointense on T2FS.
    assert roc_auc_score(necrotic, t1["dark"]) > 0.9 and roc_auc_score(necrotic, t2["dark"]) < 0.65
    # Oedema brightens the ring outside the mask on T2FS, barely on T1FSGd (where a necrotic
    # core, lowering the tumour's median, is left out).
    plain = ~necrotic
    assert roc_auc_score(oedema, t2["ring"]) > 0.95
    assert roc_auc_score(oedema[plain], t1["ring"][plain]) < 0.7
    # Texture: each sequence's own heterogeneity drives the variation of the core it shows.
    def correlation(feature: str, sequence: pd.DataFrame) -> float:
        return float(np.corrcoef(truth[feature][plain], sequence["cv"][plain])[0, 1])

    assert correlation("enhancement_heterogeneity", t1) > 0.95
    assert correlation("t2_heterogeneity", t2) > 0.95
    assert correlation("t2_heterogeneity", t1) < 0.75 and correlation(
        "enhancement_heterogeneity", t2) < 0.75


@pytest.mark.slow
def test_one_sequence_grades_imperfectly_and_both_grade_better(features64):
    """Logistic regression on each sequence's image features, cross-validated (5 folds x 5
    repeats): AUC in a clinical band well below 1 for each, higher with both."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t1 = features64["T1FSGd"].add_prefix("T1FSGd_").rename(columns={"T1FSGd_label": "label"})
    both = t1.join(features64["T2FS"].drop(columns="label").add_prefix("T2FS_"))
    label = both.pop("label").to_numpy()

    def cv_auc(columns: list[str]) -> float:
        model = make_pipeline(StandardScaler(), LogisticRegression())
        return float(np.mean([roc_auc_score(label, cross_val_predict(
            model, both[columns], label, method="predict_proba",
            cv=StratifiedKFold(5, shuffle=True, random_state=repeat))[:, 1])
            for repeat in range(5)]))

    auc = {seq: cv_auc([c for c in both if c.startswith(seq)]) for seq in ("T1FSGd", "T2FS")}
    combined = cv_auc(list(both.columns))
    assert all(0.65 < value < 0.9 for value in auc.values()), auc
    assert combined > max(auc.values()), (auc, combined)


def test_low_grade_share_is_the_requested_fraction(cohort20):
    grades = pd.read_csv(cohort20)["grade"]
    assert (grades == 1).sum() == round(0.35 * 20)
    for n, fraction in ((200, 0.15), (57, 0.35), (10, 0.0)):
        drawn = np.array(draw_grades(n, fraction, seed=3, site="siteB"))
        assert (drawn == 1).sum() == round(fraction * n)
        assert set(drawn) <= {1, 2, 3}


def test_t_stage_and_volume_follow_the_tumour_in_the_mask(cohort20):
    assert t_stage(50.0) == "T1b" and t_stage(50.1) == "T2b"   # AJCC 7: T2 above 5 cm
    manifest = pd.read_csv(cohort20)
    truth = pd.read_csv(cohort20.parent / "truth.csv").set_index("patient_id")
    for _, row in manifest.iterrows():
        mask = sitk.ReadImage(str(cohort20.parent / row["mask_T2FS"]))
        spacing = mask.GetSpacing()
        measured = mask_diameter_mm(mask)
        drawn = truth.loc[row["patient_id"], "longest_diameter_mm"]
        # Voxel centres can miss up to one slice of the length, never add to it.
        assert drawn - max(spacing) - 1.0 <= measured <= drawn + 1.0, row["patient_id"]
        assert row["t_stage"] == t_stage(drawn)
        if abs(measured - 50) > max(spacing) + 1.0:
            assert row["t_stage"] == ("T2b" if measured > 50 else "T1b"), row["patient_id"]
        volume_ml = sitk.GetArrayViewFromImage(mask).sum() * np.prod(spacing) / 1000
        assert volume_ml == pytest.approx(truth.loc[row["patient_id"], "tumour_volume_ml"],
                                          rel=0.03)


def test_sites_differ_and_follow_their_configuration():
    assert site_profile("siteA") == site_profile("siteA")
    profiles = [site_profile(name) for name in ("siteA", "siteB", "siteC", "siteD")]
    assert len({(p.pixel_mm, p.slice_mm, p.orientations, p.scale) for p in profiles}) == 4
    for profile in profiles:
        assert 0.68 <= profile.pixel_mm[0] <= profile.pixel_mm[1] <= 1.0
        assert 3.0 <= profile.slice_mm[0] <= profile.slice_mm[1] <= 6.0

    fine = site_profile("fine", pixel_mm=(0.7, 0.75), slice_mm=3, orientations=("LPS",))
    coarse = site_profile("coarse", pixel_mm=1.0, slice_mm=(5.5, 6.0), orientations=("RAS", "LPI"))
    for profile in (fine, coarse):
        specs = sample_cohort(12, profile, seed=5, sequences=("T1FSGd", "T2FS"))
        grids = [g for s in specs for g in s.grids.values()]
        assert all(profile.pixel_mm[0] <= g.spacing[0] == g.spacing[1] <= profile.pixel_mm[1]
                   for g in grids)
        assert all(profile.slice_mm[0] <= g.spacing[2] <= profile.slice_mm[1] for g in grids)
        assert {g.orientation for g in grids} == set(profile.orientations)


def test_each_sequence_is_its_own_acquisition():
    profile = site_profile("hospY", orientations=("LPS", "RAS", "PLI"), pixel_mm=(0.8, 1.0),
                           slice_mm=(3.0, 6.0))
    specs = sample_cohort(12, profile, seed=5, sequences=("T1FSGd", "T2FS"))
    grids = [(spec.grids["T1FSGd"], spec.grids["T2FS"]) for spec in specs]
    assert any(a.orientation != b.orientation for a, b in grids)
    assert all(a.spacing != b.spacing for a, b in grids)
    # One anatomy: both grids are centred on the same field of view in scanner space.
    for spec, (a, b) in zip(specs, grids):
        centres = [np.array(g.origin) + np.array(g.direction).reshape(3, 3)
                   @ (np.array(g.spacing) * (np.array(g.size) - 1) / 2) for g in (a, b)]
        np.testing.assert_allclose(centres[0], centres[1], atol=1e-6)


def test_missing_mask_leaves_the_cell_empty_and_the_contour_is_carried(tmp_path):
    from sarcograde.masks import mask_source, read_patient_mask

    settings = {"n_patients": 3, "site": "hospM", "seed": 3, "pixel_mm": (1.4, 1.5),
                "slice_mm": 5.0, "orientations": ("LPS", "RAS", "PLI")}
    full = make_cohort(tmp_path / "full", **settings)
    part = make_cohort(tmp_path / "part", missing_masks=("T2FS",), **settings)
    manifest = pd.read_csv(part, dtype=str, keep_default_na=False)
    assert (manifest["mask_T2FS"] == "").all() and (manifest["mask_T1FSGd"] != "").all()
    assert sorted(p.name for p in (part.parent / "masks").iterdir()) == [
        f"hospM-00{i}_T1FSGd.nii.gz" for i in (1, 2, 3)]
    same = file_hashes(full.parent)
    assert all(same[name] == digest for name, digest in file_hashes(part.parent).items()
               if name.startswith(("images/", "masks/")))
    assert main(["check", str(part), "--out", str(tmp_path / "qa")]) == 0
    qa = pd.read_csv(tmp_path / "qa" / "qa.csv")
    assert qa.loc[qa.sequence == "T2FS", "mask_source"].tolist() == ["carried:T1FSGd"] * 3
    # The carried contour matches the one the generator drew on T2FS's own grid.
    for patient in load_manifest(part, strict=True):
        image = read_image(patient.images["T2FS"])
        carried = sitk.GetArrayFromImage(read_patient_mask(patient.patient_id, image,
                                                           mask_source(patient, "T2FS"))) > 0
        drawn = sitk.GetArrayFromImage(read_mask(
            full.parent / "masks" / f"{patient.patient_id}_T2FS.nii.gz")) > 0
        dice = 2 * np.count_nonzero(carried & drawn) / (carried.sum() + drawn.sum())
        assert dice > 0.9 and carried.sum() == pytest.approx(drawn.sum(), rel=0.05)


def test_written_orientation_keeps_the_physical_geometry(mixed_pair):
    """The same tumour stored LPS, RAS and PLI lies at the same place in scanner space."""
    folder = mixed_pair[0]
    truth = pd.read_csv(folder / "truth.csv")
    manifest = pd.read_csv(folder / "manifest.csv")
    codes = set()
    for (_, row), (_, drawn) in zip(manifest.iterrows(), truth.iterrows()):
        image = read_image(folder / row["image_T2FS"])
        assert orientation_code(image) == drawn["orientation_T2FS"]
        codes.add(drawn["orientation_T2FS"])

    profile = site_profile("hospX", orientations=("LPS",), pixel_mm=1.0, slice_mm=4.0)
    spec = sample_cohort(1, profile, seed=2, sequences=("T2FS",))[0]
    lattice = TumourLattice(spec.tumour, np.random.default_rng(spec.render_seed))
    centroids, volumes = [], []
    for code in ("LPS", "RAS", "PLI", "SAR"):
        spec.grids["T2FS"] = draw_grid(np.random.default_rng(0), profile, spec.anatomy, code)
        image, mask = render(spec, "T2FS", lattice, profile.noise, profile.bias)
        assert orientation_code(image) == code
        points = physical_points(mask, np.argwhere(sitk.GetArrayViewFromImage(mask) > 0))
        centroids.append(points.mean(axis=0))
        volumes.append(len(points) * np.prod(mask.GetSpacing()))
    expected = np.array(spec.tumour.centre) + np.array(spec.anatomy.world_offset)
    for centroid in centroids:
        # The lobes move the centroid off the ellipsoid centre, equally in every orientation.
        np.testing.assert_allclose(centroid, centroids[0], atol=0.5)
        assert np.linalg.norm(centroid - expected) < 0.25 * spec.tumour.longest_diameter_mm
    np.testing.assert_allclose(volumes, volumes[0], rtol=0.02)


def test_survival_hazard_is_higher_for_high_grade():
    from lifelines import CoxPHFitter, KaplanMeierFitter

    rng = np.random.default_rng(0)
    rows = []
    for i in range(4000):
        grade = 1 if i % 2 else 3
        c = draw_clinical(rng, grade, longest_diameter_mm=60.0)
        rows.append({"high": int(grade > 1), "m1": int(c["m_stage"] == "M1"),
                     "n1": int(c["n_stage"] == "N1"), "age": c["age"],
                     "os_months": c["os_months"], "os_event": c["os_event"]})
    frame = pd.DataFrame(rows)
    assert (frame["os_months"] > 0).all()
    assert 0.1 < frame["os_event"].mean() < 0.9          # deaths and censored patients
    assert frame["os_months"].max() <= 120               # administrative censoring
    assert frame.loc[frame["high"] == 1, "m1"].mean() > frame.loc[frame["high"] == 0, "m1"].mean()
    # The generating hazard ratios are recovered by a Cox fit, within 3 standard errors.
    cox = CoxPHFitter().fit(frame, "os_months", "os_event")
    for name, key in (("high", "high_grade"), ("m1", "m1"), ("n1", "n1"), ("age", "age_per_year")):
        error = abs(cox.params_[name] - np.log(HAZARD_RATIOS[key]))
        assert error < 3 * cox.standard_errors_[name], (name, error)
    assert cox.standard_errors_["high"] < 0.1
    km = {high: KaplanMeierFitter().fit(g["os_months"], g["os_event"])
          for high, g in frame.groupby("high")}
    assert km[1].median_survival_time_ < km[0].median_survival_time_
    assert km[1].predict(60.0) < km[0].predict(60.0) - 0.15


def test_sequence_contrasts_follow_their_names():
    t1gd, t2fs, t2 = contrast("T1FSGd"), contrast("T2FS"), contrast("T2")
    assert t2fs["fat"] < t2fs["muscle"] < t2["fat"]                       # fat suppressed
    assert t2fs["necrosis"] > t2fs["tumour"] and t2fs["oedema"] > t2fs["muscle"]
    assert t1gd["necrosis"] < t1gd["tumour"] and t1gd["vessel"] > t1gd["tumour"]
    assert contrast("T1")["fat"] > contrast("T1")["tumour"]


def test_cli_resumes_refuses_another_configuration_and_overwrites(tmp_path, capsys):
    out = tmp_path / "cohort"
    args = ["synth", str(out), "--patients", "2", "--site", "x1", "--seed", "4",
            "--sequences", "T2FS", "--slice-mm", "6", "--pixel-mm", "1.0"]
    assert main(args) == 0
    images = sorted((out / "images").iterdir())
    assert [p.name for p in images] == ["x1-001_T2FS.nii.gz", "x1-002_T2FS.nii.gz"]
    stamps = {p: p.stat().st_mtime_ns for p in images}
    before = file_hashes(out)

    assert main(args) == 0                                   # same configuration: resumed
    assert {p: p.stat().st_mtime_ns for p in images} == stamps
    assert "kept 2 finished patient(s)" in capsys.readouterr().err

    other = [a if a != "4" else "5" for a in args]
    assert main(other) == 1                                  # another seed: refused, untouched
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err and str(out) in err
    assert file_hashes(out) == before
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["status"] == "finished"

    assert main(other + ["--overwrite"]) == 0
    assert file_hashes(out)["images/x1-001_T2FS.nii.gz"] != before["images/x1-001_T2FS.nii.gz"]
    assert json.loads((out / "synth.json").read_text(encoding="utf-8"))["seed"] == 5


def test_preview_shows_each_patient_and_sequence(tmp_path):
    out = tmp_path / "cohort"
    assert main(["synth", str(out), "--patients", "2", "--site", "x2", "--sequences", "T1FSGd",
                 "--slice-mm", "6", "--pixel-mm", "1.0", "--orientations", "RAS", "--preview"]) == 0
    with open(out / "preview.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kwargs, message", [
    ({"orientations": ("LPX",)}, "invalid orientation code 'LPX'"),
    ({"site": "a/b"}, "invalid site name"),
    ({"low_fraction": 1.5}, "low_fraction must lie in"),
    ({"sequences": ("T2FS", "T2FS")}, "sequence named twice"),
    ({"sequences": ("T2 FS",)}, "invalid sequence name"),
    ({"n_patients": 0}, "--patients must be at least 1"),
    ({"slice_mm": (6, 3)}, "slice_mm must be a positive number or a range"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"voxel_mm": 1.0}, "unknown site setting(s) voxel_mm"),
    ({"missing_masks": ("T2",)}, "--missing-mask T2 is not one of the sequences T1FSGd, T2FS"),
    ({"missing_masks": ("T2FS", "T1FSGd")}, "--missing-mask leaves no sequence with a contour"),
])
def test_bad_arguments_are_one_line_errors_and_write_nothing(tmp_path, kwargs, message):
    arguments = {"out": tmp_path / "c", "n_patients": 1, "site": "s", "seed": 0, **kwargs}
    with pytest.raises(SarcogradeError) as error:
        make_cohort(**arguments)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "c").exists()


def test_a_different_manifest_in_the_folder_is_not_overwritten(tmp_path):
    (tmp_path / "manifest.csv").write_text("patient_id,image_T1,mask_T1\n")
    with pytest.raises(SarcogradeError, match="manifest.csv that sarcograde synth did not"):
        make_cohort(tmp_path, 1, "s", 0)
    assert (tmp_path / "manifest.csv").read_text(encoding="utf-8") == "patient_id,image_T1,mask_T1\n"
    assert not (tmp_path / "images").exists()


def test_a_damaged_synth_json_is_a_one_line_error_naming_it(tmp_path):
    (tmp_path / "synth.json").write_text('{"key": "abc", "outp')
    with pytest.raises(SarcogradeError) as error:
        make_cohort(tmp_path, 1, "s", 0, overwrite=True)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'synth.json'}: corrupt JSON") and "\n" not in message
    assert not (tmp_path / "images").exists()


def test_gzip_of_a_written_image_is_a_valid_nifti(mixed_pair):
    path = next((mixed_pair[0] / "images").iterdir())
    header = gzip.decompress(path.read_bytes())[:348]
    assert int.from_bytes(header[:4], "little") == 348      # NIfTI-1 sizeof_hdr
    assert header[344:348] in (b"n+1\0", b"ni1\0")


def test_overwrite_removes_only_what_synth_wrote(tmp_path, capsys):
    out = tmp_path / "cohort"
    args = ["synth", str(out), "--patients", "2", "--site", "x3", "--seed", "1",
            "--sequences", "T2FS", "--slice-mm", "6", "--pixel-mm", "1.0"]
    assert main(args) == 0
    # A user's own image and mask beside synth's, listed in the manifest as a colleague might.
    mine = {out / "images" / "mine_T2FS.nii.gz": b"user image", out / "mine_mask.nii.gz": b"m",
            out / "notes.txt": b"keep me"}
    for path, data in mine.items():
        path.write_bytes(data)
    with open(out / "manifest.csv", "a", encoding="utf-8") as fh:
        fh.write("mine,x3,1,,,,,,,,images/mine_T2FS.nii.gz,mine_mask.nii.gz\n")
    recorded = json.loads((out / "synth.json").read_text(encoding="utf-8"))["outputs"]
    assert "images/x3-001_T2FS.nii.gz" in recorded and "images/mine_T2FS.nii.gz" not in recorded

    assert main([a if a != "1" else "2" for a in args] + ["--patients", "1", "--overwrite"]) == 0
    for path, data in mine.items():
        assert path.read_bytes() == data
    assert not (out / "images" / "x3-002_T2FS.nii.gz").exists()   # the old cohort's own file
    capsys.readouterr()


def test_overwrite_never_replaces_a_manifest_synth_did_not_write(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.nii.gz").write_bytes(b"user image")
    (tmp_path / "manifest.csv").write_text("patient_id,image_T1,mask_T1\na,images/a.nii.gz,m\n")
    assert main(["synth", str(tmp_path), "--patients", "1", "--overwrite"]) == 1
    assert capsys.readouterr().err == (
        f"sarcograde synth: error: {tmp_path}: holds a manifest.csv that sarcograde synth did not "
        "write; choose another folder (--overwrite only replaces a synthetic cohort)\n")
    assert (tmp_path / "images" / "a.nii.gz").read_bytes() == b"user image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "manifest.csv"]
