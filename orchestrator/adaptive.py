"""The adaptive LR search (``[search] strategy = "adaptive"``): a Ray Tune ``Searcher``.

Per batch size a ``bracket.Bracket`` searches the study's LR grid (the resolution): three
LRs around a predicted centre, extended in the direction of improvement until the optimum
is bracketed, then refined to neighbouring grid points; diverged LRs bound it from above.
The centre of the next batch size comes from a power law fitted (``analysis.lr_rules``)
on the best LRs found so far, and the prediction's spread sets the initial bracket width.
Batch sizes are visited small to large (or outside-in); whenever every started batch size
waits for results and a slot of the allocation is free, the next one starts, so up to
``max_concurrent`` trials are in flight.

A trial's objective is the analysis's: steps to target (the crossing interpolated in log
step between evaluations, as ``analysis.steps``), else the best target metric, diverged or
failed worst. Per-batch-size early stopping (the study's scheduler) still stops trials;
a stopped trial simply ranks by what it reached. The searcher's whole state is a plain dict
(``get_state``), pickled by Tune into its experiment checkpoints (``save``/``restore``),
so ``--resume`` continues with the same suggestions. ``RUN_DIR/tune/adaptive.json`` says
what it did (per batch size: centre, width, LRs tried, best) at every checkpoint.

    from orchestrator.adaptive import AdaptiveSearcher, format_plan
    print(format_plan(study))          # "adaptive: up to N trials; grid would be M"
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from orchestrator.bracket import DIVERGED, NOT_REACHED, REACHED, Bracket, Key, predict_log_lr, start_bracket
from orchestrator.grid import TrialPoint, lr_values, trial_config, trial_grid
from orchestrator.study import Study
from orchestrator.tune_config import CONFIG_KEY
from trainables.schedule import micro_batch_size

STATE_VERSION = 1
RECORD = Path("tune") / "adaptive.json"


def visit_order(batch_sizes: list[int], order: str) -> list[int]:
    """Batch sizes in the order the search starts them."""
    bs = sorted(batch_sizes)
    if order == "small_to_large":
        return bs
    out = []
    while bs:
        out.append(bs.pop(0))
        if bs:
            out.append(bs.pop())
    return out


class _Trial:
    """What one trial reported that its objective needs."""

    __slots__ = ("steps", "best", "prev", "diverged", "failed")

    def __init__(self) -> None:
        self.steps: float | None = None
        self.best: float | None = None  # oriented: lower is better
        self.prev: tuple[float, float] | None = None  # (step, metric) of the last evaluation
        self.diverged = False
        self.failed = False


class AdaptiveSearcher(Searcher):
    """Suggests ``{CONFIG_KEY: TrialConfig dict}`` per trial; FINISHED when every batch size's
    bracket is refined. ``max_concurrent``: trials in flight at most (the allocation's slots)."""

    def __init__(self, study: Study, max_concurrent: int = 1, run_dir: Path | None = None) -> None:
        super().__init__(metric=None, mode=None)
        self.study = study
        self.max_concurrent = max(1, int(max_concurrent))
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.order = visit_order(study.search.batch_sizes, study.search.adaptive.order)
        self.grids = {b: lr_values(study, b) for b in self.order}
        self.brackets: dict[int, Bracket] = {}  # started batch sizes, in start order
        self.trials: dict[str, tuple[int, int, int]] = {}  # trial id -> (B, LR index, seed)
        self.reports: dict[str, _Trial] = {}
        self.seed_values: dict[tuple[int, int], dict[int, Key]] = {}  # (B, index) -> seed -> key

    # --- Tune's Searcher interface ----------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        self.max_concurrent = max(1, int(max_concurrent))
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:  # or Searcher.FINISHED
        nxt = self.next_point()
        if nxt is None:
            return Searcher.FINISHED if self.finished() else None  # type: ignore[return-value]
        b, i, seed = nxt
        self.trials[trial_id] = (b, i, seed)
        self.reports[trial_id] = _Trial()
        self.brackets[b].pending.add(i)
        point = TrialPoint(b, micro_batch_size(b, self.study.budget.max_micro_batch), self.grids[b][i], seed)
        config = trial_config(self.study, point).to_dict()
        cap = self.step_cap(b)
        if cap is not None:
            config["max_steps"] = cap if config.get("max_steps") is None else min(cap, config["max_steps"])
        return {CONFIG_KEY: config}

    def step_cap(self, b: int) -> int | None:
        """A trial at ``b`` ends after ``stop_factor`` times the fewest steps to target known
        at any batch size <= b (steps to target never grow with B): past that it cannot be
        the best nor a useful neighbour of it, and it ranks as not reached, as it would."""
        factor = self.study.search.adaptive.stop_factor
        known = [
            math.exp(v[1]) for bb, br in self.brackets.items() if bb <= b for v in br.values.values() if v[0] == REACHED
        ]
        if factor <= 0 or not known:
            return None
        return max(1, math.ceil(factor * min(known)))

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        rep = self.reports.get(trial_id)
        if rep is None:
            return
        if result.get("diverged"):
            rep.diverged = True
        if result.get("error"):
            rep.failed = True
        target = self.study.target
        value, step = result.get(target.metric), result.get("step")
        if value is None or step is None or not math.isfinite(float(value)):
            return
        value, step = float(value), float(step)
        oriented = -value if target.mode == "max" else value
        rep.best = oriented if rep.best is None else min(rep.best, oriented)
        if rep.steps is None and target.reached(value):
            rep.steps = _crossing(rep.prev, (step, value), target.value)
        rep.prev = (step, value)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id not in self.trials:
            return
        rep = self.reports[trial_id]
        if result:
            last = rep.prev
            if last is None or result.get("step") != last[0]:
                self.on_trial_result(trial_id, result)
            rep.diverged = rep.diverged or bool(result.get("diverged"))
            rep.failed = rep.failed or bool(result.get("error"))
        del self.reports[trial_id]
        self.record_value(trial_id, objective(rep.steps, rep.best, rep.diverged or rep.failed or error))

    def record_value(self, trial_id: str, key: Key) -> None:
        """The objective of a finished trial; its LR completes when all its seeds have."""
        b, i, seed = self.trials.pop(trial_id)
        per_seed = self.seed_values.setdefault((b, i), {})
        per_seed[seed] = key
        if len(per_seed) >= self.study.search.seeds:
            self.brackets[b].complete(i, min(per_seed.values()))
            del self.seed_values[(b, i)]

    # --- the search ----------------------------------------------------------------------
    def next_point(self) -> tuple[int, int, int] | None:
        """(B, LR index, seed) to run next, None while waiting (or done)."""
        if len(self.trials) >= self.max_concurrent:
            return None
        for b, br in self.brackets.items():
            for i in br.proposals() + sorted(br.pending):
                seed = self._free_seed(b, i)
                if seed is not None:
                    return b, i, seed
        rest = [b for b in self.order if b not in self.brackets]
        if not rest:
            return None
        b = rest[0]
        self.brackets[b] = start_bracket(
            self.grids[b], predict_log_lr(b, self.best_lrs(), self.study.search.adaptive.fit_points)
        )
        return self.next_point()

    def _free_seed(self, b: int, i: int) -> int | None:
        taken = set(self.seed_values.get((b, i), {})) | {
            s for (bb, ii, s) in self.trials.values() if (bb, ii) == (b, i)
        }
        if i in self.brackets[b].values:
            return None
        return next((s for s in range(self.study.search.seeds) if s not in taken), None)

    def best_lrs(self) -> list[tuple[int, float]]:
        """(B, best grid LR) of the finished batch sizes whose optimum is interior."""
        out = []
        for b, br in self.brackets.items():
            k = br.best()
            if br.done() and k is not None and 0 < k < br.n - 1 and br.values[k][0] != DIVERGED[0]:
                out.append((b, self.grids[b][k]))
        return out

    def finished(self) -> bool:
        return (
            len(self.brackets) == len(self.order)
            and not self.trials
            and all(br.done() for br in self.brackets.values())
        )

    def summary(self) -> dict[str, Any]:
        """What the search did so far, per batch size (RUN_DIR/tune/adaptive.json)."""
        rows = []
        for b, br in self.brackets.items():
            k = br.best()
            rows.append(
                {
                    "batch_size": b,
                    "centre_lr": self.grids[b][br.centre],
                    "width_steps": br.width,
                    "lrs_tried": [self.grids[b][i] for i in sorted(br.values)],
                    "best_lr": None if k is None else self.grids[b][k],
                    "done": br.done(),
                }
            )
        grid = len(trial_grid(self.study))
        started = sum(len(br.values) for br in self.brackets.values()) * self.study.search.seeds + len(self.trials)
        return {
            "strategy": "adaptive",
            "trials_started": started,
            "grid_trials": grid,
            "batch_sizes_started": len(self.brackets),
            "batch_sizes": len(self.order),
            "per_batch": rows,
        }

    # --- state through Tune's checkpoints --------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "max_concurrent": self.max_concurrent,
            "brackets": [[b, br.state()] for b, br in self.brackets.items()],
            "trials": {t: list(v) for t, v in self.trials.items()},
            "reports": {t: [r.steps, r.best, r.prev, r.diverged, r.failed] for t, r in self.reports.items()},
            "seed_values": [[b, i, [[s, k[0], k[1]] for s, k in v.items()]] for (b, i), v in self.seed_values.items()],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"adaptive searcher state version {state.get('version')} is not {STATE_VERSION}")
        self.max_concurrent = int(state["max_concurrent"])
        self.brackets = {int(b): Bracket.from_state(s) for b, s in state["brackets"]}
        self.trials = {t: (int(v[0]), int(v[1]), int(v[2])) for t, v in state["trials"].items()}
        self.reports = {}
        for t, (steps, best, prev, div, failed) in state["reports"].items():
            r = _Trial()
            r.steps, r.best, r.prev, r.diverged, r.failed = (
                steps,
                best,
                None if prev is None else tuple(prev),
                div,
                failed,
            )
            self.reports[t] = r
        self.seed_values = {
            (int(b), int(i)): {int(s): (int(t), float(v)) for s, t, v in vals} for b, i, vals in state["seed_values"]
        }

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)
        if self.run_dir is not None:
            from trainables.contract import write_atomic

            write_atomic(self.run_dir / RECORD, json.dumps(self.summary(), indent=1))

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))


