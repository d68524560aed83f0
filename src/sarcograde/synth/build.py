"""Writing a synthetic cohort: images, masks, manifest.csv, truth.csv, synth.json and run.json.

The cohort's configuration (site profile, seed, size, sequences, package version) is stored in
`synth.json` before any image; a rerun with the same configuration skips the patients whose
files are all there (every file is written atomically), a different one refuses to mix cohorts.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..artifacts import RunRecord, hash_config, write_csv
from ..cohort import CLINICAL_COLUMNS
from ..console import info, progress
from ..errors import SarcogradeError
from ..formats.records import FOLDER_RECORD
from ..formats.synth import MANIFEST, PREVIEW, TRUTH, read_synth_record, write_synth_record
from ..io import write_image
from .patients import FEATURE_PROBABILITY, PatientSpec, sample_cohort
from .phantom import TumourLattice, render
from .site import SiteProfile, site_profile

DEFAULT_SEQUENCES = ("T1FSGd", "T2FS")
SEQUENCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9+_-]*")


def _files(spec: PatientSpec, sequence: str) -> tuple[str, str]:
    name = f"{spec.patient_id}_{sequence}.nii.gz"
    return f"images/{name}", f"masks/{name}"


def _manifest(specs: list[PatientSpec], sequences: tuple[str, ...],
              missing_masks: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for spec in specs:
        row = {"patient_id": spec.patient_id, "site": spec.site, "grade": spec.grade,
               **{k: spec.clinical[k] for k in CLINICAL_COLUMNS}}
        for seq in sequences:
            row[f"image_{seq}"], row[f"mask_{seq}"] = _files(spec, seq)
            if seq in missing_masks:   # not contoured: `check`/`preprocess` carry another's
                row[f"mask_{seq}"] = ""
        rows.append(row)
    return pd.DataFrame(rows)


def _truth(specs: list[PatientSpec], sequences: tuple[str, ...]) -> pd.DataFrame:
    """What the generator put in each image, for tests and for checking what a model attends to."""
    rows = []
    for spec in specs:
        t = spec.tumour
        row = {"patient_id": spec.patient_id, "grade": spec.grade, "label": spec.label,
               "enhancement_heterogeneity": round(t.enhancement_heterogeneity, 4),
               "t2_heterogeneity": round(t.t2_heterogeneity, 4),
               "necrosis": round(t.necrosis, 4), "oedema": round(t.oedema, 4),
               "oedema_mm": round(t.oedema_mm, 2), "lobes": len(t.lobes),
               "lobulated": int(t.lobulated), "capsule": int(t.capsule),
               "longest_diameter_mm": round(t.longest_diameter_mm, 2),
               "tumour_volume_ml": round(t.volume_ml, 3)}
        for seq in sequences:
            grid = spec.grids[seq]
            row[f"orientation_{seq}"] = grid.orientation
            row[f"spacing_{seq}"] = "x".join(f"{s:g}" for s in grid.spacing)
            row[f"size_{seq}"] = "x".join(str(n) for n in grid.size)
        rows.append(row)
    return pd.DataFrame(rows)


def _check_arguments(n_patients: int, seed: int, sequences: tuple[str, ...],
                     missing_masks: tuple[str, ...]) -> None:
    if int(seed) < 0:
        raise SarcogradeError(f"seed must be >= 0; got {seed}")
    if int(n_patients) < 1:
        raise SarcogradeError(f"--patients must be at least 1; got {n_patients}")
    if not sequences:
        raise SarcogradeError("name at least one sequence, e.g. --sequences T1FSGd,T2FS")
    for seq in sequences:
        if not SEQUENCE_NAME.fullmatch(seq):
            raise SarcogradeError(f"invalid sequence name {seq!r}: use letters, digits, '+', "
                                  "'_', '-' (it becomes a manifest column and a file name)")
    if len(set(sequences)) != len(sequences):
        raise SarcogradeError(f"sequence named twice in {', '.join(sequences)}")
    unknown = [seq for seq in missing_masks if seq not in sequences]
    if unknown:
        raise SarcogradeError(f"--missing-mask {', '.join(unknown)} is not one of the sequences "
                              f"{', '.join(sequences)}")
    if set(sequences) <= set(missing_masks):
        raise SarcogradeError("--missing-mask leaves no sequence with a contour; keep at least one")


def _claim_folder(out: Path, config: dict, outputs: list[str], overwrite: bool) -> bool:
    """Prepare `out` for this configuration; True when finished files of it may be kept.

    synth.json lists every file this configuration writes, so that --overwrite removes exactly
    those of the previous one and never a file that synth did not write (a user's images).
    """
    previous = read_synth_record(out)
    if previous is not None and previous.get("key") == config["key"]:
        return True
    if previous is None and (out / MANIFEST).exists():
        raise SarcogradeError("holds a manifest.csv that sarcograde synth did not write; choose "
                              "another folder (--overwrite only replaces a synthetic cohort)",
                              path=out)
    if previous is not None:
        if not overwrite:
            raise SarcogradeError("holds a cohort made with another configuration; choose an "
                                  "empty folder or pass --overwrite", path=out)
        _remove_outputs(out, previous.get("outputs", []))
    write_synth_record(out, {**config, "outputs": outputs})
    return False


def _remove_outputs(out: Path, outputs: list[str]) -> None:
    """Delete the files a previous synth run recorded as its own (only inside `out`)."""
    root = out.resolve()
    for name in outputs:
        path = (out / name).resolve()
        if root in path.parents and path.is_file():
            path.unlink()


def make_cohort(out: str | Path, n_patients: int = 20, site: str = "siteA", seed: int = 0,
                sequences: tuple[str, ...] | list[str] = DEFAULT_SEQUENCES,
                low_fraction: float = 0.35, *, missing_masks: tuple[str, ...] | list[str] = (),
                overwrite: bool = False, **site_overrides) -> Path:
    """Write a synthetic cohort of `n_patients` from `site` into `out`; return the manifest path.

    `site_overrides` replace fields of the site's profile (`site.SiteProfile`): pixel_mm,
    slice_mm (a number or a (low, high) range), orientations (e.g. ("LPS", "RAS")), noise,
    bias, scale. The sequences in `missing_masks` get no contour: an empty `mask_<SEQ>` cell.
    Same arguments, same bytes.
    """
    out = Path(out)
    sequences, missing_masks = tuple(sequences), tuple(missing_masks)
    _check_arguments(n_patients, seed, sequences, missing_masks)
    profile: SiteProfile = site_profile(site, low_fraction=low_fraction, **site_overrides)
    config = {"generator": f"sarcograde {__version__}", "seed": int(seed),
              "n_patients": int(n_patients), "sequences": list(sequences),
              "site": profile.as_dict(), "missing_masks": list(missing_masks),
              "grade_signal": {k: list(v) for k, v in FEATURE_PROBABILITY.items()}}
    config["key"] = hash_config(config)
    specs = sample_cohort(int(n_patients), profile, int(seed), sequences)
    outputs = [f for spec in specs for seq in sequences for f in _files(spec, seq)]
    outputs += [MANIFEST, TRUTH, FOLDER_RECORD, PREVIEW]
    # Before run.json: a refusal changes nothing.
    resume = _claim_folder(out, config, outputs, overwrite)
    with RunRecord(out, config=config, seed=int(seed)):
        done = 0
        with progress() as bar:
            task = bar.add_task(f"synth {site}", total=len(specs))
            for spec in specs:
                files = [out / f for seq in sequences for f in _files(spec, seq)
                         if not (seq in missing_masks and f.startswith("masks/"))]
                if resume and all(f.is_file() for f in files):
                    done += 1
                else:
                    _write_patient(out, spec, sequences, profile, missing_masks)
                bar.advance(task)
        if done:
            info(f"synth: kept {done} finished patient(s) of this configuration in {out}")
        write_csv(out / TRUTH, _truth(specs, sequences))
        write_csv(out / MANIFEST, _manifest(specs, sequences, missing_masks))
    return out / MANIFEST


def _write_patient(out: Path, spec: PatientSpec, sequences: tuple[str, ...],
                   profile: SiteProfile, missing_masks: tuple[str, ...]) -> None:
    lattice = TumourLattice(spec.tumour, np.random.default_rng(spec.render_seed))
    for seq in sequences:
        image, mask = render(spec, seq, lattice, profile.noise, profile.bias)
        image_path, mask_path = _files(spec, seq)
        if seq not in missing_masks:
            write_image(mask, out / mask_path)
        write_image(image, out / image_path)
