"""Drawing synthetic patients: grade, tumour, limb anatomy, acquisition grids and clinical data.

Grades are dealt at cohort level (an exact share of low grade); everything else about a patient
is drawn from generators seeded by (seed, site, index[, sequence]). The images are rendered from
this description by `phantom.py`. Lengths are in mm, in a limb frame whose z axis runs along
the limb (LPS axes).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

from .site import SiteProfile, direction_from_code, stable_int

T2_THRESHOLD_MM = 50.0        # AJCC 7: T1 <= 5 cm < T2 (longest diameter)
OEDEMA_REACH_MM = 25.0        # oedema is drawn up to this distance outside the tumour
BASE_HAZARD = np.log(2) / 200.0   # per month: median overall survival 200 months for G1, M0
HAZARD_RATIOS = {"high_grade": 3.0, "m1": 4.0, "n1": 1.5, "age_per_year": 1.02}


def _fibonacci_sphere(n: int) -> np.ndarray:
    """`n` nearly uniform unit vectors, shape (n, 3)."""
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    phi = np.pi * (1 + 5 ** 0.5) * k
    r = np.sqrt(1 - z ** 2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


SPHERE = _fibonacci_sphere(2000)


# The grade shows as a set of independent features, each drawn with a grade-dependent
# probability (G1, G2, G3), as in radiology, where no single sign decides the grade. Some are
# seen on one sequence only (phantom.py): the non-enhancing necrotic core and heterogeneous
# enhancement on contrast-enhanced T1, peritumoral oedema and T2 heterogeneity on T2; the border
# (lobulation, capsule) and the size are seen on every sequence. So one sequence alone grades
# imperfectly, and the sequences together grade better.
FEATURE_PROBABILITY = {
    "necrosis": (0.2, 0.55, 0.7),
    "enhancement_heterogeneity": (0.25, 0.55, 0.7),
    "oedema": (0.15, 0.6, 0.75),
    "t2_heterogeneity": (0.2, 0.6, 0.75),
    "lobulated": (0.3, 0.45, 0.55),
    "capsule": (0.4, 0.25, 0.2),
}


@dataclass
class Tumour:
    """An ellipsoid in normalised coordinates whose radius is 1 plus lobes, placed in the limb.

    The surface is r(u) = 1 + sum_k amp_k exp((u . v_k - 1) / width_k) for unit directions u of the
    normalised coordinates (x/a, y/b, z/c); a lobulated tumour has many, large lobes.
    """

    centre: tuple[float, float, float]      # limb frame, mm
    axes: tuple[float, float, float]        # semi-axes a, b, c, mm (c along the limb)
    angle: float                            # in-plane rotation, radians
    lobes: np.ndarray                       # (K, 5): direction (3), amplitude, width
    enhancement_heterogeneity: float        # texture amplitude seen with contrast (T1 Gd)
    t2_heterogeneity: float                 # texture amplitude seen with T2 weighting
    necrosis: float                         # necrotic core radius / tumour radius, 0 = none
    oedema: float                           # peak oedema weight just outside the border, 0 = none
    oedema_mm: float                        # decay length of the oedema
    lobulated: bool                         # irregular, lobulated border
    capsule: bool                           # thin dark rim of a well-confined tumour
    longest_diameter_mm: float = 0.0
    volume_ml: float = 0.0

    def boundary(self, directions: np.ndarray) -> np.ndarray:
        """Surface radius (normalised units) along unit `directions` of shape (3, ...)."""
        radius = np.ones(directions.shape[1:], dtype=directions.dtype)
        for vx, vy, vz, amp, width in self.lobes.astype(directions.dtype):
            cos = directions[0] * vx + directions[1] * vy + directions[2] * vz
            radius += amp * np.exp((cos - 1) / width)
        return radius

    def measure(self) -> None:
        """Longest diameter (max distance between surface points) and volume, from the shape."""
        radius = self.boundary(SPHERE.T)
        points = SPHERE * radius[:, None] * np.array(self.axes)
        hull = ConvexHull(points)
        self.longest_diameter_mm = float(pdist(points[hull.vertices]).max())
        self.volume_ml = float(4 / 3 * np.pi * np.prod(self.axes) * np.mean(radius ** 3) / 1000)

    @functools.cached_property
    def max_radius(self) -> float:
        """Largest normalised surface radius: the tumour lies within max_radius x (a, b, c)."""
        return float(self.boundary(SPHERE.T).max()) * 1.01   # 1 %: between the sampled directions


@dataclass
class Anatomy:
    """A limb cross-section extruded along z: skin, subcutaneous fat, muscle, bone, vessels."""

    muscle_radius: float          # fascia radius at z = 0
    ellipticity: float            # x axis stretched by this factor
    taper: float                  # relative change of the radius from the centre to the FOV end
    fat_mm: float                 # mean subcutaneous fat thickness
    fat_phase: float              # angle where the fat is thickest
    bone_centre: tuple[float, float]
    bone_radius: float
    cortex_mm: float
    septa: tuple[float, ...]      # angles of intermuscular fat planes from the bone
    vessels: tuple[tuple[float, float, float], ...]   # (x, y, radius) of the vessel bundle
    fov_xy: float                 # in-plane field of view (square), mm
    fov_z: float
    fov_centre: tuple[float, float, float]   # in the limb frame
    world_offset: tuple[float, float, float]  # scanner coordinates = limb frame + offset


@dataclass
class Grid:
    """An image grid in scanner (LPS) coordinates, as SimpleITK stores it."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]
    origin: tuple[float, float, float]
    orientation: str


