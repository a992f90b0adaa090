"""The typed results of an analysis, and ``fits_json``, their one ``report/fits.json`` form.

Every fit returns one of these frozen dataclasses. A value the data cannot identify is None,
never NaN, and a ``reason`` field says why. ``fits_json`` is the only place that writes the
contract's JSON (CONTRACTS.md, "report/fits.json"): its keys, nesting and null rules.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")       # a synthetic RUN_DIR; any real one works
    from analysis import load_run
    from analysis.fits import analyse
    from analysis.results import fits_json
    a = analyse(load_run("/tmp/demo"), n_boot=200)
    a.critical.b_crit, a.critical.b_crit_ci95, a.lr_scaling.preferred_rule
    fits_json(a)["critical_batch"]["b_crit"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from trainables.contract import LR_RULE_EXPONENTS, Target

from .bootstrap import Resamples
from .branching import Branched
from .load import Run
from .numbers import finite_or_none

if TYPE_CHECKING:
    from .range_test import RangeTestComparison
    from .schedules import ScheduleComparison

RULES: tuple[str, ...] = ("linear", "sqrt", "power", "saturating", "constant", "surge")
"""The LR scaling rules that are compared, in the order fits.json lists their AICc: the
contract's four, then the flat and the rise-then-fall laws that Adam-era sweeps show."""

FIXED_RULES: dict[str, float] = LR_RULE_EXPONENTS
"""The rules with a fixed exponent (eta* ∝ B^k, one parameter), and that exponent."""

NOISE_LAWS: tuple[str, ...] = ("saturating", "surge")
"""The rules with a noise scale B_noise: eta_max / (1 + B_noise/B) (McCandlish et al. 2018)
and eta_max / (1/2 (sqrt(B_noise/B) + sqrt(B/B_noise))), peaking at B_noise (Li et al. 2024)."""

Interval = tuple[float | None, float | None]
"""A bootstrap 95% interval (low, high); an end is None where it lies past the measured range."""


@dataclass(frozen=True)
class Band:
    """Pointwise bootstrap 95% band of the fitted S(B) over a grid of batch sizes."""

    batch_size: np.ndarray
    """The grid: log-spaced, reaching a little beyond the measured batch sizes."""

    low: np.ndarray
    """2.5th percentile over resamples of the fitted S at each grid point."""

    high: np.ndarray
    """97.5th percentile over resamples of the fitted S at each grid point."""


@dataclass(frozen=True)
class CriticalBatchFit:
    """S(B) = S_min (1 + B_crit / B) fitted to the steps to target (McCandlish et al. 2018)."""

    b_crit: float | None
    """Critical batch size, E_min / S_min; None when the data cannot identify the curve."""

    s_min: float | None
    """Steps to target in the limit of large batches; None together with ``b_crit``."""

    e_min: float | None
    """Examples to target in the limit of small batches, B_crit * S_min; None with ``b_crit``."""

    n_points: int
    """Batch sizes that reached the target and so entered the fit."""

    reason: str | None = None
    """Why ``b_crit``, ``s_min`` and ``e_min`` are None; None when they are estimated."""

    b_crit_ci95: Interval | None = None
    """Bootstrap 95% interval of B_crit; None without an estimate or when under half of the
    resamples gave one."""

    s_min_ci95: Interval | None = None
    """Bootstrap 95% interval of S_min."""

    e_min_ci95: Interval | None = None
    """Bootstrap 95% interval of E_min."""

    ci_reason: str | None = None
    """Why ``b_crit_ci95`` is None or open at an end, when ``b_crit`` itself is estimated."""

    ci_method: str | None = None
    """What produced the intervals: the run's bootstrap (``bootstrap.BOOTSTRAP_METHODS``) or,
    where resampling trials cannot vary S(B), ``profile likelihood`` of the fit's residuals;
    None without intervals."""

    ci_note: str | None = None
    """Why the intervals do not come from the bootstrap; None when they do."""

    band: Band | None = None
    """The fitted curve's bootstrap band; None when fewer than 20 resamples fitted."""

    n_boot_ok: int | None = None
    """Resamples whose fit gave a finite B_crit; None when ``b_crit`` is None."""


@dataclass(frozen=True)
class NoiseLaw:
    """One fitted law with a noise scale (see ``NOISE_LAWS``)."""

    eta_max: float
    """Saturating: the LR approached at large B; surge: the peak LR, reached at B_noise."""

    b_noise: float
    """The fitted B_noise (the grid bound when not ``identified``)."""

    identified: bool
    """B_noise lies within 100x of the measured batch sizes, not pinned at that bound."""

    b_noise_ci95: Interval | None = None
    """95% interval of B_noise by the fit's ``ci_method``; None when not identified."""

    ci_reason: str | None = None
    """Why ``b_noise_ci95`` is None or open at an end."""