def objective(steps: float | None, best: float | None, bad: bool) -> Key:
    """The analysis's ranking of one trial as a ``Key`` (lower is better)."""
    if bad:
        return DIVERGED
    if steps is not None:
        return (REACHED, math.log(max(steps, 1e-300)))
    if best is not None:
        return (NOT_REACHED, best)
    return DIVERGED


def _crossing(prev: tuple[float, float] | None, hit: tuple[float, float], value: float) -> float:
    """Steps to target interpolated linearly in log step between two evaluations
    (``analysis.steps.crossing_steps``)."""
    if prev is None:
        return hit[0]
    (s0, m0), (s1, m1) = prev, hit
    frac = (value - m0) / (m1 - m0) if m1 != m0 else 1.0
    frac = min(max(frac, 0.0), 1.0) if math.isfinite(frac) else 1.0
    if s0 > 0:
        return math.exp(math.log(s0) + frac * (math.log(max(s1, 1e-300)) - math.log(s0)))
    return s0 + frac * (s1 - s0)


def allocation_slots(study: Study) -> int:
    """Trials that fit the connected Ray cluster at once (1 if Ray is not connected)."""
    import ray

    if not ray.is_initialized():
        return 1
    res = ray.cluster_resources()
    r = study.resources
    fits = [res.get("CPU", 0) / r.cpus_per_trial]
    if r.gpus_per_trial > 0:
        fits.append(res.get("GPU", 0) / r.gpus_per_trial)
    return max(1, int(min(fits) + 1e-9))


