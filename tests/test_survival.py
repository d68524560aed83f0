"""Kaplan-Meier and log-rank against lifelines, scipy and a hand computation; the KM plot."""

import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test as lifelines_logrank
from lifelines.statistics import multivariate_logrank_test
from scipy.stats import CensoredData
from scipy.stats import logrank as scipy_logrank

from sarcograde.survival import (at_risk_table, bonferroni, kaplan_meier, logrank_test,
                                 plot_kaplan_meier, risk_times)


def _cohort(n: int, seed: int):
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, n)
    death = rng.exponential(np.where(group == 1, 25, 50))
    follow_up = rng.uniform(5, 90, n)
    time = np.round(np.minimum(death, follow_up))  # whole months: ties between groups
    return time, (death <= follow_up).astype(int), group


def test_kaplan_meier_hand_computed():
    # times 2, 3+, 5, 5, 8+: S(2) = 4/5, S(5) = 4/5 * (1 - 2/3) = 4/15
    km = kaplan_meier([2, 3, 5, 5, 8], [1, 0, 1, 1, 0])
    np.testing.assert_allclose(km.survival_at([0, 1.9, 2, 4, 5, 10]),
                               [1, 1, 0.8, 0.8, 4 / 15, 4 / 15])
    assert km.number_at_risk([0, 2, 2.5, 5, 6, 9]).tolist() == [5, 5, 4, 3, 1, 0]
    assert km.median == 5


def test_kaplan_meier_equals_lifelines_at_every_time():
    time, event, _ = _cohort(80, 0)
    km = kaplan_meier(time, event)
    ref = KaplanMeierFitter().fit(time, event)
    timeline = ref.survival_function_.index.to_numpy()
    np.testing.assert_allclose(km.survival_at(timeline), ref.survival_function_.iloc[:, 0],
                               atol=1e-12)
    np.testing.assert_allclose(km.time, timeline)
    ci = ref.confidence_interval_
    np.testing.assert_allclose(km.ci_low, ci.iloc[:, 0], atol=1e-10)
    np.testing.assert_allclose(km.ci_high, ci.iloc[:, 1], atol=1e-10)
    assert km.median == ref.median_survival_time_
    np.testing.assert_array_equal(km.at_risk, ref.event_table["at_risk"])


@pytest.mark.parametrize("seed", [1, 2])
def test_logrank_equals_scipy_and_lifelines(seed):
    time, event, group = _cohort(70, seed)
    ours = logrank_test(time, event, group)
    a, b = group == 0, group == 1
    ref_lifelines = lifelines_logrank(time[a], time[b], event[a], event[b])
    ref_scipy = scipy_logrank(CensoredData.right_censored(time[a], event[a] == 0),
                              CensoredData.right_censored(time[b], event[b] == 0))
    assert ours.p == pytest.approx(ref_lifelines.p_value, rel=1e-9)
    assert ours.p == pytest.approx(ref_scipy.pvalue, rel=1e-9)
    assert ours.statistic == pytest.approx(ref_lifelines.test_statistic, rel=1e-9)
    assert sum(ours.observed.values()) == event.sum()
    assert sum(ours.expected.values()) == pytest.approx(event.sum())


def test_logrank_three_groups_equals_lifelines():
    time, event, _ = _cohort(90, 3)
    group = np.random.default_rng(3).integers(0, 3, 90)
    ours = logrank_test(time, event, group)
    ref = multivariate_logrank_test(time, group, event)
    assert ours.df == 2
    assert ours.p == pytest.approx(ref.p_value, rel=1e-9)


def test_degenerate_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="two groups"):
        logrank_test([1, 2], [1, 1], ["a", "a"])
    with pytest.raises(ValueError, match="death"):
        logrank_test([1, 2], [0, 0], ["a", "b"])
    with pytest.raises(ValueError, match="non-negative"):
        kaplan_meier([-1, 2], [1, 0])


def test_bonferroni():
    np.testing.assert_allclose(bonferroni([0.01, 0.2, np.nan, 0.5]), [0.03, 0.6, np.nan, 1.0])


def test_at_risk_table_and_km_plot_are_headless(tmp_path):
    from sarcograde.artifacts import save_figure

    time, event, group = _cohort(40, 4)
    curves = {"low": kaplan_meier(time[group == 0], event[group == 0]),
              "high": kaplan_meier(time[group == 1], event[group == 1])}
    ticks = risk_times(float(time.max()))
    table = at_risk_table(curves, ticks)
    assert table.loc["low", "0"] == int((group == 0).sum())
    assert table.loc["high", "0"] == int((group == 1).sum())
    assert table.loc["low", f"{ticks[-1]:g}"] == int(((group == 0) & (time >= ticks[-1])).sum())
    save_figure(plot_kaplan_meier(curves, "test", "log-rank p = 0.1"), tmp_path / "km.png")
    assert (tmp_path / "km.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