@dataclass(frozen=True)
class LrScalingFit:
    """Which rule the interior best LRs follow across batch sizes, compared by AICc."""

    exponent: float | None
    """Free exponent k of eta* ∝ B^k (least squares on log-log); None with too few optima."""

    aicc: Mapping[str, float | None]
    """AICc of each rule in ``RULES``; None where the rule needs more points than there are."""

    preferred_rule: str | None
    """The rule chosen by ``lr_rules.SELECTION``: lowest AICc among the rules consistent with
    the free exponent's interval, a fixed one winning ties within 2; ``power`` when no
    fixed rule or noise law fits."""

    n_points: int
    """Batch sizes whose best LR is an interior optimum of steps, the points of the fit."""

    reason: str | None = None
    """Why ``exponent`` or ``preferred_rule`` is None; None when both are estimated."""

    intercept: Mapping[str, float] = field(default_factory=dict)
    """Log-LR at log B = 0 of the fixed rules and the power rule, to draw them; empty without
    a fit."""

    laws: Mapping[str, NoiseLaw] = field(default_factory=dict)
    """The fitted saturating and surge laws (``NOISE_LAWS``); empty without a fit."""

    rule_exponent: Mapping[str, float | None] = field(default_factory=dict)
    """Per rule, the log-log slope of its fitted curve over the fitted batch sizes: k for a
    fixed rule, the free exponent for power, the local average for the noise laws."""

    consistent: Mapping[str, bool] = field(default_factory=dict)
    """Per rule, whether it may be preferred: its ``rule_exponent`` lies inside
    ``exponent_ci95`` (power always does), and a noise law's B_noise is identified."""

    exponent_ci95: Interval | None = None
    """95% interval of ``exponent``, by ``ci_method``."""

    ci_reason: str | None = None
    """Why ``exponent_ci95`` is None when ``exponent`` is estimated."""

    ci_method: str | None = None
    """What produced ``exponent_ci95`` and the B_noise intervals: the run's bootstrap or,
    where resampling trials cannot move the best LRs, ``residual t interval`` (exponent) and
    ``profile likelihood`` (B_noise); None without intervals."""

    ci_note: str | None = None
    """Why the intervals do not come from the bootstrap; None when they do."""

    selection_note: str | None = None
    """What the report adds to the preferred rule: that no fixed rule fits (with the free
    exponent and its interval), or that no interval was available to check consistency."""

    selection_frequency: Mapping[str, float] = field(default_factory=dict)
    """Per rule, the fraction of resamples (of those that chose any) that preferred it."""

    excluded_edge: tuple[int, ...] = ()
    """Batch sizes left out because their best LR is on the grid's edge (only a bound)."""

    excluded_censored: tuple[int, ...] = ()
    """Batch sizes left out because no trial reached the target (their best LR optimises the
    target metric, not steps)."""


@dataclass(frozen=True)
class Regimes:
    """The scaling regimes of Shallue et al. 2018, read off the measured S(B)."""

    perfect_scaling_up_to: int | None
    """Largest batch size up to which S(B) stays within 20% of perfect (1/B) scaling."""

    diminishing_returns_up_to: int | None
    """First batch size beyond which a doubling of B cuts S by less than 10%."""

    reasons: Mapping[str, str] = field(default_factory=dict)
    """Field name -> why that boundary is None."""


@dataclass(frozen=True)
class NoiseScale:
    """The gradient noise scale B_simple (McCandlish et al. 2018) at the target."""

    measured: bool
    """Whether the curves carry any finite ``grad_noise_scale``."""

    b_simple: float | None
    """Median over batch sizes of ``per_batch``; None when nothing was measured at the target."""

    per_batch: Mapping[int, float]
    """Batch size -> B_simple of its best trial at the step it reached the target."""

    curves: pd.DataFrame
    """The best trials' measurements: batch_size, trial_id, step, examples_seen,
    grad_noise_scale."""


@dataclass(frozen=True)
class PerBatchRow:
    """One batch size in fits.json's ``per_batch``; the field names are the contract's keys."""

    batch_size: int
    """Global batch size of one optimizer update."""

    best_lr: float | None
    """Interpolated best learning rate; None where no trial has a finite objective."""

    lr_on_edge: bool
    """The best LR is the first or last of the grid, so it only bounds the optimum."""

    steps_to_target: float | None
    """Steps to target of the best trial; None when censored (no trial reached the target)."""

    examples_to_target: float | None
    """batch_size * steps_to_target; None when censored."""

    trials: int
    """Trials run at this batch size."""

    reached: int
    """Trials at this batch size that reached the target."""


