"""Curvature or forgetting: what limits the learning rate at each batch size, read off LR
sweeps on nested subsets of the training set (``search.train_fraction``; Myrtle.ai, "How to
train your ResNet 2").

Per (batch size, fraction) and learning rate, over its seeds: the final training loss of
the final weights on the data trained on (``train_eval_loss``, else the running
``train_loss``; what the LR limits is optimisation), and whether the LR is *unstable*: most
of its seeds diverged, or ended no lower than their first reported training loss. From
these, per (B, fraction): the best LR (lowest mean loss among stable LRs) and the
instability LR (the smallest unstable one). The verdict per batch size, in steps of its LR
grid:

- **forgetting-limited**: the best LR does not fall as the subset grows, and every LR
  within ``NEAR`` of the best loss on the smallest subset stands at least
  ``FORGETTING_RISE`` grid steps above every such LR on the largest (a smaller set is
  revisited sooner, so forgetting within an epoch binds less; a flat, noisy sweep has a
  wide near-best range and cannot show a rise);
- **curvature-limited**: the best LR is the same at every fraction (within
  ``SAME_STEPS``), every fraction has an instability LR, the same (within ``SAME_STEPS``),
  and the best LR sits at most ``EDGE_STEPS`` below it (the LR is as high as stability
  allows, whatever the data);
- **undetermined** otherwise, with the evidence that is missing.

    from analysis.curvature import Sweep, verdict
    sweeps = {f: Sweep(lrs=[0.1, 0.2, 0.4, 0.8], loss=[0.5, 0.4, 0.3, float("nan")],
                       unstable=[False, False, False, True]) for f in (0.25, 0.5, 1.0)}
    verdict(sweeps).verdict          # 'curvature-limited'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .numbers import MISSING_CELL, format_number
from .results import Analysis

FORGETTING_RISE = 2
"""Grid steps the best LR must rise by, from the largest subset to the smallest."""
SAME_STEPS = 1
"""Grid steps within which two best (or instability) LRs count as the same."""
EDGE_STEPS = 2
"""Grid steps below the instability LR within which the best LR counts as stability-bound."""
NEAR = 0.02
"""Relative loss within which an LR is as good as the best (the noise of one final loss)."""

CURVATURE, FORGETTING, UNDETERMINED = "curvature-limited", "forgetting-limited", "undetermined"


@dataclass(frozen=True)
class Sweep:
    """One (batch size, fraction)'s LR sweep: per LR ascending, the mean loss over its
    stable seeds (NaN where none) and whether it is unstable."""

    lrs: list[float]
    loss: list[float]
    unstable: list[bool]

    def best(self) -> float | None:
        """The stable LR with the lowest loss; None when no LR is stable."""
        ok = [(v, lr) for lr, v, u in zip(self.lrs, self.loss, self.unstable, strict=True) if not u and np.isfinite(v)]
        return min(ok)[1] if ok else None

    def near_best(self) -> list[float]:
        """The stable LRs whose loss is within ``NEAR`` of the best one's."""
        best = self.best()
        if best is None:
            return []
        cut = self.loss[self.lrs.index(best)] * (1 + NEAR)
        return [lr for lr, v, u in zip(self.lrs, self.loss, self.unstable, strict=True) if not u and v <= cut]

    def instability(self) -> float | None:
        """The smallest unstable LR; None when every LR of the sweep is stable."""
        return next((lr for lr, u in zip(self.lrs, self.unstable, strict=True) if u), None)


@dataclass(frozen=True)
class Verdict:
    """What limits the LR at one batch size, and why this module says so."""

    verdict: str
    """``curvature-limited``, ``forgetting-limited`` or ``undetermined``."""
    evidence: str
    """The facts the verdict rests on, in one sentence."""


