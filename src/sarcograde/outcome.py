"""What a 0/1 label stands for, in words: the FNCLCC grade (class 0 low grade G1, class 1 high
grade G2/G3) by default, or another 0/1 column of the manifest that a study (`target:`) or
`evaluate --target` takes as the outcome (`lung_metastasis`: class 0 "lung metastasis: no",
class 1 "lung metastasis: yes"). The figures, tables and report pages take their words here, so
that a study of another target never calls its classes grades."""

from __future__ import annotations

from dataclasses import dataclass

GRADE = "grade"


@dataclass(frozen=True)
class Outcome:
    target: str                    # the manifest's column: grade, or a 0/1 column
    title: str                     # "grade (FNCLCC)", "lung metastasis"
    classes: tuple[str, str]       # class 0 and class 1 in a sentence: "low grade", ...
    short: tuple[str, str]         # the same, after "predicted": "low"/"high", "no"/"yes"
    subtitle: str                  # the two classes against each other, for a page's header

    @property
    def is_grade(self) -> bool:
        return self.target == GRADE

    def class_name(self, label: int) -> str:
        return self.classes[int(label)]


GRADE_OUTCOME = Outcome(GRADE, "grade (FNCLCC)", ("low grade", "high grade"), ("low", "high"),
                        "low grade (FNCLCC G1) vs high grade (G2/G3)")


def outcome(target: str | None = None) -> Outcome:
    """The words of `target` (a manifest column; None or "grade": the grade's)."""
    if target in (None, GRADE):
        return GRADE_OUTCOME
    title = target.replace("_", " ")
    return Outcome(target, title, (f"{title}: no", f"{title}: yes"), ("no", "yes"),
                   f"{title}: no vs yes")
