"""Write a synthetic multi-site cohort with a known grade signal: NIfTI images, masks, manifest.

Limb cross-sections (skin, subcutaneous fat, muscle, bone, vessels) with one tumour in the muscle.
Grade features (heterogeneous enhancement, necrotic core, peritumoral oedema outside the mask,
T2 heterogeneity, lobulated border, capsule) are each drawn with a grade-dependent probability,
and split between the sequences: necrosis and enhancement show on contrast-enhanced T1, oedema
and T2 heterogeneity on T2, the border on both; one sequence grades imperfectly, both better.
Each sequence gets its own contrast (T1/T2, fat suppression, gadolinium, from its name) and grid
(spacing, orientation), with the same anatomy in scanner space, so that a contour drawn on one
carries onto the other (`--missing-mask`). A site's spacing, orientations, bias field, noise and
intensity scale follow from its name unless given. Clinical
columns: age, sex, AJCC 7 T stage from the tumour's longest diameter, N and M stage, overall
survival with a higher hazard for high grade, censoring. The same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..console import info
from ..formats.synth import PREVIEW
from .build import DEFAULT_SEQUENCES, make_cohort
from .site import SiteProfile, site_profile

__all__ = ["make_cohort", "site_profile", "SiteProfile", "add_arguments", "run"]


def _numbers(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or low,high; got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output folder (created)")
    parser.add_argument("--patients", type=int, default=40, help="number of patients (default 40)")
    parser.add_argument("--site", default="siteA",
                        help="site name: prefixes the patient ids and picks the site's "
                             "acquisition profile (default siteA)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--sequences", type=_names, default=DEFAULT_SEQUENCES,
                        help="comma-separated sequence names (default T1FSGd,T2FS)")
    parser.add_argument("--low-fraction", type=float, default=0.35,
                        help="share of low-grade (G1) patients (default 0.35)")
    parser.add_argument("--missing-mask", type=_names, default=(), metavar="SEQ[,SEQ]",
                        help="sequences left without a contour (empty mask_<SEQ> cell), as where "
                             "a clinic contours one sequence only")
    site = parser.add_argument_group("site profile (default: drawn from the site name)")
    site.add_argument("--pixel-mm", type=_numbers, help="in-plane spacing, mm: value or low,high")
    site.add_argument("--slice-mm", type=_numbers, help="slice thickness, mm: value or low,high")
    site.add_argument("--orientations", type=_names,
                      help="orientation codes patients are stored in, e.g. LPS,RAS")
    site.add_argument("--noise", type=float, help="Rician noise sigma, fraction of tumour signal")
    site.add_argument("--bias", type=float, help="largest bias-field deviation, e.g. 0.2")
    site.add_argument("--scale", type=float, help="stored grey value of tumour tissue")
    parser.add_argument("--preview", action="store_true",
                        help="also write preview.png (largest tumour slice of 8 patients)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a cohort of another configuration in OUT")


def run(args: argparse.Namespace) -> int:
    overrides = {key: getattr(args, key) for key in
                 ("pixel_mm", "slice_mm", "orientations", "noise", "bias", "scale")}
    manifest = make_cohort(args.out, args.patients, args.site, args.seed, args.sequences,
                           args.low_fraction, missing_masks=args.missing_mask,
                           overwrite=args.overwrite, **overrides)
    if args.preview:
        from .preview import save_preview

        save_preview(manifest, args.out / PREVIEW)
    profile = site_profile(args.site, low_fraction=args.low_fraction, **overrides)
    info(f"synth: {args.patients} patients of {args.site} ({', '.join(args.sequences)}; pixel "
         f"{_span(profile.pixel_mm)} mm, slices {_span(profile.slice_mm)} mm, "
         f"{'/'.join(profile.orientations)}) -> {manifest}")
    return 0


def _span(low_high: tuple[float, float]) -> str:
    low, high = low_high
    return f"{low:g}" if low == high else f"{low:g}-{high:g}"