@dataclass
class PatientSpec:
    patient_id: str
    site: str
    grade: int
    tumour: Tumour
    anatomy: Anatomy
    grids: dict[str, Grid]
    scale: float                  # stored grey value of tumour tissue for this patient
    clinical: dict[str, object]
    render_seed: int

    @property
    def label(self) -> int:
        return int(self.grade >= 2)


def draw_features(rng: np.random.Generator, grade: int) -> dict[str, bool]:
    """Which grade features the tumour shows, each drawn independently given the grade."""
    return {name: bool(rng.random() < p[grade - 1]) for name, p in FEATURE_PROBABILITY.items()}


def draw_tumour(rng: np.random.Generator, grade: int) -> Tumour:
    """A tumour whose texture, necrosis, border and oedema are drawn given its grade."""
    shows = draw_features(rng, grade)
    diameter = float(np.clip(rng.lognormal(np.log(68 if grade == 1 else 80), 0.4), 22, 125))
    if shows["lobulated"]:   # lobulated, with small bumps: irregular border
        s = float(rng.uniform(0.6, 1.0))
        n_big, n_small, amp, width = int(rng.integers(5, 11)), 16, (0.12, 0.3), (0.04, 0.12)
    else:                    # a few gentle, wide lobes: smooth
        s = 0.5
        n_big, n_small, amp, width = int(rng.integers(0, 3)), 0, (0.01, 0.04), (0.4, 0.8)
    big = [(*_unit(rng), rng.uniform(*amp) * s, rng.uniform(*width)) for _ in range(n_big)]
    small = [(*_unit(rng), rng.uniform(0.04, 0.1) * s, rng.uniform(0.01, 0.03))
             for _ in range(n_small)]
    lobes = np.array(big + small, dtype=float).reshape(-1, 5)
    ratios = rng.uniform(0.5, 0.9, size=2)

    def texture(shown: bool) -> float:   # relative amplitude of the viable tumour's texture
        return float(rng.uniform(0.2, 0.35) if shown else rng.uniform(0.02, 0.08))

    tumour = Tumour(
        centre=(0.0, 0.0, 0.0), axes=(ratios[0], ratios[1], 1.0),
        angle=float(rng.uniform(0, np.pi)), lobes=lobes,
        enhancement_heterogeneity=texture(shows["enhancement_heterogeneity"]),
        t2_heterogeneity=texture(shows["t2_heterogeneity"]),
        necrosis=float(rng.uniform(0.3, 0.6)) if shows["necrosis"] else 0.0,
        oedema=float(rng.uniform(0.5, 1.0)) if shows["oedema"] else 0.0,
        oedema_mm=float(rng.uniform(4, 10)), lobulated=shows["lobulated"],
        capsule=shows["capsule"] and not shows["lobulated"])
    tumour.measure()   # on unit axes; the diameter scales with them
    tumour.axes = tuple(float(a * diameter / tumour.longest_diameter_mm) for a in tumour.axes)
    tumour.measure()
    return tumour


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def draw_anatomy(rng: np.random.Generator, tumour: Tumour) -> Anatomy:
    """A limb around the tumour, which it places (sets `tumour.centre`) in the muscle, with the
    bone on the other side."""
    a, b, c = tumour.axes
    reach = max(a, b) * tumour.max_radius          # in-plane radius the tumour may occupy
    bone_radius, cortex = float(rng.uniform(10, 14)), float(rng.uniform(3, 5))
    muscle = max(float(rng.uniform(36, 48)), reach + bone_radius + 8)
    theta = float(rng.uniform(0, 2 * np.pi))
    # Tumour centre at distance t from the limb axis, bone at distance d on the opposite side,
    # at least 3 mm apart and both inside the fascia (the bounds below leave >= 1 mm of choice).
    t = float(rng.uniform(max(0.0, reach + 2 * bone_radius + 10 - muscle), muscle - reach - 3))
    d = float(rng.uniform(max(0.0, reach + bone_radius + 3 - t), muscle - bone_radius - 6))
    tumour.centre = (t * np.cos(theta), t * np.sin(theta), 0.0)
    bone = (-d * np.cos(theta), -d * np.sin(theta))
    bundle_angle = theta + np.pi + rng.choice([-1, 1]) * rng.uniform(0.6, 1.2)
    artery = np.array(bone) + (bone_radius + 7) * np.array([np.cos(bundle_angle),
                                                             np.sin(bundle_angle)])
    vein = artery + 5 * np.array([np.cos(bundle_angle + 1.4), np.sin(bundle_angle + 1.4)])
    vessels = ((*artery, float(rng.uniform(2.5, 3.5))), (*vein, float(rng.uniform(2.0, 3.0))))
    ellipticity, taper = float(rng.uniform(1.0, 1.12)), float(rng.uniform(-0.04, 0.04))
    fat = float(rng.uniform(4, 14))
    fov_xy = 2 * (muscle * (1 + abs(taper)) + 1.35 * fat + 1.5) * ellipticity + 12
    fov_z = max(90.0, 2 * c * tumour.max_radius + 2 * float(rng.uniform(15, 28)))
    return Anatomy(
        muscle_radius=muscle, ellipticity=ellipticity, taper=taper, fat_mm=fat,
        fat_phase=float(rng.uniform(0, 2 * np.pi)), bone_centre=bone, bone_radius=bone_radius,
        cortex_mm=cortex,
        septa=tuple(float(x) for x in rng.uniform(0, 2 * np.pi, rng.integers(3, 6))),
        vessels=tuple((float(x), float(y), r) for x, y, r in vessels), fov_xy=float(fov_xy),
        fov_z=float(fov_z), fov_centre=(0.0, 0.0, float(rng.uniform(-8, 8))),
        world_offset=(float(rng.uniform(-30, 30)), float(rng.uniform(-30, 30)),
                      float(rng.uniform(-200, 200))))