def tune_search(study: Study, run_dir: Path) -> dict[str, Any]:
    """The ``tune.TuneConfig`` keywords of an adaptive sweep: the searcher and a sample cap
    (the full grid: the searcher never repeats a point, and ends the sweep itself)."""
    searcher = AdaptiveSearcher(study, max_concurrent=allocation_slots(study), run_dir=run_dir)
    return {"search_alg": searcher, "num_samples": len(trial_grid(study))}


def planned_trials(study: Study) -> int:
    """Trials the adaptive search runs when every prediction is right: each batch size's
    response a unimodal bowl whose optimum sits at the bracket's predicted centre (the grid's
    centre, then the rule through it at B^0.5)."""
    s = AdaptiveSearcher(study, max_concurrent=1)
    n = 0
    while (p := s.next_point()) is not None:
        b, i, seed = p
        tid = f"plan{n}"
        s.trials[tid] = p
        s.brackets[b].pending.add(i)
        c = s.brackets[b].centre
        s.record_value(tid, (REACHED, float(abs(i - c))))
        n += 1
    return n


def format_plan(study: Study) -> str:
    """The dry run's line on the adaptive search."""
    m = len(trial_grid(study))
    return (
        f"adaptive: up to {planned_trials(study)} trials when the LR rule predicts each batch size's "
        f"optimum (at most {m}); grid would be {m}"
    )
