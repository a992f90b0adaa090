"""Bootstrap over trials, hierarchical over seeds when a run has several, redoing the best-trial/best-LR step.

With one seed, each resample draws, at every batch size independently, as many trials as
it has, with replacement. With several seeds (SCIENCE.md section 5) it draws the seeds
first, with replacement and the same draw at every batch size (seed s is one replicate of
the whole sweep), then, within each drawn seed, that seed's trials at each batch size with
replacement. ``best_lr.evaluate`` then recomputes the best steps and best LR exactly as on
the full data. The fits (critical batch, LR rules) run batched over the resulting rows.
Percentile intervals; the generator is seeded so reports repeat.

A batch size whose resampled value never changes (one trial there, or one that reached the
target) gives the bootstrap nothing to vary: ``varies`` tells, and ``analysis.fits`` then
takes its intervals from the fit's residuals instead.

    from analysis.synthetic import write_synthetic_run
    write_synthetic_run("/tmp/demo")           # a synthetic RUN_DIR; any real one works
    from analysis import load_run
    from analysis.best_lr import batch_trials
    from analysis.bootstrap import resample, percentile_ci
    from analysis.steps import trial_table
    run = load_run("/tmp/demo")
    boot = resample(batch_trials(trial_table(run), run.target), n_boot=1000)
    boot.steps.shape, boot.method              # (1000, number of batch sizes), 'bootstrap over trials ...'
    percentile_ci(boot.steps[:, 0])            # (low, high) of S at the smallest B
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .best_lr import BatchTrials, evaluate

DEFAULT_N_BOOT = 1000
DEFAULT_SEED = 0
TRIALS = "bootstrap over trials within each batch size"
HIERARCHICAL = "hierarchical bootstrap: seeds, then trials within each seed and batch size"
BOOTSTRAP_METHODS = (TRIALS, HIERARCHICAL)


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

    method: str = TRIALS
    """``TRIALS`` or ``HIERARCHICAL``."""

    n_seeds: int = 1
    """Distinct seeds in the run (the units the hierarchical bootstrap draws)."""

    @property
    def n(self) -> int:
        return int(self.steps.shape[0])


def _seed_codes(batches: list[BatchTrials]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The run's distinct seeds, and each batch size's trials coded by them (NaN is a seed too)."""
    values = np.concatenate([np.nan_to_num(bt.seed, nan=-1.0) for bt in batches]) if batches else np.array([])
    seeds = np.unique(values)
    return seeds, [np.searchsorted(seeds, np.nan_to_num(bt.seed, nan=-1.0)) for bt in batches]


def _hierarchical_index(codes: np.ndarray, drawn: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(r, width) trial indices: per row, each drawn seed's trials resampled within it.

    Index ``len(codes)`` is a placeholder trial that never wins (padding); a repeated trial
    changes nothing either, since the evaluation takes minima over the drawn trials.
    """
    r, k = drawn.shape
    members = [np.flatnonzero(codes == s) for s in range(int(codes.max(initial=-1)) + 1)]
    width = max((len(m) for m in members), default=0)
    out = np.full((r, k, max(width, 1)), len(codes), dtype=np.int64)
    for s, m in enumerate(members):
        if len(m) == 0:
            continue
        picks = m[rng.integers(0, len(m), size=(r, k, len(m)))]
        out[:, :, : len(m)] = np.where((drawn == s)[..., None], picks, out[:, :, : len(m)])
    return out.reshape(r, -1)


def _with_placeholder(bt: BatchTrials) -> BatchTrials:
    return replace(
        bt, lr_index=np.r_[bt.lr_index, 0], steps=np.r_[bt.steps, np.inf], fallback=np.r_[bt.fallback, np.inf]
    )


def resample(
    batches: list[BatchTrials], n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED, hierarchical: bool | None = None
) -> Resamples:
    """Resample the trials ``n_boot`` times; ``hierarchical`` defaults to "several seeds"."""
    rng = np.random.default_rng(seed)
    m = len(batches)
    steps = np.full((n_boot, m), np.nan)
    lr = np.full((n_boot, m), np.nan)
    edge = np.zeros((n_boot, m), dtype=bool)
    seeds, codes = _seed_codes(batches)
    if hierarchical is None:
        hierarchical = seeds.size > 1
    drawn = rng.integers(0, max(seeds.size, 1), size=(n_boot, seeds.size)) if hierarchical else None
    for j, bt in enumerate(batches):
        n_t = len(bt.rows)
        if n_t == 0 or n_boot == 0:
            continue
        if drawn is None:
            ev = evaluate(bt, rng.integers(0, n_t, size=(n_boot, n_t)))
        else:
            ev = evaluate(_with_placeholder(bt), _hierarchical_index(codes[j], drawn, rng))
        steps[:, j], lr[:, j], edge[:, j] = ev.steps, ev.lr, ev.on_edge
    return Resamples(
        np.array([bt.batch_size for bt in batches], dtype=float),
        steps,
        lr,
        edge,
        method=HIERARCHICAL if hierarchical else TRIALS,
        n_seeds=int(seeds.size),
    )


def varies(samples: np.ndarray) -> np.ndarray:
    """Per column of (r, m) resamples: do the finite values differ at all (relative 1e-9)?"""
    s = np.atleast_2d(np.asarray(samples, dtype=float))
    finite = np.isfinite(s)
    hi = np.where(finite, s, -np.inf).max(axis=0)
    lo = np.where(finite, s, np.inf).min(axis=0)
    with np.errstate(invalid="ignore"):
        return finite.any(axis=0) & (hi - lo > 1e-9 * np.maximum(np.abs(hi), np.abs(lo)))


def percentile_ci(
    samples: np.ndarray, min_fraction: float = 0.5, level: float = 0.95
) -> tuple[float | None, float | None] | None:
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
