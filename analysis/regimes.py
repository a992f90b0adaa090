"""The three scaling regimes of Shallue et al. 2018, read model-free off the measured S(B).

- perfect scaling up to the largest B such that every measured B up to it keeps S(B)
  within 20% of linear scaling from the smallest B: S(B) <= 1.2 * S(B_0) * B_0 / B;
- diminishing returns up to the first measured B beyond which a doubling of B cuts S by
  less than 10% (steps between measured batch sizes are converted to per-doubling cuts);
- maximal data parallelism beyond that.

Censored batch sizes (NaN) are skipped. A boundary the data do not reach is None, with the
reason.

    from analysis.regimes import regimes
    regimes([32, 64, 128, 256, 512], [8000, 4100, 2300, 1500, 1400])
    # Regimes(perfect_scaling_up_to=128, diminishing_returns_up_to=256, reasons={})
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .results import Regimes

PERFECT_TOLERANCE = 0.20
DOUBLING_CUT = 0.10


def regimes(batch_sizes: Sequence[float] | np.ndarray, steps: Sequence[float] | np.ndarray) -> Regimes:
    """Regime boundaries (batch sizes) and the reason for any that is None."""
    b = np.asarray(batch_sizes, dtype=float)
    s = np.asarray(steps, dtype=float)
    keep = np.isfinite(s) & (s > 0)
    order = np.argsort(b[keep])
    b, s = b[keep][order], s[keep][order]
    if b.size < 2:
        reason = f"{b.size} batch size(s) reached the target; regimes need 2"
        return Regimes(None, None, {"perfect_scaling_up_to": reason, "diminishing_returns_up_to": reason})
    linear = s[0] * b[0] / b
    within = s <= (1.0 + PERFECT_TOLERANCE) * linear
    # The run of batch sizes from the smallest that all stay within the tolerance.
    n_within = int(np.argmin(within)) if not within.all() else within.size
    perfect = int(b[max(n_within, 1) - 1])

    doublings = np.log2(b[1:] / b[:-1])
    cut_per_doubling = 1.0 - (s[1:] / s[:-1]) ** (1.0 / doublings)
    small = np.flatnonzero(cut_per_doubling < DOUBLING_CUT)
    if small.size:
        return Regimes(perfect, int(b[small[0]]))
    return Regimes(
        perfect,
        None,
        {
            "diminishing_returns_up_to": (
                f"S still falls by at least {DOUBLING_CUT:.0%} per doubling at the largest batch size "
                f"({int(b[-1])}): maximal data parallelism is not reached"
            )
        },
    )
