"""`sarcograde grade`: new patients graded with a model package, each with its grade.json and
case report (stage: the command; result: the rules from predictions to a grade; report: the
case report)."""

from .result import BORDERLINE, grade_of, is_borderline
from .stage import add_arguments, run

__all__ = ["BORDERLINE", "add_arguments", "grade_of", "is_borderline", "run"]
