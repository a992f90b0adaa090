"""The equal-budget comparison and the curvature-or-forgetting verdict, on runs built to
have a known answer: which LR ``tuned`` picks, how much of the gap a rule closes, and the
verdict on sweeps shaped like curvature, like forgetting, and like noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from analysis import load_run
from analysis.curvature import CURVATURE, FORGETTING, UNDETERMINED, Sweep, curvature_forgetting, verdict
from analysis.equal_budget import equal_budget, gap_closed
from analysis.fits import analyse
from analysis.report import write_report
from trainables.contract import CURVES_FILE_SCHEMA, TRIALS_SCHEMA, curves_file, write_atomic

LRS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28]


def sweep(losses: list[float], unstable_from: int | None = None) -> Sweep:
    n = len(losses)
    bad = [unstable_from is not None and i >= unstable_from for i in range(n)]
    return Sweep(LRS[:n], [np.nan if b else v for v, b in zip(losses, bad, strict=True)], bad)


def valley(best: int, n: int = 8, depth: float = 0.3) -> list[float]:
    """A loss against the LR grid with its minimum at index ``best``."""
    return [0.3 + depth * abs(i - best) / n for i in range(n)]


def test_curvature_limited_sweeps_get_that_verdict() -> None:
    # the same best LR (index 4) just below an instability at index 5, on every subset
    v = verdict({f: sweep(valley(4), unstable_from=5) for f in (0.125, 0.25, 0.5, 1.0)})
    assert v.verdict == CURVATURE, v
    assert "0.32" in v.evidence  # names the instability LR


def test_forgetting_limited_sweeps_get_that_verdict() -> None:
    # the best LR climbs as the subset shrinks: index 5 on 1/8 ... index 2 on all of it
    v = verdict({0.125: sweep(valley(5)), 0.25: sweep(valley(4)), 0.5: sweep(valley(3)), 1.0: sweep(valley(2))})
    assert v.verdict == FORGETTING, v
    assert "rises by 3 grid steps" in v.evidence


def test_noise_and_missing_evidence_are_undetermined() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):  # flat losses with 0.5% noise and no instability: nothing to conclude
        flat = {f: sweep(list(0.5 * (1 + 0.005 * rng.standard_normal(8)))) for f in (0.125, 0.25, 0.5, 1.0)}
        assert verdict(flat).verdict == UNDETERMINED
    # a best LR that jumps around without a trend
    jumpy = {0.125: sweep(valley(2)), 0.25: sweep(valley(6)), 0.5: sweep(valley(1)), 1.0: sweep(valley(5))}
    assert verdict(jumpy).verdict == UNDETERMINED
    # the same best LR but the grid never reaches instability: curvature is not shown
    v = verdict({f: sweep(valley(4)) for f in (0.25, 1.0)})
    assert v.verdict == UNDETERMINED and "does not reach the edge of stability" in v.evidence
    assert verdict({1.0: sweep(valley(4), 5)}).verdict == UNDETERMINED  # one fraction


def test_gap_closed_is_the_share_of_the_constant_lrs_excess_a_rule_removes() -> None:
    assert gap_closed(0.395, 0.352, 0.345) == pytest.approx(0.86)  # the example
    assert gap_closed(0.4, 0.4, 0.3) == 0.0 and gap_closed(0.4, 0.3, 0.3) == 1.0
    assert gap_closed(0.3, 0.3, 0.3) is None and gap_closed(0.4, float("nan"), 0.3) is None


def write_run(run_dir: Path, study: str, trials: list[dict]) -> None:
    """A run directory with one curve of three evaluations per trial: ``final`` is its
    last val loss (train_eval loss 0.05 below it), its distance grows to ``dist``."""
    (run_dir / "study.toml").write_text(study)
    rows = []
    for t in trials:
        n_train = 1000 * t.get("fraction", 1.0)
        curve = []
        for k, step in enumerate((10, 20, 40)):
            share = (k + 1) / 3
            curve.append(
                {
                    "study": "p",
                    "trial_id": t["id"],
                    "micro_batch_size": t["b"],
                    "lr": t["lr"],
                    "seed": t["seed"],
                    "train_fraction": t.get("fraction", 1.0),
                    "step": step,
                    "examples_seen": step * t["b"],
                    "epoch": step * t["b"] / n_train,
                    "wall_time_s": 2.0 * step,
                    "train_loss": 2.3 - (2.3 - t["final"]) * share,
                    "train_eval_loss": t["final"] - 0.05,
                    "val_loss": t["final"] + (1 - share),
                    "val_accuracy": 0.9 - t["final"] / 10,
                    "weight_distance": t.get("dist", 1.0) * share,
                }
            )
        write_atomic(curves_file(run_dir / "curves", t["b"], t["id"]), pa.Table.from_pylist(curve, CURVES_FILE_SCHEMA))
        rows.append(
            {
                "trial_id": t["id"],
                "study": "p",
                "batch_size": t["b"],
                "micro_batch_size": t["b"],
                "lr": t["lr"],
                "seed": t["seed"],
                "train_fraction": t.get("fraction", 1.0),
                "status": t.get("status", "completed"),
                "steps": 40,
            }
        )
    write_atomic(run_dir / "trials.parquet", pa.Table.from_pylist(rows, TRIALS_SCHEMA))


def study_toml(search: str, max_examples: int) -> str:
    """A fixed_budget Fashion-MNIST study.toml with this ``[search]`` table."""
    return (
        f'name = "p"\ntrainable = "fashion_mnist"\n[protocol]\nkind = "fixed_budget"\n[search]\n{search}\n'
        f'[budget]\nmax_examples = {max_examples}\n[target]\nmetric = "val_accuracy"\nvalue = 0.85\n'
    )


POLICY_STUDY = study_toml(
    'batch_sizes = [32, 128]\nlr = { policies = ["constant", "linear", "sqrt", "tuned"], base_batch = 32, '
    "base_lr = 0.01, tuned = { min = 0.01, max = 0.16, points = 5 } }",
    1280,
)


def test_equal_budget_picks_tuned_among_finished_lrs_and_reports_the_gap_closed(tmp_path: Path) -> None:
    # B=128: constant 0.01 -> 0.60, sqrt 0.02 -> 0.50, linear 0.04 -> 0.42, best finished 0.08
    # -> 0.40 (two seeds); 0.16 is lower on one seed but its other seed diverged: not tuned.
    final = {0.01: 0.60, 0.02: 0.50, 0.04: 0.42, 0.08: 0.40, 0.16: 0.30}
    trials = [{"id": f"s{s}", "b": 32, "lr": 0.01, "seed": s, "final": 0.35, "dist": 5.0} for s in range(2)]
    for lr, loss in final.items():
        for s in range(2):
            t = {"id": f"b{lr}-{s}", "b": 128, "lr": lr, "seed": s, "final": loss + 0.01 * s, "dist": 10 * lr}
            if lr == 0.16 and s == 1:
                t["status"] = "diverged"
            trials.append(t)
    write_run(tmp_path, POLICY_STUDY, trials)
    eb = equal_budget(analyse(load_run(tmp_path), n_boot=20))
    assert eb is not None
    at = eb.table.set_index(["policy", "batch_size"])
    assert at.loc[("tuned", 128), "lr"] == 0.08
    assert at.loc[("linear", 128), "lr"] == 0.04 and at.loc[("sqrt", 128), "lr"] == 0.02
    assert at.loc[("constant", 128), "final_val_loss_mean"] == pytest.approx(0.605)
    assert at.loc[("constant", 128), "final_val_loss_sd"] == pytest.approx(0.01 / np.sqrt(2))
    assert at.loc[("tuned", 128), "gap_mean"] == pytest.approx(0.05)  # val minus train_eval
    assert at.loc[("linear", 128), "weight_distance_mean"] == pytest.approx(0.4)
    assert at.loc[("tuned", 32), "epoch_time_s_mean"] == pytest.approx(80 / (40 * 32 / 1000))
    closed = round((0.605 - 0.425) / (0.605 - 0.405), 2)  # 0.9 of the constant LR's excess
    assert any(f"B=128: {closed:.0%}" in line and "linear" in line for line in eb.findings), eb.findings
    report = (write_report(tmp_path, n_boot=20) / "report.md").read_text()
    assert "## Equal-budget comparison" in report and "figures/equal_budget.png" in report
    assert "## Curvature or forgetting" not in report  # no training fractions in this run


SUBSET_STUDY = study_toml(
    "batch_sizes = [128, 512]\ntrain_fraction = [0.25, 1.0]\nlr = { min = 0.01, max = 1.28, points = 8 }", 5120
)


def test_subset_runs_get_a_verdict_per_batch_size_and_fits_use_all_the_data(tmp_path: Path) -> None:
    # B=128: best LR index 5 on 1/4, 2 on all (forgetting); B=512: index 4 on both, and the
    # two LRs above it diverge on both (curvature)
    trials = []
    for b, best in ((128, {0.25: 5, 1.0: 2}), (512, {0.25: 4, 1.0: 4})):
        for f, i_best in best.items():
            for i, lr in enumerate(LRS):
                t = {"id": f"{b}-{f}-{i}", "b": b, "lr": lr, "seed": 0, "fraction": f}
                t["final"] = valley(i_best)[i]
                if b == 512 and i > 4:
                    t["status"] = "diverged"
                trials.append(t)
    write_run(tmp_path, SUBSET_STUDY, trials)
    a = analyse(load_run(tmp_path), n_boot=20)
    assert set(a.trials["train_fraction"]) == {1.0} and len(a.trials) == 16  # the fits: all the data
    cf = curvature_forgetting(a)
    assert cf is not None and cf.loss_column == "final_train_eval_loss"
    assert cf.verdicts[128].verdict == FORGETTING and cf.verdicts[512].verdict == CURVATURE
    row = cf.table.set_index(["batch_size", "train_fraction"]).loc[(512, 0.25)]
    assert row["best_lr"] == LRS[4] and row["instability_lr"] == LRS[5]
    out = write_report(tmp_path, n_boot=20)
    report = (out / "report.md").read_text()
    assert "B=128: **forgetting-limited**" in report and "B=512: **curvature-limited**" in report
    assert (out / "tables" / "curvature_forgetting.csv").is_file()
    assert "curvature_forgetting" in json.loads((out / "figures" / "figures.json").read_text())["figures"]
