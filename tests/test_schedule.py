"""The ``[schedule]`` of a study: LR decay and batch increase at milestones (Smith,
Kindermans, Ying & Le 2017), counted right per update, in the classifier and the NQM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from support import run_trainable, trial, write_tiny_fashion_mnist
from trainables.schedule import Plan, Ramp


def ramp(mode: str = "increase_batch", **kw: Any) -> Ramp:
    return Ramp(**{"lr": "step", "milestones": (320, 960), "factor": 2.0, "mode": mode, "max_batch_size": 256, **kw})


def plan(r: Ramp, batch: int = 32, micro: int = 32, examples: int = 2000) -> Plan:
    return Plan.of(
        trial({"batch_size": batch, "micro_batch_size": micro, "lr": 0.1, "max_examples": examples, "schedule": r})
    )


def test_a_step_schedule_multiplies_the_batch_exactly_at_its_milestones() -> None:
    p = plan(ramp(max_micro_batch=64))
    assert [(ph.start_step, ph.start_examples, ph.batch_size, ph.micro_batch_size) for ph in p.phases] == [
        (0, 0, 32, 32),
        (10, 320, 64, 64),
        (20, 960, 128, 64),  # past max_micro_batch: two averaged micro-batches of 64
    ]
    assert [p.batch(s) for s in (9, 10, 19, 20)] == [32, 64, 64, 128]
    assert [p.examples(s) for s in (10, 11, 20, 21)] == [320, 384, 960, 1088]
    assert {p.lr_at_step(s) for s in range(p.cap)} == {0.1}  # the LR never moves
    # the examples budget: 8 updates of 128 after the last milestone fit in 2000
    assert (p.cap, p.examples(p.cap)) == (28, 1984)


def test_decay_lr_divides_the_lr_where_increase_batch_multiplies_b_and_both_see_the_same_examples() -> None:
    dec, inc = plan(ramp("decay_lr")), plan(ramp("increase_batch"))
    assert [dec.lr_at_step(s) for s in (9, 10, 29, 30)] == pytest.approx([0.1, 0.05, 0.05, 0.025])
    assert {dec.batch(s) for s in range(dec.cap)} == {32}
    for examples in (320, 960, 1984):  # the milestones and the end: the same data, fewer updates
        assert dec.examples(dec.updates_within(examples)) == inc.examples(inc.updates_within(examples)) == examples
    assert (dec.cap, inc.cap) == (62, 28)


def test_hybrid_grows_the_batch_to_its_cap_then_decays_the_lr() -> None:
    p = plan(ramp("hybrid", max_batch_size=64))
    assert [(ph.batch_size, ph.lr_scale) for ph in p.phases] == [(32, 1.0), (64, 1.0), (64, 0.5)]


def test_the_momentum_rule_grows_b_with_one_over_one_minus_m() -> None:
    r = ramp(momentum_after=0.95, max_batch_size=4096)
    p = Plan.of(trial({"batch_size": 32, "lr": 0.1, "momentum": 0.9, "max_examples": 20_000, "schedule": r}))
    # ×2 for the milestone, ×(1 − 0.9)/(1 − 0.95) = 2 for the momentum: B(1 − m) tracks the noise
    assert [(ph.batch_size, ph.momentum) for ph in p.phases] == [(32, 0.9), (128, 0.95), (256, 0.95)]


@pytest.mark.parametrize("shape", ["cosine", "linear_decay", "one_cycle"])
def test_smooth_shapes_run_over_the_trials_examples(shape: str) -> None:
    p = plan(Ramp(lr=shape), examples=3200)
    lrs = [p.lr_at_step(s) for s in range(p.cap)]
    assert max(lrs) == pytest.approx(0.1, rel=0.02) and lrs[-1] < 0.002
    if shape == "one_cycle":  # up from peak/25 over the first 30%, then down
        assert lrs[0] == pytest.approx(0.1 / 25, rel=0.1) and lrs.index(max(lrs)) == pytest.approx(0.3 * p.cap, abs=1)
    else:
        assert lrs == sorted(lrs, reverse=True)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def classifier_rows(data_dir: Path, r: Ramp | None, checkpoint: dict | None = None) -> tuple[list[dict], list[dict]]:
    cfg = {
        "batch_size": 32,
        "micro_batch_size": 32,
        "lr": 0.05,
        "seed": 1,
        "momentum": 0.9,
        "max_examples": 2000,
        "data_dir": str(data_dir),
        "val_size": 200,
        "probe_examples": 0,
        "noise_scale_every": 0,
        "sharpness_examples": 0,
        "eval_ratio": 1.1,
        "schedule": r,
        "_checkpoint": checkpoint,
    }
    return run_trainable("fashion_mnist", cfg)


def test_the_classifier_grows_its_batch_at_the_milestones_and_resumes_mid_schedule(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainables import classifier

    drawn: list[int] = []  # the examples the classifier draws for each update
    real_next = classifier._BatchStream.next
    monkeypatch.setattr(classifier._BatchStream, "next", lambda self, size: drawn.append(size) or real_next(self, size))
    passes: list[int] = []  # the size of every forward pass, through the model's input layer
    real_forward = torch.nn.Flatten.forward
    monkeypatch.setattr(torch.nn.Flatten, "forward", lambda self, x: passes.append(len(x)) or real_forward(self, x))
    r = ramp(max_micro_batch=32)  # the grown batches accumulate micro-batches of 32
    p = plan(r)
    rows, ckpts = classifier_rows(data_dir, r)
    assert drawn == [32] * 10 + [64] * 10 + [128] * 8  # B multiplied exactly at 320 and 960 examples
    assert set(passes) - {200} == {32}  # every training pass is one micro-batch of 32 (200: the evaluations)
    assert passes.count(32) == 10 + 2 * 10 + 4 * 8  # 64 and 128 accumulate 2 and 4 of them
    for row in rows:
        assert row["examples_seen"] == p.examples(row["step"])
        assert row["batch_size_current"] == p.batch(row["step"] - 1)
    at = {row["step"]: row for row in rows}
    assert at[10]["batch_size_current"] == 32 and at[10]["examples_seen"] == 320
    assert rows[-1]["step"] == 28 and rows[-1]["examples_seen"] == 1984
    assert rows[-1]["epoch"] == pytest.approx(1984 / (1200 - 200))  # the tiny set: 1,200 images, 200 held out
    # a resume past the first milestone continues at B = 64 with the same curve
    k = next(i for i, row in enumerate(rows) if row["step"] > 12)
    resumed, _ = classifier_rows(data_dir, r, ckpts[k])
    assert [x["step"] for x in resumed] == [x["step"] for x in rows[k + 1 :]]
    for a, b in zip(rows[k + 1 :], resumed, strict=True):
        assert (a["examples_seen"], a["batch_size_current"]) == (b["examples_seen"], b["batch_size_current"])
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)


def test_increase_batch_and_decay_lr_reach_the_same_examples_at_the_same_epochs(data_dir: Path) -> None:
    dec, _ = classifier_rows(data_dir, ramp("decay_lr"))
    inc, _ = classifier_rows(data_dir, ramp("increase_batch"))
    assert (dec[-1]["examples_seen"], dec[-1]["epoch"]) == (inc[-1]["examples_seen"], inc[-1]["epoch"])
    assert (dec[-1]["step"], inc[-1]["step"]) == (62, 28)
    assert {r["lr_current"] for r in inc} == {0.05} and dec[-1]["lr_current"] == pytest.approx(0.0125)


def nqm_rows(r: Ramp | None, checkpoint: dict | None = None, **kw: Any) -> tuple[list[dict], list[dict]]:
    cfg = {"batch_size": 8, "lr": 0.5, "max_examples": 1 << 16, "dim": 10_000, "mode": "expected", **kw}
    return run_trainable("nqm", {**cfg, "schedule": r, "_checkpoint": checkpoint})


@pytest.mark.parametrize("k", [2, 4, 8])
def test_on_the_nqm_increasing_b_by_k_matches_decaying_the_lr_by_k_with_k_times_fewer_updates(k: int) -> None:
    """Expected mode, where the noise scale argument is exact: after the milestone the two
    runs see the same examples; the loss agrees to 2% and the batch increase takes k times
    fewer updates for them."""
    milestone = 1 << 13
    common = {"lr": "step", "milestones": (milestone,), "factor": float(k), "max_batch_size": 8 * k}
    dec, _ = nqm_rows(Ramp(mode="decay_lr", **common))
    inc, _ = nqm_rows(Ramp(mode="increase_batch", **common))
    assert dec[-1]["examples_seen"] == inc[-1]["examples_seen"] == 1 << 16
    at_milestone = milestone // 8
    assert dec[-1]["step"] - at_milestone == k * (inc[-1]["step"] - at_milestone)
    assert inc[-1]["val_loss"] == pytest.approx(dec[-1]["val_loss"], rel=0.02)
    # and the milestone mattered: the run that kept B and the LR ends more than 10% away
    const, _ = nqm_rows(None)
    assert abs(const[-1]["val_loss"] / dec[-1]["val_loss"] - 1) > 0.1


def test_the_nqm_resumes_mid_schedule_at_the_right_batch_and_lr() -> None:
    r = Ramp(lr="step", milestones=(1 << 12, 1 << 14), factor=2.0, mode="hybrid", max_batch_size=16)
    rows, ckpts = nqm_rows(r, momentum=0.9)
    k = next(i for i, row in enumerate(rows) if row["examples_seen"] > 1 << 13)
    resumed, _ = nqm_rows(r, ckpts[k], momentum=0.9)
    assert rows[-1]["val_loss"] == pytest.approx(resumed[-1]["val_loss"], rel=1e-9)
    assert [x["batch_size_current"] for x in resumed] == [x["batch_size_current"] for x in rows[k + 1 :]]
    assert {x["batch_size_current"] for x in rows} == {8.0, 16.0} and rows[-1]["lr_current"] == pytest.approx(0.25)


BAD_SCHEDULES = [
    (["schedule.milestones=[8, 4]"], "schedule.milestones: milestones must increase"),
    (["schedule.factor=1"], "schedule.factor: must be > 1"),
    (["schedule.factor=0.5"], "schedule.factor: must be > 1"),
    (["schedule.factor=2.5"], "schedule.factor: must be a whole number when the batch grows"),
    (
        ["schedule.max_batch_size=640", "schedule.hybrid_batch_size=320"],
        "schedule.max_batch_size: mode increase_batch reaches B=3200",
    ),
    (["schedule.mode=['increase_batch']", "schedule.max_batch_size=0"], "schedule.max_batch_size"),
    (["schedule.mode=['hybrid']", "schedule.hybrid_batch_size=0"], "schedule.hybrid_batch_size"),
    (
        ["schedule.factor=25", "schedule.max_batch_size=100000"],
        "schedule.max_batch_size: B=80000 (mode increase_batch) is larger than the 55000 examples",
    ),
    (["schedule.milestones=[4, 12]"], "schedule.milestones: a milestone at or past 660096 examples is beyond"),
    # inside the last update of decay_lr (659,968 examples after 5,156 updates): it would never act
    (["schedule.unit='examples'", "schedule.milestones=[220000, 659990]"], "schedule.milestones: a milestone at"),
    (["schedule.momentum_after=0.8"], "schedule.momentum_after: must exceed search.momentum (0.9)"),
    (["schedule.momentum_after=0.95"], "schedule.max_batch_size: mode increase_batch reaches B=6400"),
    (
        ["schedule.momentum_after=0.95", "schedule.max_batch_size=20000"],
        "schedule.hybrid_batch_size: mode hybrid reaches B=1280 from B=128, above 640",
    ),
    (["schedule.mode=['decay_lr', 'increase_batch']"], "schedule.hybrid_batch_size: needs mode hybrid"),
    (["schedule.hybrid_batch_size=6400"], "schedule.hybrid_batch_size: needs mode hybrid, and at most"),
    (
        ["schedule={lr='one_cycle'}", "search.warmup_examples=1000"],
        "search.warmup_examples: one_cycle's first 30% is its warmup",
    ),
    (["schedule.lr='cosine'"], 'schedule.lr: milestones and batch-increase modes need lr = "step"'),
    (["schedule.milestones=[]"], 'schedule.milestones: lr = "step" needs at least one milestone'),
    (["schedule.unit='steps'"], "schedule.unit"),
    (["schedule.mode=['decay_lr', 'decay_lr']"], "schedule.mode"),
    (["early_stopping.scheduler='asha'"], "early_stopping.scheduler: a study comparing schedule modes"),
    (
        ["budget={max_steps=1000}", "protocol.kind='steps_to_target'"],
        "budget.max_examples: a schedule that grows the batch needs an examples budget",
    ),
    (["search.strategy='adaptive'"], "search.strategy: the adaptive search caps steps per batch size"),
    (["schedule.momentum_after=1"], "schedule.momentum_after"),
    (
        ["trainable='nqm'", "trainable_config={}", "budget={max_examples=600000}", "target.metric='val_loss'"],
        "schedule.unit: trainable nqm does not say how large",
    ),
]


@pytest.mark.parametrize("sets,message", BAD_SCHEDULES)
def test_a_bad_schedule_exits_2_naming_the_key(sets: list[str], message: str, tmp_path: Path, capsys) -> None:
    from orchestrator.launch import main

    out = tmp_path / "run"
    args = ["--study", "increase-batch", *(a for s in sets for a in ("--set", s)), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and err.count("\n") == 0, err
    assert not out.exists()


def test_a_schedule_on_a_trainable_that_cannot_follow_it_exits_2(tmp_path: Path, capsys) -> None:
    from orchestrator.launch import main

    out = tmp_path / "run"
    args = ["--study", "gpt-small", "--set", "schedule={lr='cosine'}", "--out", str(out)]
    assert main(args) == 2
    assert "schedule: trainable gpt does not follow a schedule" in capsys.readouterr().err
    assert not out.exists()


def test_the_dry_run_shows_each_modes_batches(capsys) -> None:
    from orchestrator.launch import main

    assert main(["--study", "increase-batch", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "increase_batch: B=128 -> B=640 -> B=3200" in text
    assert "hybrid: B=128 -> B=640 -> B=640 lr×0.2" in text
    assert "9 trials (1 batch sizes, 3 schedule modes each)" in text


def test_the_increase_batch_study_runs_through_ray_and_reports_the_comparison(tmp_path: Path) -> None:
    """The built-in study at its smoke budget through the real launcher and local Ray: each
    mode's trial grows (or keeps) its batch as its schedule says, trials.parquet records the
    mode, and the report has the section with one row per mode."""
    import json

    import pyarrow.parquet as pq

    from support import launch
    from trainables.contract import read_curves

    run = tmp_path / "run"
    r = launch("--cluster", "local", "--study", "increase-batch", "--budget", "smoke", "--out", str(run), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = pq.read_table(run / "trials.parquet").to_pandas()
    mode = {
        t: json.loads(c)["schedule"]["mode"] for t, c in zip(trials["trial_id"], trials["config_json"], strict=True)
    }
    assert sorted(mode.values()) == ["decay_lr", "hybrid", "increase_batch"]
    curves = read_curves(run / "curves").to_pandas()
    grown = {mode[t]: sorted(set(d["batch_size_current"])) for t, d in curves.groupby("trial_id")}
    assert grown == {"decay_lr": [128.0], "increase_batch": [128.0, 640.0, 3200.0], "hybrid": [128.0, 640.0]}
    assert set(curves["batch_size"]) == {128}  # the starting batch: per-batch-size strata stay
    ends = curves.sort_values("step").groupby("trial_id").tail(1).set_index("trial_id")
    assert ends["epoch"].max() - ends["epoch"].min() < 3200 / 55_000  # the same epochs, to one update
    report = (run / "report" / "report.md").read_text()
    section = report[report.index("## LR decay vs batch increase") :]
    assert "figures/schedules.png" in section and "| increase_batch | 1 |" in section
    assert (run / "report" / "tables" / "schedules.csv").is_file()


def test_a_trainable_written_from_the_template_follows_the_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's trainable that copies the template declares SCHEDULES and grows its batch."""
    from trainables import declares, template

    rows: list[dict] = []
    drawn: list[int] = []
    real = template.torch.randint
    monkeypatch.setattr(
        template.torch, "randint", lambda lo, hi, size, **kw: drawn.append(size[0]) or real(lo, hi, size, **kw)
    )
    r = ramp(max_micro_batch=32)
    cfg = trial({"batch_size": 32, "lr": 0.1, "momentum": 0.9, "max_examples": 2000, "schedule": r, "eval_ratio": 1.1})
    template.train(cfg, lambda m, c=None: rows.append(m))
    assert drawn[1:] == [32] * 10 + [64] * 10 + [128] * 8  # after the synthetic task's labels
    p = plan(r)
    assert [(x["examples_seen"], x["batch_size_current"]) for x in rows] == [
        (p.examples(x["step"]), p.batch(x["step"] - 1)) for x in rows
    ]
    assert rows[-1]["step"] == 28 and {x["batch_size_current"] for x in rows} == {32.0, 64.0, 128.0}
    assert declares("trainables/template.py:train", "SCHEDULES")
