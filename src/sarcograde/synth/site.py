"""Acquisition profile of a synthetic hospital: voxel spacing, orientation, bias, noise, scale.

A site's profile follows from its name alone, so that `siteA` is the same "hospital" whatever the
seed or cohort size; any field can be overridden. Patients draw their own values within the
ranges (in-plane spacing, slice thickness, orientation, intensity scale), as in a real archive.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import SarcogradeError

SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_AXIS_PAIRS = ("LR", "PA", "SI")


def stable_int(text: str) -> int:
    """A 32-bit integer from a string that, unlike `hash`, is the same in every Python process."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def direction_from_code(code: str) -> tuple[float, ...]:
    """Direction cosines (row-major 3x3) of an orientation code such as 'LPS' or 'RAS'."""
    code = code.upper()
    if len(code) != 3 or any(len(set(pair) & set(code)) != 1 for pair in _AXIS_PAIRS):
        raise SarcogradeError(f"invalid orientation code {code!r}: use one letter of each of "
                              "L/R, P/A, S/I, e.g. LPS or RAS")
    return sitk.DICOMOrientImageFilter.GetDirectionCosinesFromOrientation(code)


@dataclass(frozen=True)
class SiteProfile:
    """How one hospital acquires its images. Ranges are (low, high); patients draw within them."""

    name: str
    pixel_mm: tuple[float, float]       # in-plane spacing
    slice_mm: tuple[float, float]       # slice thickness (= spacing between slices)
    orientations: tuple[str, ...]       # codes a patient's images are stored in, e.g. LPS, RAS
    noise: float                        # Rician noise sigma, as a fraction of tumour signal
    bias: float                         # largest multiplicative bias-field deviation (0.2 = +-20%)
    scale: float                        # typical stored grey value of tumour tissue
    low_fraction: float = 0.35          # share of low-grade (G1) patients

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _range(value, name: str) -> tuple[float, float]:
    values = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    values = values * 2 if len(values) == 1 else values
    if len(values) != 2 or not 0 < values[0] <= values[1]:
        raise SarcogradeError(f"{name} must be a positive number or a range low,high; "
                              f"got {value!r}")
    return values[0], values[1]


def site_profile(name: str, **overrides) -> SiteProfile:
    """The profile of site `name` (drawn from the name), with `overrides` replacing any field."""
    if not SITE_NAME.fullmatch(name or ""):
        raise SarcogradeError(f"invalid site name {name!r}: use letters, digits, '_', '.', '-' "
                              "(it prefixes patient ids and file names)")
    rng = np.random.default_rng(stable_int(f"site:{name}"))
    pixel = float(rng.uniform(0.72, 0.95))
    slice_mm = float(rng.choice([3.0, 3.5, 4.0, 4.5, 5.0, 5.5]))
    orientations = (("LPS",), ("RAS",), ("LPS", "RAS"), ("LPS", "LPI", "RPS"))[rng.integers(4)]
    fields = {
        "pixel_mm": (round(pixel - 0.03, 3), round(pixel + 0.03, 3)),
        "slice_mm": (slice_mm, slice_mm + 0.5),
        "orientations": orientations,
        "noise": round(float(rng.uniform(0.012, 0.035)), 4),
        "bias": round(float(rng.uniform(0.1, 0.35)), 3),
        "scale": round(float(np.exp(rng.uniform(np.log(400), np.log(3000)))), 1),
        "low_fraction": SiteProfile.low_fraction,
    }
    known = {f.name for f in dataclasses.fields(SiteProfile)} - {"name"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SarcogradeError(f"unknown site setting(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(known))}")
    fields.update({k: v for k, v in overrides.items() if v is not None})
    fields["pixel_mm"] = _range(fields["pixel_mm"], "pixel_mm")
    fields["slice_mm"] = _range(fields["slice_mm"], "slice_mm")
    codes = fields["orientations"]
    codes = tuple(c.strip().upper() for c in ([codes] if isinstance(codes, str) else codes))
    for code in codes:
        direction_from_code(code)
    if not codes:
        raise SarcogradeError("orientations must name at least one code, e.g. LPS")
    fields["orientations"] = codes
    for key in ("noise", "bias", "scale", "low_fraction"):
        fields[key] = float(fields[key])
    if not 0 <= fields["low_fraction"] <= 1:
        raise SarcogradeError(f"low_fraction must lie in [0, 1]; got {fields['low_fraction']}")
    if fields["noise"] < 0 or not 0 <= fields["bias"] < 1 or fields["scale"] <= 0:
        raise SarcogradeError("noise must be >= 0, bias in [0, 1) and scale > 0")
    return SiteProfile(name=name, **fields)
