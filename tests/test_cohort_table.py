"""Table 1: the right test for each variable, p-values equal to scipy's, Bonferroni, Markdown."""

import numpy as np
import pytest
from scipy.stats import fisher_exact, mannwhitneyu

from sarcograde.cohort import Patient
from sarcograde.cohort_table import cohort_table, nominal_test, to_markdown
from sarcograde.survival import logrank_test


def _patients(n: int, seed: int, prefix: str, older: float = 0.0) -> list[Patient]:
    rng = np.random.default_rng(seed)
    patients = []
    for i in range(n):
        clinical = {"age": float(np.round(rng.normal(55 + older, 15))),
                    "sex": "F" if rng.random() < 0.5 else "M",
                    "t_stage": int(rng.integers(1, 3)), "n_stage": int(rng.random() < 0.1),
                    "m_stage": int(rng.random() < 0.1),
                    "os_months": float(np.round(rng.exponential(40), 1)),
                    "os_event": int(rng.random() < 0.4)}
        if i == 0:
            clinical["age"] = None  # a missing value is left out of the test and counted
        patients.append(Patient(f"{prefix}{i:03d}", i + 2, int(rng.integers(1, 4)),
                                clinical=clinical))
    return patients


def test_p_values_equal_the_reference_tests():
    train, test = _patients(60, 0, "A", older=8), _patients(45, 1, "B")
    volumes = ({p.patient_id: 100 + 10 * i for i, p in enumerate(train)},
               {p.patient_id: 50 + 10 * i for i, p in enumerate(test)})
    table, footnote = cohort_table(train, test, volumes)
    p = table.dropna(subset=["p"]).set_index("variable")["p"]  # one p per variable

    def values(patients, key):
        return [pt.clinical[key] for pt in patients if pt.clinical[key] is not None]

    assert p["Age (years)"] == pytest.approx(
        mannwhitneyu(values(train, "age"), values(test, "age")).pvalue)
    assert p["T stage"] == pytest.approx(
        mannwhitneyu(values(train, "t_stage"), values(test, "t_stage")).pvalue)
    assert p["Grade (FNCLCC)"] == pytest.approx(
        mannwhitneyu([pt.grade for pt in train], [pt.grade for pt in test]).pvalue)
    assert p["Tumour volume (ml)"] == pytest.approx(
        mannwhitneyu(list(volumes[0].values()), list(volumes[1].values())).pvalue)
    sex = [[sum(pt.clinical["sex"] == s for pt in c) for c in (train, test)] for s in "FM"]
    assert p["Sex"] == pytest.approx(fisher_exact(sex).pvalue)
    both = train + test
    assert p["Overall survival"] == pytest.approx(logrank_test(
        [pt.clinical["os_months"] for pt in both], [pt.clinical["os_event"] for pt in both],
        [0] * len(train) + [1] * len(test)).p)
    tests = table["p"].notna()
    assert tests.sum() == 8  # age, sex, T, N, M, grade, volume, OS
    np.testing.assert_allclose(table.loc[tests, "p_adjusted"],
                               np.minimum(1, table.loc[tests, "p"] * 8))
    assert "Bonferroni over the 8 tests" in footnote
    assert table.iloc[0][["training", "test"]].tolist() == ["60", "45"]
    age = table[table["variable"] == "Age (years)"].iloc[0]
    assert age["training"].endswith("; 1 missing")
    grade_rows = table[table["variable"] == "Grade (FNCLCC)"]
    assert grade_rows["level"].tolist() == ["G1", "G2", "G3"]
    n_g1 = sum(pt.grade == 1 for pt in test)
    assert grade_rows.iloc[0]["test"] == f"{n_g1}/45 ({100 * n_g1 / 45:.1f}%)"

    markdown = to_markdown(table, footnote, ("Training (A)", "Test (B)"))
    assert markdown.startswith("| | | Training (A) (n=60) | Test (B) (n=45) | p | p adjusted |")
    assert footnote in markdown


def _freeman_halton_exact(table) -> float:
    """Exact Fisher-Freeman-Halton p of an r x 2 table by enumerating every first column."""
    from itertools import product

    from scipy.stats import multivariate_hypergeom

    table = np.asarray(table)
    rows, first = table.sum(1), table[:, 0].sum()
    dist = multivariate_hypergeom(rows, first)
    observed = dist.pmf(table[:, 0])
    total = sum(dist.pmf(x) for x in product(*[range(r + 1) for r in rows])
                if sum(x) == first and dist.pmf(x) <= observed * (1 + 1e-7))
    return float(total)


def test_nominal_test_is_fisher_exact():
    assert nominal_test([[3, 7], [8, 2]]) == pytest.approx(fisher_exact([[3, 7], [8, 2]]).pvalue)
    assert _freeman_halton_exact([[3, 7], [8, 2]]) == pytest.approx(
        fisher_exact([[3, 7], [8, 2]]).pvalue)  # the reference agrees with scipy on 2 x 2
    table = [[3, 7], [8, 2], [4, 4]]
    # Monte Carlo over 20,000 tables: standard error about 0.002 at p = 0.1
    assert nominal_test(table) == pytest.approx(_freeman_halton_exact(table), abs=0.01)
    assert nominal_test(table) == nominal_test(table)  # seeded
    assert np.isnan(nominal_test([[5, 6], [0, 0]]))  # one category only: nothing to test


def test_a_variable_with_one_value_is_not_tested():
    train, test = _patients(20, 2, "A"), _patients(20, 3, "B")
    for patient in train + test:
        patient.clinical["n_stage"] = 0
    table, footnote = cohort_table(train, test)
    n_stage = table[table["variable"] == "N stage"]
    assert n_stage["level"].tolist() == ["N0"] and n_stage["p"].isna().all()
    assert "Bonferroni over the 6 tests" in footnote  # age, sex, T, M, grade, OS
