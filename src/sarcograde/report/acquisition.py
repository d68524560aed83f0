"""The study page's acquisition section (the paper's Table S2): each cohort's scanners and
protocols as `check` summarised them per site and sequence (acquisition-summary.csv), shown as
written: nothing is recomputed here."""

from __future__ import annotations

from . import sections as s
from .inputs import StudyInputs

# acquisition-summary.csv's columns as the page heads them, in this order.
HEADER = {"site": "Site", "sequence": "Sequence", "n": "Patients", "format": "Format",
          "manufacturer": "Manufacturer", "model": "Model",
          "field_strength_t": "Field strength (T)", "sequence_name": "Sequence name",
          "repetition_time_ms": "TR (ms)", "echo_time_ms": "TE (ms)",
          "flip_angle_deg": "Flip angle (°)", "slice_thickness_mm": "Slice thickness (mm)",
          "slice_spacing_mm": "Slice spacing (mm)",
          "pixel_spacing_row_mm": "Pixel spacing, rows (mm)",
          "pixel_spacing_column_mm": "Pixel spacing, columns (mm)",
          "matrix_rows": "Matrix rows", "matrix_columns": "Matrix columns"}
NUMERIC = ("n",)


def acquisition(inputs: StudyInputs) -> dict:
    """One table per checked cohort, or why there is none."""
    if not inputs.acquisition:
        return {"not_run": "acquisition table: no check/<cohort>/acquisition-summary.csv (run "
                           "the study's check stage with this version)", "cohorts": []}
    return {"not_run": None, "cohorts": [
        {"name": cohort, "table": s.table(
            list(HEADER.values()),
            [[s.num(row[c]) if c in NUMERIC else row[c] for c in HEADER]
             for row in summary.frame.to_dict("records")],
            wide=True, id=f"acquisition-{cohort}")}
        for cohort, summary in inputs.acquisition.items()]}
