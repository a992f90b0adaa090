"""End to end: synthetic runs with known S_min, B_crit and LR law -> fits.json and the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import analysis
from analysis import load_run, per_batch_summary, write_report
from analysis.fits import analyse
from analysis.report import main
from analysis.results import fits_json
from analysis.synthetic import write_synthetic_run

REPO = Path(__file__).resolve().parent.parent
B_CRIT = 256.0
LINEAR = lambda b: 0.01 * np.asarray(b) / 32
SQRT = lambda b: 0.02 * np.sqrt(np.asarray(b) / 32)

# The contract's example (CONTRACTS.md, report/fits.json), to compare key structure with.
CONTRACT_FITS = {
    "target": {"metric": "val_accuracy", "mode": "max", "value": 0.85},
    "per_batch": [
        {
            "batch_size": 16,
            "best_lr": 0.05,
            "lr_on_edge": False,
            "steps_to_target": 9000,
            "examples_to_target": 144000,
            "trials": 9,
            "reached": 6,
        }
    ],
    "critical_batch": {
        "b_crit": 700.0,
        "b_crit_ci95": [560.0, 880.0],
        "s_min": 1200.0,
        "e_min": 840000.0,
        "n_points": 8,
    },
    "lr_scaling": {
        "exponent": 0.52,
        "exponent_ci95": [0.41, 0.63],
        "preferred_rule": "sqrt",
        "aicc": {"linear": 0.0, "sqrt": 0.0, "power": 0.0, "saturating": 0.0},
    },
    "regimes": {"perfect_scaling_up_to": 256, "diminishing_returns_up_to": 2048},
    "noise_scale": {"b_simple": 650.0},
}


def missing_keys(fits: object, contract: object, path: str = "") -> list[str]:
    """The contract's key paths that ``fits`` lacks (extra keys in ``fits`` are allowed)."""
    if isinstance(contract, dict):
        if not isinstance(fits, dict):
            return [path or "."]
        return [
            m
            for k, v in contract.items()
            for m in ([f"{path}.{k}"] if k not in fits else missing_keys(fits[k], v, f"{path}.{k}"))
        ]
    if isinstance(contract, list) and contract and isinstance(contract[0], dict):
        if not isinstance(fits, list):
            return [path]
        return [m for row in fits for m in missing_keys(row, contract[0], f"{path}[]")]
    return []


def assert_contract_shape(fits: dict) -> None:
    assert missing_keys(fits, CONTRACT_FITS) == []
    # a null object stays a null value, not a missing key, and the new rules are listed too
    assert set(fits["lr_scaling"]["aicc"]) >= {"linear", "sqrt", "power", "saturating", "constant", "surge"}
    # a preferred rule is always one the free exponent's interval allows
    lr = fits["lr_scaling"]
    if lr["preferred_rule"] is not None and lr["exponent_ci95"] is not None:
        assert lr["consistent"][lr["preferred_rule"]] is True


