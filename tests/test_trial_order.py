"""The order trials start in: the centre learning rates of every batch size first, batch
sizes in turn; the sweep hands Tune the grid in that order, Tune creates the trials in it,
the schedulers start them in it (also after a resume, when Tune's own list is re-sorted),
and ``--dry-run`` says so."""

from __future__ import annotations

from pathlib import Path

from ray import tune
from ray.tune.experiment import Trial
from ray.tune.search.variant_generator import generate_variants

from orchestrator.grid import centre_out, lr_values, start_order, trial_config, trial_grid
from orchestrator.launch import main
from orchestrator.scheduler import PerBatchSizeASHA, PerBatchSizeSHA
from orchestrator.study import load_study
from orchestrator.tune_config import CONFIG_KEY, config_of

RULE = "search.lr={rule='sqrt', base_batch=128, base_lr=0.1, decades=1.0, points=7}"


def test_centre_out() -> None:
    assert centre_out(9) == [4, 5, 3, 6, 2, 7, 1, 8, 0]
    assert centre_out(8) == [4, 3, 5, 2, 6, 1, 7, 0]
    assert centre_out(1) == [0]


def test_the_centre_lrs_come_first_and_batch_sizes_take_turns() -> None:
    study = load_study("fashion-mnist")
    order = start_order(study)
    sizes = study.search.batch_sizes
    assert sorted(order, key=lambda p: (p.batch_size, p.lr, p.seed)) == trial_grid(study)  # a permutation
    # the first round: the centre LR (0.0316 of 0.001..1) at every batch size, smallest first
    assert [(p.batch_size, p.lr) for p in order[:9]] == [(b, 0.0316228) for b in sizes]
    # the k-th trial of every batch size starts before the (k+1)-th of any
    for k in range(9):
        assert sorted(p.batch_size for p in order[9 * k : 9 * (k + 1)]) == sizes
    # within one batch size: the grid from its centre outwards, the extremes last
    lrs = lr_values(study, 4096)
    assert [p.lr for p in order if p.batch_size == 4096] == [lrs[i] for i in (4, 5, 3, 6, 2, 7, 1, 8, 0)]


def test_a_rule_centred_grid_starts_at_the_rules_prediction_and_seeds_stay_together() -> None:
    study = load_study("fashion-mnist", overrides=[RULE, "search.seeds=2"])
    order = start_order(study)
    first = [p for p in order if p.batch_size == 512]
    assert first[0].lr == first[1].lr == lr_values(study, 512)[3]  # sqrt rule: 0.1 * 2
    assert [p.seed for p in first[:4]] == [0, 1, 0, 1]
    assert len(order) == 9 * 7 * 2


def test_tune_creates_the_trials_in_the_order_the_sweep_passes() -> None:
    """The sweep's param_space is one grid_search over the configs (orchestrator.sweep):
    Tune's variant generator yields them in the list's order."""
    study = load_study("fashion-mnist", budget="smoke")
    points = [trial_config(study, p).to_dict() for p in start_order(study)]
    variants = [cfg for _, cfg in generate_variants({CONFIG_KEY: tune.grid_search(points)})]
    got = [(c.batch_size, c.lr) for c in map(config_of, variants)]
    assert got == [(p.batch_size, p.lr) for p in start_order(study)]


def _trials(study, ids_in_tune_order: list[int]) -> list[Trial]:
    order = start_order(study)
    return [
        Trial("fn", config={CONFIG_KEY: trial_config(study, order[i]).to_dict()}, trial_id=f"t{i}", stub=True)
        for i in ids_in_tune_order
    ]


class _Tune:
    def __init__(self, trials: list[Trial]) -> None:
        self.trials = trials

    def get_trials(self) -> list[Trial]:
        return self.trials


def test_the_schedulers_start_trials_in_the_start_order_whatever_tunes_list_says() -> None:
    """A resumed Tune re-queues its trials by last result time; the schedulers still start
    the one first in the start order."""
    study = load_study("fashion-mnist")
    for sched in (PerBatchSizeASHA.for_study(study), PerBatchSizeSHA.for_study(study)):
        trials = _trials(study, [40, 7, 3, 12, 0, 5])
        tune_view = _Tune(trials)
        for t in trials:
            sched.on_trial_add(tune_view, t)
        started = []
        while (t := sched.choose_trial_to_run(tune_view)) is not None and len(started) < 6:
            t.status = Trial.RUNNING
            started.append(t.trial_id)
        assert started == ["t0", "t3", "t5", "t7", "t12", "t40"], type(sched).__name__


def test_the_dry_run_states_the_order(tmp_path: Path, capsys) -> None:
    assert main(["--dry-run", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("order:"))
    assert "grid position 5 6 4 7 3 8 2 9 1 (centre outwards)" in line
    assert "B=16 lr=0.0316, B=32 lr=0.0316, B=64 lr=0.0316" in line
