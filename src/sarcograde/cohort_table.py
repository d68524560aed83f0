"""Table 1 of the paper: the training cohort against the test cohort, with p-values.

Wilcoxon rank-sum (Mann-Whitney U) for continuous and ordinal variables, Fisher's exact test for
nominal ones, log-rank for overall survival, Bonferroni over the tests made. Missing values are
left out of each variable's test and counted in the table.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import MonteCarloMethod, fisher_exact, mannwhitneyu

from .cohort import Patient
from .outcome import GRADE_OUTCOME, Outcome
from .survival import bonferroni, kaplan_meier, logrank_test

COLUMNS = ["variable", "level", "training", "test", "test_used", "p", "p_adjusted"]
ORDINAL = {"t_stage": ("T stage", "T"), "n_stage": ("N stage", "N"), "m_stage": ("M stage", "M")}
WILCOXON = "Wilcoxon rank-sum"
MONTE_CARLO_TABLES = 20000
FOOTNOTE = ("Continuous values are mean ± SD (median); categories n/N (%). p: Wilcoxon rank-sum "
            "(Mann-Whitney U, two-sided, scipy.stats.mannwhitneyu) for continuous and ordinal "
            "variables (age, tumour volume, T/N/M stage, grade); Fisher's exact test "
            "(scipy.stats.fisher_exact; 2 x 2 tables exact, two-sided; larger tables by Monte "
            "Carlo over 20,000 random tables with the observed margins, seeded) for nominal "
            "variables (sex{target}); log-rank for overall "
            "survival (median by Kaplan-Meier). p adjusted: Bonferroni over the {k} tests made. "
            "Missing values are left out of each test; a variable with a single value in both "
            "cohorts is not tested.")


def _share(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.1f}%)" if n else "0/0"


def _missing(values: list) -> str:
    k = sum(v is None for v in values)
    return f"; {k} missing" if k else ""


def _present(values: list) -> np.ndarray:
    return np.array([v for v in values if v is not None], float)


def _summary(values: list) -> str:
    x = _present(values)
    if x.size == 0:
        return "no values" + _missing(values)
    sd = x.std(ddof=1) if x.size > 1 else float("nan")
    return f"{x.mean():.1f} ± {sd:.1f} (median {np.median(x):.1f}){_missing(values)}"


def _wilcoxon(a: list, b: list) -> float:
    x, y = _present(a), _present(b)
    if x.size == 0 or y.size == 0 or np.unique(np.r_[x, y]).size == 1:
        return float("nan")  # nothing to compare: no values, or one value in both cohorts
    return float(mannwhitneyu(x, y, alternative="two-sided").pvalue)


def nominal_test(table) -> float:
    """Fisher's exact p of a categories x cohorts count table (empty categories dropped).

    2 x 2: exact. Larger: the Fisher-Freeman-Halton p estimated by scipy from random tables with
    the observed margins (scipy has no exact enumeration for them), seeded so that reruns agree.
    """
    table = np.asarray(table, int)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    if table.shape[0] < 2 or table.shape[1] < 2:
        return float("nan")
    if table.shape == (2, 2):
        return float(fisher_exact(table).pvalue)
    method = MonteCarloMethod(n_resamples=MONTE_CARLO_TABLES, rng=np.random.default_rng(0))
    return float(fisher_exact(table, method=method).pvalue)


def _level_rows(name: str, values: tuple[list, list], levels: list, label, test: str,
                p: float) -> list[dict]:
    rows = []
    for i, level in enumerate(levels):
        counts = [sum(v == level for v in vals) for vals in values]
        totals = [sum(v is not None for v in vals) for vals in values]
        rows.append({"variable": name, "level": label(level),
                     "training": _share(counts[0], totals[0]), "test": _share(counts[1], totals[1]),
                     "test_used": test if i == 0 else "", "p": p if i == 0 else np.nan})
    missing = [sum(v is None for v in vals) for vals in values]
    if any(missing):
        rows.append({"variable": name, "level": "unknown", "training": str(missing[0]),
                     "test": str(missing[1]), "test_used": "", "p": np.nan})
    return rows


def _os_row(cohorts: tuple[list[Patient], list[Patient]]) -> dict:
    times, events, groups, cells = [], [], [], []
    for g, patients in enumerate(cohorts):
        known = [p for p in patients if p.clinical.get("os_months") is not None
                 and p.clinical.get("os_event") is not None]
        if not known:
            cells.append("no values")
            continue
        t = [p.clinical["os_months"] for p in known]
        e = [p.clinical["os_event"] for p in known]
        median = kaplan_meier(t, e).median
        cells.append(("not reached" if np.isnan(median) else f"{median:.1f} mo")
                     + f" ({sum(e)} deaths/{len(known)})")
        times += t
        events += e
        groups += [g] * len(known)
    try:
        p = logrank_test(times, events, groups).p
    except ValueError:  # one cohort without survival data, or no deaths at all
        p = float("nan")
    return {"variable": "Overall survival", "level": "median", "training": cells[0],
            "test": cells[1], "test_used": "log-rank", "p": p}


def cohort_table(training: list[Patient], test: list[Patient],
                 volumes: tuple[dict[str, float], dict[str, float]] | None = None,
                 outcome: Outcome = GRADE_OUTCOME) -> tuple[pd.DataFrame, str]:
    """The Table 1 rows (columns `COLUMNS`) and the footnote that says which test gave which p.

    `volumes` are the tumour volumes (ml) by patient id of the training and the test cohort.
    With a target other than the grade, its classes get their own rows after the real grade's.
    """
    cohorts = (training, test)

    def values(get) -> tuple[list, list]:
        return tuple([get(p) for p in patients] for patients in cohorts)

    rows = [{"variable": "Patients", "level": "", "training": str(len(training)),
             "test": str(len(test)), "test_used": "", "p": np.nan}]
    age = values(lambda p: p.clinical.get("age"))
    rows.append({"variable": "Age (years)", "level": "", "training": _summary(age[0]),
                 "test": _summary(age[1]), "test_used": WILCOXON, "p": _wilcoxon(*age)})
    sex = values(lambda p: p.clinical.get("sex"))
    sex_counts = [[sum(v == level for v in vals) for vals in sex] for level in ("F", "M")]
    rows += _level_rows("Sex", sex, ["F", "M"], {"F": "female", "M": "male"}.get,
                        "Fisher's exact", nominal_test(sex_counts))
    for key, (name, prefix) in ORDINAL.items():
        stage = values(lambda p, key=key: p.clinical.get(key))
        levels = sorted({v for vals in stage for v in vals if v is not None})
        rows += _level_rows(name, stage, levels, lambda v, prefix=prefix: f"{prefix}{v}",
                            WILCOXON, _wilcoxon(*stage))
    grade = values(lambda p: p.grade)
    rows += _level_rows("Grade (FNCLCC)", grade, [1, 2, 3], lambda v: f"G{v}", WILCOXON,
                        _wilcoxon(*grade))
    if not outcome.is_grade:
        target = values(lambda p: p.label)
        counts = [[sum(v == level for v in vals) for vals in target] for level in (0, 1)]
        rows += _level_rows(outcome.title[:1].upper() + outcome.title[1:], target, [0, 1],
                            lambda v: outcome.short[v], "Fisher's exact", nominal_test(counts))
    if volumes is not None:
        volume = tuple([vols.get(p.patient_id) for p in patients]
                       for vols, patients in zip(volumes, cohorts))
        rows.append({"variable": "Tumour volume (ml)", "level": "", "training": _summary(volume[0]),
                     "test": _summary(volume[1]), "test_used": WILCOXON,
                     "p": _wilcoxon(*volume)})
    rows.append(_os_row(cohorts))
    table = pd.DataFrame(rows)
    table["p_adjusted"] = bonferroni(table["p"].to_numpy())
    n_tests = int(np.isfinite(table["p"]).sum())
    target = "" if outcome.is_grade else f", {outcome.title}"
    return table[COLUMNS], FOOTNOTE.format(k=n_tests, target=target)


def _p_text(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def to_markdown(table: pd.DataFrame, footnote: str, names: tuple[str, str] = ("Training", "Test")
                ) -> str:
    """Table 1 as a Markdown table with the footnote below it."""
    n_train, n_test = table.iloc[0]["training"], table.iloc[0]["test"]
    lines = [f"| | | {names[0]} (n={n_train}) | {names[1]} (n={n_test}) | p | p adjusted |",
             "| --- | --- | --- | --- | --- | --- |"]
    previous = None
    for row in table.iloc[1:].itertuples():
        variable = "" if row.variable == previous else row.variable  # one name per block of levels
        previous = row.variable
        lines.append(f"| {variable} | {row.level} | {row.training} | {row.test} | "
                     f"{_p_text(row.p)} | {_p_text(row.p_adjusted)} |")
    return "\n".join(lines) + f"\n\n{footnote}\n"