def draw_grid(rng: np.random.Generator, site: SiteProfile, anatomy: Anatomy,
              orientation: str) -> Grid:
    """An acquisition grid covering the field of view: the third image axis is the slice axis."""
    pixel = float(np.clip(round(rng.uniform(*site.pixel_mm), 3), *site.pixel_mm))
    thickness = float(np.clip(round(rng.uniform(*site.slice_mm), 2), *site.slice_mm))
    spacing = np.array([pixel, pixel, thickness])
    direction = np.array(direction_from_code(orientation)).reshape(3, 3)
    fov = np.array([anatomy.fov_xy, anatomy.fov_xy, anatomy.fov_z])
    axis_fov = np.abs(direction.T) @ fov            # field of view along each image axis
    size = np.maximum(np.ceil(axis_fov / spacing).astype(int), 1)
    centre = np.array(anatomy.fov_centre) + np.array(anatomy.world_offset)
    origin = centre - direction @ (spacing * (size - 1) / 2)
    return Grid(size=tuple(int(n) for n in size), spacing=tuple(float(s) for s in spacing),
                direction=tuple(float(v) for v in direction.ravel()),
                origin=tuple(float(o) for o in origin), orientation=orientation)


def _sequence_grid(rng: np.random.Generator, site: SiteProfile, anatomy: Anatomy) -> Grid:
    """Each sequence of a patient is its own acquisition: its own orientation and spacing."""
    return draw_grid(rng, site, anatomy, str(rng.choice(site.orientations)))


