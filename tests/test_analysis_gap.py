"""The generalization gap from the final weights' training loss, and the biased fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_analysis_intervals import report_text

from analysis import load_run
from analysis.fits import analyse
from analysis.generalization import RUNNING, TRAIN_EVAL
from analysis.synthetic import write_synthetic_run

BATCHES = (32, 64, 128, 256, 512)
TRUE_GAP = 0.02 + 0.01 * np.log2(np.array(BATCHES) / 32)  # synthetic.py's val - final-weights train loss
LAG = 0.1  # the running mean's lag above the final weights' loss: larger than every gap


def test_gap_uses_train_eval_loss_when_the_curves_have_it(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, batch_sizes=BATCHES, train_eval=True, running_lag=LAG, evals_per_trial=15)
    a = analyse(load_run(tmp_path), n_boot=20)
    assert a.gap_train_column == TRAIN_EVAL
    gap = a.per_batch["generalization_gap"].to_numpy()
    assert gap == pytest.approx(TRUE_GAP, abs=1e-9)
    # The running mean would have given the biased gap, negative at every batch size.
    biased = a.trials.groupby("batch_size").apply(
        lambda t: (t["final_val_loss"] - t["final_train_loss"]).mean(), include_groups=False
    )
    assert (biased < 0).all()
    md = report_text(a, tmp_path)
    assert "`train_eval_loss`, both of the final weights" in md
    assert "running mean of the training loss" not in md


def test_gap_falls_back_to_train_loss_with_a_caveat(tmp_path: Path) -> None:
    write_synthetic_run(tmp_path, batch_sizes=BATCHES, train_eval=False, running_lag=LAG, evals_per_trial=15)
    a = analyse(load_run(tmp_path), n_boot=20)
    assert a.gap_train_column == RUNNING
    assert a.per_batch["generalization_gap"].to_numpy() == pytest.approx(TRUE_GAP - LAG, abs=1e-9)
    md = report_text(a, tmp_path)
    assert "running-mean `train_loss`; biased low" in md
    assert "The generalization gap subtracts `train_loss`, the running mean" in md
