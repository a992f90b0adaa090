"""The LR range test: the exponential LR of its trial, the suggestion rule, the study's
``lr.range_test`` form from the dry run to the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.range_test import MARGIN, read_picks, suggest
from support import launch, trial
from trainables import get
from trainables.schedule import Plan, Ramp


def range_rows(batch_size: int, momentum: float = 0.0, steps: int = 100) -> list[dict]:
    rows: list[dict] = []
    cfg = trial(
        {
            "batch_size": batch_size,
            "lr": 10.0,
            "max_steps": steps,
            "dim": 1000,
            "mode": "expected",
            "momentum": momentum,
            "schedule": Ramp(lr="range_test", range_min=1e-4),
        }
    )
    get("nqm")(cfg, lambda m, c=None: rows.append(m))
    return rows


def test_the_range_test_lr_rises_exponentially_from_min_to_max_one_evaluation_per_update() -> None:
    p = Plan.of(
        trial({"batch_size": 8, "lr": 10.0, "max_steps": 101, "schedule": Ramp(lr="range_test", range_min=1e-4)})
    )
    lrs = np.array([p.lr_at_step(s) for s in range(p.cap)])
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(10.0)
    assert np.allclose(lrs[1:] / lrs[:-1], 10 ** (5 / 100))  # five decades over 100 steps
    assert p.eval_steps(1.05) == list(range(1, 102))


@pytest.mark.parametrize("batch_size", [8, 64, 1024])
def test_on_the_nqm_the_pick_is_within_2x_of_the_divergence_bound_over_the_margin(batch_size: int) -> None:
    """Plain SGD on the NQM (h_max = 1) diverges past 2/h_max; the rule's pick is the
    smoothed minimum over MARGIN, so it must land within a factor 2 of 2/h_max / MARGIN."""
    rows = range_rows(batch_size)
    assert rows[-1].get("diverged") and rows[-1]["lr_current"] > 2.0  # the test ran past the bound
    s = suggest([r["lr_current"] for r in rows], [r["train_loss"] for r in rows])
    bound = 2.0 / 1.0 / MARGIN
    assert s.pick is not None and bound / 2 <= s.pick <= bound * 2, s
    assert s.steepest_lr is not None and s.steepest_lr < s.minimum_lr  # steepest: still on the way down


def test_a_loss_that_never_rises_or_is_never_finite_says_so() -> None:
    lrs = np.geomspace(1e-4, 1.0, 50)
    falling = suggest(lrs, np.linspace(2.0, 1.0, 50))
    assert falling.minimum_lr == pytest.approx(1.0) and "may be too low" in falling.note
    none = suggest(lrs, np.full(50, np.nan))
    assert none.pick is None and "finite" in none.note


@pytest.mark.parametrize(
    "value,message",
    [
        ("{range_test={min=1.0,max=1.0}}", "search.lr.range_test: min (1) must be below max (1)"),
        ("{range_test={min=10,max=0.1}}", "search.lr.range_test: min (10) must be below max (0.1)"),
        ("{range_test={min=1e-5,max=1,steps=5}}", "search.lr.range_test.steps"),
        ("{range_test={min=1e-5,max=1},points=0}", "search.lr.points"),
    ],
)
def test_a_bad_range_test_exits_2_naming_the_key(value: str, message: str, tmp_path: Path, capsys) -> None:
    from orchestrator.launch import main

    out = tmp_path / "run"
    assert main(["--study", "nqm-range-test", "--set", f"search.lr={value}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and err.count("\n") == 0, err
    assert not out.exists()


@pytest.mark.parametrize(
    "study,sets,message",
    [
        (
            "gpt-small",
            ["search.lr={range_test={min=1e-5,max=1}}"],
            "search.lr.range_test: trainable gpt does not follow",
        ),
        ("nqm-range-test", ["search.lr.centres={1=0.1,4=0.2}"], "search.lr.centres: give one for every batch size"),
        ("nqm-range-test", ["search.strategy='adaptive'"], "search.strategy: the adaptive search tunes one LR grid"),
    ],
)
def test_a_range_test_the_study_cannot_run_exits_2(
    study: str, sets: list[str], message: str, tmp_path: Path, capsys
) -> None:
    from orchestrator.launch import main

    out = tmp_path / "run"
    assert main(["--study", study, *(a for s in sets for a in ("--set", s)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and err.count("\n") == 0, err
    assert not out.exists()


def test_the_dry_run_lists_the_range_tests_and_leaves_the_grids_to_them(capsys) -> None:
    from orchestrator.launch import main

    assert main(["--study", "nqm-range-test", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.count("7 LRs over ±1 decades, centred after the range test") == 9
    assert "range test: 9 trials before the sweep, one per batch size, each 100 updates" in text
    assert "63 trials (9 batch sizes)" in text


def test_the_range_tests_run_first_centre_the_grids_and_resume_without_rerunning(tmp_path: Path) -> None:
    """The smoke study through the launcher and local Ray: one range-test trial per batch size
    under RUN_DIR/range_test, the sweep's LRs at each batch size centred on its pick, the
    report's section; a second resolution reads picks.json back and runs nothing."""
    import pyarrow.parquet as pq

    from orchestrator import rundir
    from orchestrator.range_test import centred

    run = tmp_path / "run"
    r = launch("--cluster", "local", "--study", "nqm-range-test", "--budget", "smoke", "--out", str(run), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    tests = pq.read_table(run / "range_test" / "trials.parquet").to_pandas()
    # each ran until its loss blew up past the divergence bound, after at least 80 of its 100 updates
    assert sorted(tests["batch_size"]) == [1, 16, 256] and set(tests["status"]) == {"diverged"}
    assert all(80 <= s <= 100 for s in tests["steps"]), tests["steps"]
    picks = read_picks(run)
    assert picks is not None and all(p.pick is not None and 0.1 <= p.pick <= 0.4 for p in picks.values()), picks
    sweep = pq.read_table(run / "trials.parquet").to_pandas()
    for b, d in sweep.groupby("batch_size"):
        expected = picks[int(b)].pick * np.logspace(-0.5, 0.5, 3)
        assert np.allclose(sorted(d["lr"]), expected, rtol=1e-5)
    report = (run / "report" / "report.md").read_text()
    section = report[report.index("## LR range test") :]
    assert "figures/range_test.png" in section and "inside its centred grid" in section
    before = (run / "range_test" / "picks.json").stat().st_mtime_ns
    again = centred(rundir.load_frozen(run), run, resume=True)
    assert again.search.lr.centres == {b: p.pick for b, p in picks.items()}  # type: ignore[union-attr]
    assert (run / "range_test" / "picks.json").stat().st_mtime_ns == before
    assert json.loads((run / "range_test" / "picks.json").read_text()).keys() == {"1", "16", "256"}