def verdict(sweeps: dict[float, Sweep]) -> Verdict:
    """The verdict for one batch size from its sweeps per training fraction."""
    fractions = sorted(sweeps)
    if len(fractions) < 2:
        return Verdict(UNDETERMINED, "one training fraction: nothing to compare")
    grid = sorted({lr for s in sweeps.values() for lr in s.lrs})
    step = {lr: i for i, lr in enumerate(grid)}
    best = {f: sweeps[f].best() for f in fractions}
    unstable = {f: sweeps[f].instability() for f in fractions}
    if any(v is None for v in best.values()):
        missing = ", ".join(f"{f:g}" for f in fractions if best[f] is None)
        return Verdict(UNDETERMINED, f"no stable LR at fraction {missing}")
    b = [step[best[f]] for f in fractions]  # type: ignore[index]
    shown = ", ".join(f"{f:g}: {best[f]:.3g}" for f in fractions)
    rise = b[0] - b[-1]
    clear = min(step[x] for x in sweeps[fractions[0]].near_best()) - max(
        step[x] for x in sweeps[fractions[-1]].near_best()
    )
    if all(x >= y for x, y in zip(b, b[1:], strict=False)) and clear >= FORGETTING_RISE:
        return Verdict(
            FORGETTING,
            f"the best LR rises by {rise} grid steps as the subset shrinks (fraction: best LR {shown})",
        )
    same_best = max(b) - min(b) <= SAME_STEPS
    if not same_best:
        return Verdict(UNDETERMINED, f"the best LR moves without a trend (fraction: best LR {shown})")
    if any(u is None for u in unstable.values()):
        missing = ", ".join(f"{f:g}" for f in fractions if unstable[f] is None)
        return Verdict(
            UNDETERMINED,
            f"the best LR is the same at every fraction ({shown}) but no LR tried is unstable at fraction "
            f"{missing}: the sweep does not reach the edge of stability",
        )
    u = [step[unstable[f]] for f in fractions]  # type: ignore[index]
    at = ", ".join(f"{f:g}: {unstable[f]:.3g}" for f in fractions)
    if max(u) - min(u) <= SAME_STEPS and all(ui - bi <= EDGE_STEPS for ui, bi in zip(u, b, strict=True)):
        return Verdict(
            CURVATURE,
            f"the same best LR at every fraction ({shown}), just below an instability LR that does not "
            f"move with the subset ({at})",
        )
    return Verdict(
        UNDETERMINED, f"the best LR does not move ({shown}), but instability sets in far above it or unevenly ({at})"
    )


@dataclass(frozen=True)
class CurvatureForgetting:
    """The section's content."""

    curves: pd.DataFrame
    """Per (batch size, fraction, LR): loss (mean over stable seeds), seeds, unstable."""
    table: pd.DataFrame
    """Per (batch size, fraction): LRs tried, best LR and its loss, instability LR (the CSV)."""
    text: pd.DataFrame
    """The table, rounded (report and LaTeX)."""
    verdicts: dict[int, Verdict]
    """Per batch size."""
    loss_column: str
    """The trial-table column the losses come from."""


def sweep_curves(subsets: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Per (batch size, fraction, LR): mean final training loss over stable seeds, and
    whether most seeds are unstable; and the loss column used."""
    t = subsets
    col = (
        "final_train_eval_loss"
        if np.isfinite(t["final_train_eval_loss"].to_numpy(dtype=float)).any()
        else "final_train_loss"
    )
    loss = t[col].to_numpy(dtype=float)
    first = t["first_train_loss"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        bad = (t["status"] == "diverged").to_numpy() | ~np.isfinite(loss) | (np.isfinite(first) & (loss >= first))
    t = t.assign(_loss=np.where(bad, np.nan, loss), _bad=bad)
    rows = []
    for (b, f, lr), g in t.groupby(["batch_size", "train_fraction", "lr"], sort=True):
        stable = g.loc[~g["_bad"], "_loss"]
        rows.append(
            {
                "batch_size": int(b),
                "train_fraction": float(f),
                "lr": float(lr),
                "seeds": len(g),
                "unstable_seeds": int(g["_bad"].sum()),
                "loss": float(stable.mean()) if len(stable) else np.nan,
                "unstable": bool(g["_bad"].sum() * 2 > len(g)),
            }
        )
    return pd.DataFrame(rows), col


def curvature_forgetting(a: Analysis) -> CurvatureForgetting | None:
    """The section for a run with several training fractions; None otherwise."""
    if a.subsets is None:
        return None
    curves, col = sweep_curves(a.subsets)
    verdicts, rows = {}, []
    for b, at_b in curves.groupby("batch_size", sort=True):
        sweeps = {
            float(f): Sweep(list(g["lr"]), list(g["loss"]), list(g["unstable"]))
            for f, g in at_b.groupby("train_fraction", sort=True)
        }
        verdicts[int(b)] = verdict(sweeps)
        for f, s in sweeps.items():
            best = s.best()
            rows.append(
                {
                    "batch_size": int(b),
                    "train_fraction": f,
                    "lrs": len(s.lrs),
                    "best_lr": best,
                    "best_loss": s.loss[s.lrs.index(best)] if best is not None else np.nan,
                    "instability_lr": s.instability(),
                    "verdict": verdicts[int(b)].verdict,
                }
            )
    table = pd.DataFrame(rows)

    def g(x: float | None) -> str:
        return format_number(x, missing=MISSING_CELL)

    text = pd.DataFrame(
        {
            "B": table["batch_size"].map(g),
            "fraction": table["train_fraction"].map(g),
            "LRs": table["lrs"].map(g),
            "best LR": table["best_lr"].map(g),
            "its loss": table["best_loss"].map(g),
            "unstable from": table["instability_lr"].map(
                lambda x: "none tried" if x is None or not np.isfinite(x) else g(x)
            ),
            "verdict": table["verdict"],
        }
    )
    return CurvatureForgetting(curves, table, text, verdicts, col)