def test_linear_law_full_report(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, lr_law=LINEAR, b_crit=B_CRIT, noise_scale=300.0)
    out = write_report(tmp_path, n_boot=200)
    assert out == tmp_path / "report"
    fits = json.loads((out / "fits.json").read_text())
    assert_contract_shape(fits)
    c = fits["critical_batch"]
    assert c["b_crit"] == pytest.approx(B_CRIT, rel=0.15)
    lo, hi = c["b_crit_ci95"]
    assert lo <= B_CRIT <= hi
    assert c["e_min"] == pytest.approx(c["b_crit"] * c["s_min"])
    assert c["n_points"] == 7
    lr = fits["lr_scaling"]
    assert lr["preferred_rule"] == "linear"
    assert lr["exponent_ci95"][0] <= 1.0 <= lr["exponent_ci95"][1]
    assert fits["noise_scale"]["b_simple"] == pytest.approx(300.0, rel=0.1)
    assert [p["batch_size"] for p in fits["per_batch"]] == [32, 64, 128, 256, 512, 1024, 2048]
    for p in fits["per_batch"]:
        assert p["best_lr"] == pytest.approx(0.01 * p["batch_size"] / 32, rel=0.35)
        assert p["examples_to_target"] == pytest.approx(p["steps_to_target"] * p["batch_size"])
    for stem in (
        "steps_vs_batch",
        "examples_vs_batch",
        "lr_vs_batch",
        "heatmap",
        "learning_curves",
        "generalization_gap",
        "noise_scale",
    ):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 10_000
        assert (out / "figures" / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    for stem in ("per_batch", "fits"):
        assert (out / "tables" / f"{stem}.csv").is_file()
        tex = (out / "tables" / f"{stem}.tex").read_text()
        assert r"\toprule" in tex and r"\bottomrule" in tex
    md = (out / "report.md").read_text()
    for section in ("## Methods", "## Caveats", "## Environment", "S_min (1 + B_crit/B)", "numpy"):
        assert section in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 7 and "<table" in html


def test_sqrt_law_is_recovered(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, lr_law=SQRT, b_crit=B_CRIT, rng_seed=5)
    fits = fits_json(analyse(load_run(tmp_path), n_boot=200))
    assert_contract_shape(fits)
    c = fits["critical_batch"]
    assert c["b_crit"] == pytest.approx(B_CRIT, rel=0.15)
    assert c["b_crit_ci95"][0] <= B_CRIT <= c["b_crit_ci95"][1]
    assert fits["lr_scaling"]["preferred_rule"] == "sqrt"
    assert fits["lr_scaling"]["exponent"] == pytest.approx(0.5, abs=0.1)


def test_censored_batch_size_is_reported_not_dropped(tmp_path: Path) -> None:
    # At B=256 the step budget is half of S(B): no trial can reach the target.
    write_synthetic_run(tmp_path, lr_law=LINEAR, b_crit=B_CRIT, budget=[3, 3, 3, 0.5, 3, 3, 3])
    out = write_report(tmp_path, n_boot=200)
    fits = json.loads((out / "fits.json").read_text())
    row = next(p for p in fits["per_batch"] if p["batch_size"] == 256)
    assert row["steps_to_target"] is None and row["examples_to_target"] is None
    assert row["reached"] == 0 and row["trials"] == 17
    assert row["best_lr"] is not None  # from the metric fallback
    assert fits["critical_batch"]["n_points"] == 6
    assert fits["critical_batch"]["b_crit"] == pytest.approx(B_CRIT, rel=0.15)
    assert "Censored batch sizes (no trial reached the target): B = 256" in (out / "report.md").read_text()


def test_optima_on_the_grid_edge_are_flagged_and_left_out(tmp_path: Path) -> None:
    # Grid tops out at 0.3 while eta*(1024) = 0.32 and eta*(2048) = 0.64.
    write_synthetic_run(tmp_path, lr_law=LINEAR, lr_grid=np.geomspace(1e-3, 0.3, 11))
    a = analyse(load_run(tmp_path), n_boot=200)
    edge = a.per_batch.set_index("batch_size")["lr_on_edge"]
    assert edge[1024] and edge[2048]
    assert not edge[[32, 64, 128, 256, 512]].any()
    assert a.lr_scaling.excluded_edge == (1024, 2048)
    assert a.lr_scaling.n_points == 5
    assert fits_json(a)["lr_scaling"]["exponent"] == pytest.approx(1.0, abs=0.15)
    from analysis.document import caveats

    assert any("grid's edge at B = 1024, 2048" in c for c in caveats(a))


def test_run_without_trials_parquet(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, lr_law=LINEAR, write_trials=False, batch_size_column=False, val_every=3)
    run = load_run(tmp_path)
    assert run.trials_synthesised and set(run.trials["status"]) == {"completed"}
    summary = per_batch_summary(run)
    assert summary["trials"].tolist() == [17] * 7
    out = write_report(tmp_path, n_boot=100)
    fits = json.loads((out / "fits.json").read_text())
    assert_contract_shape(fits)
    assert fits["critical_batch"]["b_crit"] == pytest.approx(B_CRIT, rel=0.2)
    assert "No trials.parquet" in (out / "report.md").read_text()


def test_one_batch_size_gives_null_fits_and_a_report(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, batch_sizes=[128], lr_law=LINEAR)
    out = write_report(tmp_path, n_boot=50)
    fits = json.loads((out / "fits.json").read_text())
    assert_contract_shape(fits)
    assert len(fits["per_batch"]) == 1 and fits["per_batch"][0]["steps_to_target"] is not None
    assert {k: fits["critical_batch"][k] for k in CONTRACT_FITS["critical_batch"]} == {
        "b_crit": None,
        "b_crit_ci95": None,
        "s_min": None,
        "e_min": None,
        "n_points": 1,
    }
    assert fits["lr_scaling"]["exponent"] is None and fits["lr_scaling"]["preferred_rule"] is None
    assert set(fits["lr_scaling"]["aicc"].values()) == {None}
    assert fits["regimes"] == {"perfect_scaling_up_to": None, "diminishing_returns_up_to": None}
    md = (out / "report.md").read_text()
    assert "`critical_batch.b_crit`: only 1 batch size(s) reached the target" in md
    assert (out / "report.html").is_file() and (out / "figures" / "heatmap.png").is_file()


def test_all_censored_run_still_reports(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, batch_sizes=[64, 256, 1024], lr_law=LINEAR, budget=0.5)
    out = write_report(tmp_path, n_boot=50)
    fits = json.loads((out / "fits.json").read_text())
    assert all(p["steps_to_target"] is None and p["reached"] == 0 for p in fits["per_batch"])
    assert all(p["best_lr"] is not None for p in fits["per_batch"])
    assert fits["critical_batch"]["b_crit"] is None
    assert "Censored batch sizes" in (out / "report.md").read_text()


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 2
    assert "study.toml" in capsys.readouterr().err
    (tmp_path / "study.toml").write_text('name = "x"\n[target]\nmetric = "val_loss"\nmode = "min"\nvalue = 1.0\n')
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "curves" in err and len(err.strip().splitlines()) == 1
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.report", str(tmp_path / "nope")], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "nope" in proc.stderr


def test_cli_writes_to_out_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    write_synthetic_run(run, batch_sizes=[64, 128, 256], lr_grid=np.geomspace(1e-3, 1, 7), evals_per_trial=15)
    out = tmp_path / "elsewhere"
    assert main([str(run), "--out", str(out), "--n-boot", "20"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert (out / "fits.json").is_file() and not (run / "report").exists()


def test_default_bootstrap_is_at_least_1000(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The report's own record says how many resamples ran: 1000 by default, from the API
    and from the CLI alike."""
    run = tmp_path / "run"
    write_synthetic_run(run, batch_sizes=(32, 64, 128, 256))
    md = analysis.write_report(run).joinpath("report.md").read_text()
    assert "1000 bootstrap resamples" in md and "Bootstrap: 1000 resamples" in md
    assert main([str(run), "--out", str(tmp_path / "cli")]) == 0
    assert "Bootstrap: 1000 resamples" in (tmp_path / "cli" / "report.md").read_text()
