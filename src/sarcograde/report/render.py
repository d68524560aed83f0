"""Jinja2 renders the page from templates/ (autoescaped); the CSS is inlined, images are data
URIs, so the page is one self-contained file with no script and no network access."""

from __future__ import annotations

import datetime as _dt
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from .. import __version__
from ..artifacts import RunRecord, write_text
from ..formats.records import file_record_name
from ..outcome import GRADE_OUTCOME



@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("sarcograde.report", "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render(template: str, context: dict[str, Any], *, title: str) -> str:
    """The page as one HTML string; its header names the classes (`subtitle` in `context`,
    the grade's by default)."""
    css = resources.files("sarcograde.report").joinpath("templates", "report.css").read_text(
        encoding="utf-8")
    page = environment().get_template(template).render(
        **{"subtitle": GRADE_OUTCOME.subtitle, **context}, title=title, css=css,
        version=__version__,
        created=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"))
    return page if page.endswith("\n") else page + "\n"


def write_page(out: Path, page: str, *, config: dict, inputs: dict[str, Path]) -> Path:
    """Write the page atomically, with its own `<stem>.run.json` beside it (its folder may be
    shared with other stages' outputs)."""
    out = Path(out)
    with RunRecord(out.parent, config=config, inputs=inputs, name=file_record_name(out)):
        write_text(out, page)
    return out