def t_stage(longest_diameter_mm: float) -> str:
    """AJCC 7 T stage of a deep tumour (below the fascia, 'b'): T1b up to 5 cm, T2b above."""
    return "T2b" if longest_diameter_mm > T2_THRESHOLD_MM else "T1b"


def draw_clinical(rng: np.random.Generator, grade: int, longest_diameter_mm: float) -> dict:
    """Age, sex, TNM and overall survival; death hazard higher for high grade, M1, N1, age."""
    high = grade >= 2
    age = int(np.clip(round(rng.normal(58 if high else 52, 16)), 18, 92))
    n1 = rng.random() < (0.04 if high else 0.01)
    m1 = rng.random() < (0.09 if high else 0.02)
    hazard = BASE_HAZARD * (HAZARD_RATIOS["high_grade"] if high else 1.0) \
        * (HAZARD_RATIOS["m1"] if m1 else 1.0) * (HAZARD_RATIOS["n1"] if n1 else 1.0) \
        * HAZARD_RATIOS["age_per_year"] ** (age - 55)
    death = rng.exponential(1 / hazard)
    # Administrative censoring (accrual over 10 years, analysis at one date) and loss to follow-up.
    censor = min(rng.uniform(12, 120), rng.exponential(400))
    months = max(round(float(min(death, censor)), 1), 0.1)
    return {"age": age, "sex": "M" if rng.random() < 0.5 else "F",
            "t_stage": t_stage(longest_diameter_mm), "n_stage": "N1" if n1 else "N0",
            "m_stage": "M1" if m1 else "M0", "os_months": months, "os_event": int(death <= censor)}


def patient_id(site: str, index: int, n_patients: int) -> str:
    return f"{site}-{index + 1:0{max(3, len(str(n_patients)))}d}"


def draw_grades(n_patients: int, low_fraction: float, seed: int, site: str) -> list[int]:
    """FNCLCC grades with exactly round(low_fraction x n) G1; G2 and G3 share the rest ~ 2:3."""
    rng = np.random.default_rng([seed, stable_int(site), 0])
    n_low = int(round(low_fraction * n_patients))
    order = rng.permutation(n_patients)
    grades = np.where(rng.random(n_patients) < 0.4, 2, 3)
    grades[order[:n_low]] = 1
    return [int(g) for g in grades]


def sample_cohort(n_patients: int, site: SiteProfile, seed: int,
                  sequences: tuple[str, ...]) -> list[PatientSpec]:
    """Describe every patient of a synthetic cohort (no image is rendered here)."""
    grades = draw_grades(n_patients, site.low_fraction, seed, site.name)
    specs = []
    for index, grade in enumerate(grades):
        rng = np.random.default_rng([seed, stable_int(site.name), 1, index])
        tumour = draw_tumour(rng, grade)
        anatomy = draw_anatomy(rng, tumour)
        grids = {seq: _sequence_grid(np.random.default_rng(
            [seed, stable_int(site.name), 2, index, stable_int(seq)]), site, anatomy)
            for seq in sequences}
        specs.append(PatientSpec(
            patient_id=patient_id(site.name, index, n_patients), site=site.name, grade=grade,
            tumour=tumour, anatomy=anatomy, grids=grids,
            scale=site.scale * float(rng.uniform(0.85, 1.15)),
            clinical=draw_clinical(rng, grade, tumour.longest_diameter_mm),
            render_seed=int(rng.integers(2 ** 32))))
    return specs
