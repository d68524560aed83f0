"""The evaluation's tables: baselines.csv (a row per model), Table 2 (CSV and Markdown, with the
DeLong matrix), confusion.csv, and the summary on the console."""

from __future__ import annotations

import pandas as pd

from ..console import console
from .metrics import ALL_METRICS


def model_rows(models: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for key, block in models.items():
        row = {"model": key, "label": block.get("label", key), "n": block.get("n"),
               "threshold": block.get("threshold")}
        for name in ALL_METRICS:
            entry = block.get(name) or {}
            ci = entry.get("ci95") or [None, None]
            row.update({name: entry.get("value"), f"{name}_ci_low": ci[0],
                        f"{name}_ci_high": ci[1]})
        delong = block.get("delong_vs_dl") or {}
        row.update({"delong_z_vs_dl": delong.get("z"), "delong_p_vs_dl": delong.get("p")})
        rows.append(row)
    return pd.DataFrame(rows)


def table2(models: dict[str, dict]) -> pd.DataFrame:
    """Table 2: one row per model (metrics.json's `models`), each metric with its 95% CI."""
    return model_rows(models)[["model", "n", *[f"{name}{suffix}" for name in ALL_METRICS
                                                for suffix in ("", "_ci_low", "_ci_high")]]]


def table2_markdown(models: dict[str, dict], delong: list[dict], cohort: str) -> str:
    """Table 2 and the DeLong matrix (p, Bonferroni-adjusted p) as Markdown."""
    header = ["model", "n", *[name.replace("_", " ") for name in ALL_METRICS]]
    lines = [f"Table 2, {cohort}: value (95% bootstrap CI, the same patient resamples for every "
             "model)", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, block in models.items():
        lines.append(f"| {name} | {block['n']} | "
                     + " | ".join(_cell(block[metric]) for metric in ALL_METRICS) + " |")
    if delong:
        names = list(models)
        cell = {(pair["a"], pair["b"]): pair for pair in delong}
        cell.update({(b, a): pair for (a, b), pair in list(cell.items())})
        lines += ["", f"Paired DeLong tests of the AUCs: p (Bonferroni-adjusted over the "
                      f"{sum(pair['p'] is not None for pair in delong)} pairs)", "",
                  "| | " + " | ".join(names) + " |", "|" + " --- |" * (len(names) + 1)]
        for a in names:
            row = []
            for b in names:
                pair = cell.get((a, b))
                row.append("" if pair is None else "n/a" if pair["p"] is None
                           else f"{pair['p']:.3g} ({pair['p_adjusted']:.3g})")
            lines.append(f"| {a} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def confusion_rows(entries: list[tuple[str, str, float, dict]]) -> list[dict]:
    return [{"model": model, "rule": rule, "threshold": threshold, **confusion}
            for model, rule, threshold, confusion in entries]


def _cell(entry: dict) -> str:
    if entry.get("value") is None:
        return "n/a"
    ci = entry.get("ci95")
    return f"{entry['value']:.2f}" + (f" ({ci[0]:.2f} to {ci[1]:.2f})" if ci else "")


def print_summary(models: dict[str, dict], cohort: str = "test cohort") -> None:
    """Metrics (rows) by model (columns), value and 95% CI, on the console."""
    from rich.table import Table

    table = Table(title=f"{cohort}: value (95% bootstrap CI)", title_style="bold")
    table.add_column("metric")
    for key, block in models.items():
        table.add_column(block.get("label", key), justify="right")
    for name in ALL_METRICS:
        table.add_row(name.replace("_", " "),
                      *[_cell(block.get(name, {})) for block in models.values()])
    console.print(table)
