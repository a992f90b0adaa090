"""Bootstrap over trials within each batch size, redoing the best-trial/best-LR step.

Each resample draws, at every batch size independently, as many trials as it has, with
replacement; ``best_lr.evaluate`` then recomputes the best steps and best LR exactly as on
the full data. The fits (critical batch, LR rules) run batched over the resulting rows.
Percentile intervals (SCIENCE.md section 5); the generator is seeded so reports repeat.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")           # a synthetic RUN_DIR; any real one works
    from analysis import load_run
    from analysis.best_lr import batch_trials
    from analysis.bootstrap import resample, percentile_ci
    from analysis.steps import trial_table
    run = load_run("/tmp/demo")
    boot = resample(batch_trials(trial_table(run), run.target), n_boot=1000)
    boot.steps.shape                           # (1000, number of batch sizes)
    percentile_ci(boot.steps[:, 0])            # (low, high) of S at the smallest B
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .best_lr import BatchTrials, evaluate

DEFAULT_N_BOOT = 1000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Resamples:
    """The per-batch step redone on ``n`` resamples of the trials: r rows, m batch sizes."""

    batch_sizes: np.ndarray
    """(m,) ascending."""

    steps: np.ndarray
    """(r, m) best steps to target; NaN where censored in that resample."""

    lr: np.ndarray
    """(r, m) best LR; NaN where no drawn trial has a finite objective."""

    on_edge: np.ndarray
    """(r, m) bool: the best LR is on the grid's edge."""

    @property
    def n(self) -> int:
        return int(self.steps.shape[0])


def resample(batches: list[BatchTrials], n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> Resamples:
    rng = np.random.default_rng(seed)
    m = len(batches)
    steps = np.full((n_boot, m), np.nan)
    lr = np.full((n_boot, m), np.nan)
    edge = np.zeros((n_boot, m), dtype=bool)
    for j, bt in enumerate(batches):
        n_t = len(bt.rows)
        if n_t == 0 or n_boot == 0:
            continue
        ev = evaluate(bt, rng.integers(0, n_t, size=(n_boot, n_t)))
        steps[:, j], lr[:, j], edge[:, j] = ev.steps, ev.lr, ev.on_edge
    return Resamples(np.array([bt.batch_size for bt in batches], dtype=float), steps, lr, edge)


def percentile_ci(samples: np.ndarray, min_fraction: float = 0.5,
                  level: float = 0.95) -> tuple[float | None, float | None] | None:
    """(low, high) percentile interval of the finite-or-infinite samples; NaN = failed fit.

    +inf samples (a bound beyond the measured range) keep their rank, so an interval whose
    end lies there gets None for that end. None when fewer than ``min_fraction`` of the
    resamples gave an estimate at all.
    """
    s = np.asarray(samples, dtype=float)
    s = s[~np.isnan(s)]
    if s.size == 0 or s.size < min_fraction * np.asarray(samples).size:
        return None
    tail = 100 * (1 - level) / 2
    # Interpolating next to inf gives NaN; a huge finite stand-in keeps the ranks.
    big = 1e305
    lo, hi = np.percentile(np.where(np.isinf(s), np.sign(s) * big, s), [tail, 100 - tail])
    return (float(lo) if abs(lo) < 1e300 else None, float(hi) if abs(hi) < 1e300 else None)