@dataclass(frozen=True)
class Analysis:
    """The whole analysis of one run; ``analysis.fits.analyse`` builds it."""

    run: Run
    """The loaded run directory."""

    target: Target
    """The study's target, the goal of steps to target."""

    trials: pd.DataFrame
    """One row per trial with its steps to target (``steps.trial_table``)."""

    per_batch: pd.DataFrame
    """One row per batch size, ascending: the summary with bootstrap CIs, generalization gap,
    noise scale and S / S_min; for tables and figures."""

    per_batch_rows: tuple[PerBatchRow, ...]
    """The same batch sizes as fits.json lists them."""

    critical: CriticalBatchFit
    """Critical batch size with bootstrap intervals."""

    lr_scaling: LrScalingFit
    """LR scaling rule with bootstrap interval and selection frequencies."""

    regimes: Regimes
    """Perfect-scaling and diminishing-returns boundaries."""

    noise: NoiseScale
    """Gradient noise scale, when the curves carry it."""

    boot: Resamples
    """The bootstrap resamples (``boot.method`` says which bootstrap); the intervals come from
    them unless a fit's ``ci_method`` says otherwise."""

    n_boot: int
    """Bootstrap resamples drawn."""

    seed: int
    """Seed of the bootstrap's generator."""

    gap_train_column: str | None = None
    """The training-loss column the generalization gap subtracts: ``train_eval_loss`` (the
    final weights on a training subset) when the curves have it, else ``train_loss`` (the
    running mean since the previous report, biased); None when there is no gap."""

    reasons: Mapping[str, str] = field(default_factory=dict)
    """fits.json key path (``critical_batch.b_crit``, ``per_batch[256].steps_to_target``) ->
    why its value is null."""

    subsets: pd.DataFrame | None = None
    """With several ``search.train_fraction`` values: the trial table of every fraction
    (``run``, ``trials`` and the fits hold the largest one only); None otherwise."""

    branched: Branched | None = None
    """The study's ``[branching]`` measurement (``analysis.branching``); None without one."""

    range_test: RangeTestComparison | None = None
    """With an LR range test: its picks against the sweep (``analysis.range_test``); None otherwise."""

    schedules: ScheduleComparison | None = None
    """With several ``[schedule]`` modes: their comparison (``analysis.schedules``; ``run``,
    ``trials`` and the fits hold the first mode's trials only); None otherwise."""


def _interval(ci: Interval | None) -> list[float | None] | None:
    return None if ci is None else [finite_or_none(ci[0]), finite_or_none(ci[1])]


def _integer(x: int | None) -> int | None:
    v = finite_or_none(x)
    return None if v is None else int(round(v))


def _law(law: NoiseLaw) -> dict[str, Any]:
    return {
        "eta_max": finite_or_none(law.eta_max),
        "b_noise": finite_or_none(law.b_noise) if law.identified else None,
        "b_noise_ci95": _interval(law.b_noise_ci95),
    }


def fits_json(a: Analysis) -> dict[str, Any]:
    """The contract's fits.json: its keys and nesting, null where not estimable.

    Beyond the contract's keys: ``critical_batch.s_min_ci95``, ``e_min_ci95`` and
    ``ci_method``; ``lr_scaling.ci_method``, ``consistent`` (rule -> may be preferred),
    ``saturating`` and ``surge`` (eta_max, b_noise, b_noise_ci95), and ``bootstrap``
    (method, resamples, seed).
    """
    c, lr, reg = a.critical, a.lr_scaling, a.regimes
    return {
        "target": {"metric": a.target.metric, "mode": a.target.mode, "value": a.target.value},
        "per_batch": [
            {
                "batch_size": int(r.batch_size),
                "best_lr": finite_or_none(r.best_lr),
                "lr_on_edge": bool(r.lr_on_edge),
                "steps_to_target": finite_or_none(r.steps_to_target),
                "examples_to_target": finite_or_none(r.examples_to_target),
                "trials": int(r.trials),
                "reached": int(r.reached),
            }
            for r in a.per_batch_rows
        ],
        "critical_batch": {
            "b_crit": finite_or_none(c.b_crit),
            "b_crit_ci95": _interval(c.b_crit_ci95),
            "s_min": finite_or_none(c.s_min),
            "e_min": finite_or_none(c.e_min),
            "n_points": int(c.n_points),
            "s_min_ci95": _interval(c.s_min_ci95),
            "e_min_ci95": _interval(c.e_min_ci95),
            "ci_method": c.ci_method,
        },
        "lr_scaling": {
            "exponent": finite_or_none(lr.exponent),
            "exponent_ci95": _interval(lr.exponent_ci95),
            "preferred_rule": lr.preferred_rule,
            "aicc": {rule: finite_or_none(lr.aicc.get(rule)) for rule in RULES},
            "ci_method": lr.ci_method,
            "consistent": {rule: bool(v) for rule, v in lr.consistent.items()},
            **{law: (_law(lr.laws[law]) if law in lr.laws else None) for law in NOISE_LAWS},
        },
        "regimes": {
            "perfect_scaling_up_to": _integer(reg.perfect_scaling_up_to),
            "diminishing_returns_up_to": _integer(reg.diminishing_returns_up_to),
        },
        "noise_scale": {"b_simple": finite_or_none(a.noise.b_simple)},
        "bootstrap": {"method": a.boot.method, "n_boot": int(a.n_boot), "seed": int(a.seed)},
    }
