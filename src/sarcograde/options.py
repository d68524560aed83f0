"""Command-line option helpers shared by several commands (the stages and `cli`), so that no
stage imports the command line itself."""

from __future__ import annotations

from .errors import SarcogradeError


def split_assignment(spec: str, flag: str, form: str = "NAME=PATH") -> tuple[str, str]:
    """`NAME=VALUE` of a repeatable option (e.g. `--predictions DL-T2FS=a.csv`) as its two
    stripped parts; a one-line error naming the option otherwise."""
    name, sep, value = spec.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise SarcogradeError(f"{flag} {spec!r} is not {form}")
    return name.strip(), value.strip()
