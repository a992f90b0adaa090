"""Data-parallel trials (resources.workers_per_trial): two gloo ranks train the same curve
as one process, directly (torch.multiprocessing) and through Tune (Ray actors in the
trial's placement group), resume from a checkpoint on every rank, restart after a worker
dies, and bad input is one line, exit 2, no RUN_DIR."""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import socket
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import torch.multiprocessing as mp

from cluster.local import local_ray
from orchestrator.grid import start_order, trial_config
from orchestrator.launch import main
from orchestrator.study import Study, validate
from orchestrator.sweep import run_sweep
from support import trial, write_tiny_fashion_mnist
from trainables import get
from trainables.contract import CURVES_SCHEMA, TrialConfig, read_curves
from trainables.schedule import eval_steps

STEPS = 24
# What must equal N = 1's step by step. grad_noise_scale is an estimate from each rank's
# first micro-batch (|G_small|² averaged over ranks): the same expectation, not the same number.
SAME = (
    "train_loss",
    "train_eval_loss",
    "train_eval_accuracy",
    "val_loss",
    "val_accuracy",
    "epoch",
    "lr_current",
    "sharpness",
)
REL = 1e-4
MEASURED: dict[str, float] = {}  # the largest relative differences seen, printed at the end


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_tiny_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture(scope="module", autouse=True)
def report_measured():
    yield
    print("\nmax relative difference N=2 vs N=1:", {k: f"{v:.2e}" for k, v in MEASURED.items()}, file=sys.stderr)


def config(data_dir: Path, **kw: Any) -> dict[str, Any]:
    """B = 64 on the MLP (no batch norm), 24 steps, an evaluation on each log-spaced step."""
    return {
        "batch_size": 64,
        "micro_batch_size": 64,
        "lr": 0.05,
        "seed": 3,
        "momentum": 0.9,
        "max_steps": STEPS,
        "data_dir": str(data_dir),
        "val_size": 200,
        "hidden": 64,
        "sharpness_examples": 64,
        **kw,
    }


def run(cfg: TrialConfig) -> tuple[list[dict], list[dict | None]]:
    rows, ckpts = [], []

    def report(metrics: dict, checkpoint: dict | None = None) -> None:
        rows.append(dict(metrics))
        ckpts.append(checkpoint)

    get("fashion_mnist")(cfg, report)
    return rows, ckpts


def assert_same_curve(ref: list[dict], got: list[dict], what: str) -> None:
    """The same columns, one row per evaluation, every value of SAME within REL."""
    assert [r["step"] for r in got] == [r["step"] for r in ref], what
    assert [set(r) for r in got] == [set(r) for r in ref], what
    for a, b in zip(ref, got):
        assert b["examples_seen"] == a["examples_seen"]
        for k in SAME:
            if a.get(k) is None:
                assert b.get(k) is None, (what, k)
                continue
            rel = abs(a[k] - b[k]) / max(abs(a[k]), 1e-12)
            MEASURED[k] = max(MEASURED.get(k, 0.0), rel)
            assert rel < REL, (what, a["step"], k, a[k], b[k])
        assert math.isfinite(b["grad_noise_scale"]) and b["grad_noise_scale"] > 0


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now (each held until all are picked)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _rank_main(rank: int, jobs: list[tuple[str, dict[str, Any], int]], out: str) -> None:
    """One rank of the direct test: each job as rank ``rank`` of 2, rank 0 keeps the reports."""
    results = {}
    for name, cfg, port in jobs:
        # a rendezvous of its own per trial: rank 1 ends a trial before rank 0 (which
        # measures the sharpness) and must not meet rank 0's old group at the next one
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        checkpoint = cfg.pop("_checkpoint_file", None)
        if checkpoint is not None:
            with open(checkpoint, "rb") as f:
                cfg["_checkpoint"] = pickle.load(f)
        # each job sets its own process group up and down (trainables.distributed)
        results[name] = run(trial({**cfg, "world_size": 2, "rank": rank}))
    if rank == 0:
        with open(out, "wb") as f:
            pickle.dump({k: (rows, [c is not None for c in ckpts]) for k, (rows, ckpts) in results.items()}, f)
    else:  # the others report the same rows, never a checkpoint
        assert all(c is None for _, ckpts in results.values() for c in ckpts)


def test_two_gloo_ranks_train_the_curve_of_one_process(data_dir: Path, tmp_path: Path) -> None:
    """B = 64 as 2 ranks × 32 (and × 4 micro-batches of 8) gives N = 1's losses at every
    step; a 2-rank trial resumed from a checkpoint continues the same curve."""
    ref_rows, ref_ckpts = run(trial(config(data_dir)))
    assert ref_rows[-1]["step"] == STEPS and len(ref_rows) == len(eval_steps(STEPS, 1.05))
    cut = 10  # resume from the checkpoint of the 10th evaluation (step 10)
    ckpt_file = tmp_path / "ckpt.pkl"
    ckpt_file.write_bytes(pickle.dumps(ref_ckpts[cut - 1]))
    ports = free_ports(3)
    jobs = [
        ("plain", config(data_dir, micro_batch_size=32), ports[0]),
        ("accumulated", config(data_dir, micro_batch_size=8), ports[1]),
        ("resumed", config(data_dir, micro_batch_size=32, _checkpoint_file=str(ckpt_file)), ports[2]),
    ]
    out = tmp_path / "rank0.pkl"
    mp.spawn(_rank_main, args=(jobs, str(out)), nprocs=2, join=True)
    got = pickle.loads(out.read_bytes())

    for name in ("plain", "accumulated"):
        rows, has_ckpt = got[name]
        assert_same_curve(ref_rows, rows, name)
        assert all(has_ckpt)  # rank 0 checkpoints at every evaluation
    rows, _ = got["resumed"]
    assert rows[0]["step"] == ref_rows[cut]["step"]  # right after the checkpoint's step
    assert_same_curve(ref_rows[cut:], rows, "resumed")


# --------------------------------------------------------------------------- through Tune


def dp_study(data_dir: Path, trainable: str = "fashion_mnist") -> Study:
    """B = 64 (no accumulation at 2 workers) and B = 256 (2 micro-batches of 64 per worker)."""
    return validate(
        {
            "name": "dp",
            "trainable": trainable,
            "trainable_config": {"data_dir": str(data_dir), "val_size": 200, "hidden": 64, "sharpness_examples": 64},
            "search": {
                "batch_sizes": [64, 256],
                "lr": {"min": 0.05, "max": 0.05, "points": 1},
                "momentum": 0.9,
                "seeds": 1,
            },
            "budget": {"max_steps": STEPS, "stop_at_target": False, "max_micro_batch": 64},
            "target": {"metric": "val_loss", "mode": "min", "value": 0.01},
            "early_stopping": {"scheduler": "none"},
            "resources": {"workers_per_trial": 2, "cpus_per_worker": 1},
        }
    )


def reference(study: Study) -> dict[int, list[dict]]:
    """Each batch size's curve as one process (N = 1, same config otherwise)."""
    out = {}
    for point in start_order(study):
        cfg = trial_config(study, point)
        rows, _ = run(dataclasses.replace(cfg, world_size=1))
        out[cfg.batch_size] = rows
    return out


def curves_by_batch(run_dir: Path) -> dict[int, list[dict]]:
    curves = read_curves(run_dir / "curves").to_pandas().sort_values("step")
    return {int(b): g.to_dict("records") for b, g in curves.groupby("batch_size")}


def assert_rows_match(ref: list[dict], rows: list[dict], what: str, abs_tol: float = 0.0) -> None:
    assert [r["step"] for r in rows] == [r["step"] for r in ref], what
    for a, b in zip(ref, rows):
        for k in SAME:
            if k == "sharpness" or a.get(k) is None:  # sharpness lives in trials.parquet
                continue
            rel = abs(a[k] - b[k]) / max(abs(a[k]), 1e-12)
            if not abs_tol:
                MEASURED[k] = max(MEASURED.get(k, 0.0), rel)
            assert rel < REL or abs(a[k] - b[k]) < abs_tol, (what, a["step"], k, a[k], b[k])


CRASHY = '''
import os
from pathlib import Path
from trainables.fashion_mnist import METRICS, TrainableConfig, train as fashion_mnist

MARK = Path({mark!r})

def train(config, report):
    """fashion_mnist; at B = 64 rank 1's process dies once, at its report of step 10."""
    def spy(metrics, checkpoint=None):
        if config.rank == 0 and config.batch_size == 64:
            with open(MARK.with_suffix(".log"), "a") as f:
                f.write(f"{{os.getpid()}} {{metrics['step']}}\\n")
        if config.rank == 1 and config.batch_size == 64 and metrics["step"] == 10 and not MARK.exists():
            MARK.touch()
            os._exit(1)
        report(metrics, checkpoint)
    fashion_mnist(config, spy)
'''


def test_tune_two_worker_trials_match_one_process_and_survive_a_dead_worker(data_dir: Path, tmp_path: Path) -> None:
    """run_sweep on a 2-CPU Ray: each trial is 2 gloo workers (1 CPU each, so one trial at
    a time) and its curve is N = 1's, without (B = 64) and with accumulation (B = 256). At
    B = 64 rank 1's process dies at step 10: Tune restarts both ranks from the trial's last
    checkpoint and the curve goes on as if nothing had happened."""
    mark = tmp_path / "crashed"
    (tmp_path / "crashy.py").write_text(CRASHY.format(mark=str(mark)))
    study = dp_study(data_dir, trainable=f"{tmp_path / 'crashy.py'}:train")
    assert {p.batch_size: p.micro_batch_size for p in start_order(study)} == {64: 32, 256: 64}
    ref = reference(dp_study(data_dir))
    with local_ray(num_cpus=2):
        run_sweep(study, tmp_path / "run", checkpoint_every_s=0.0)

    trials = pq.read_table(tmp_path / "run" / "trials.parquet").to_pandas()
    assert set(trials.status) == {"completed"} and sorted(trials.steps) == [STEPS, STEPS]
    assert dict(zip(trials.batch_size, trials.micro_batch_size)) == {64: 32, 256: 64}
    assert set(trials.node) == {socket.gethostname()}  # both workers on this machine
    assert set(read_curves(tmp_path / "run" / "curves").column_names) == set(CURVES_SCHEMA.names)
    curves = curves_by_batch(tmp_path / "run")
    assert set(curves) == {64, 256}
    for b, rows in curves.items():
        assert_rows_match(ref[b], rows, f"B={b}")  # one row per evaluation, N = 1's values
        sharp = float(trials[trials.batch_size == b].sharpness.iloc[0])
        assert abs(sharp - ref[b][-1]["sharpness"]) / ref[b][-1]["sharpness"] < REL

    # rank 1 died once; the trial was retried, not failed, and resumed from a checkpoint
    assert mark.exists()
    runs: dict[str, list[int]] = {}
    for line in mark.with_suffix(".log").read_text().splitlines():
        pid, step = line.split()
        runs.setdefault(pid, []).append(int(step))
    first, second = runs.values()  # rank 0 ran twice: before and after the crash
    assert first[-1] == 10 and 1 < second[0] <= 11  # not from step 0
    steps = eval_steps(STEPS, 1.05)
    assert second == steps[steps.index(second[0]) :]  # then every evaluation once, to the end


# --------------------------------------------------------------------------- bad input


def launch_main(capsys, tmp_path: Path, *args: str) -> tuple[int, str]:
    code = main(["--budget", "full", "--out", str(tmp_path / "run"), *args])
    return code, capsys.readouterr().err


BASE = ["--set", "search.batch_sizes=[64, 256]", "--set", "budget.max_steps=5"]


@pytest.mark.parametrize(
    "sets,key,says",
    [
        (["resources.workers_per_trial=0"], "resources.workers_per_trial", "greater than or equal to 1"),
        (["resources.workers_per_trial=3"], "resources.workers_per_trial", "batch_sizes value 64"),
        (["resources.workers_per_trial=2", "resources.gpus_per_worker=0.5"], "resources.gpus_per_worker", "whole GPUs"),
        (
            [
                f"resources.workers_per_trial={2 * (os.cpu_count() or 1)}",
                "resources.cpus_per_worker=1",
                f"search.batch_sizes=[{64 * (os.cpu_count() or 1)}]",
            ],
            "resources.workers_per_trial",
            "this machine",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_no_run_dir(
    capsys, data_dir: Path, tmp_path: Path, sets: list[str], key: str, says: str
) -> None:
    args = [*BASE, "--set", f"trainable_config.data_dir='{data_dir}'"]
    for s in sets:
        args += ["--set", s]
    code, err = launch_main(capsys, tmp_path, *args)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"error: {key}:") and says in err, err
    assert not (tmp_path / "run").exists()


def test_slurm_refuses_more_workers_than_the_allocation_before_sbatch(capsys, data_dir: Path, tmp_path: Path) -> None:
    """2 workers of 1 CPU on one node of 1 CPU: refused before anything reaches Slurm."""
    code, err = launch_main(
        capsys,
        tmp_path,
        "--cluster",
        "slurm",
        "--nodes",
        "1",
        "--cpus-per-node",
        "1",
        *BASE,
        "--set",
        f"trainable_config.data_dir='{data_dir}'",
        "--set",
        "resources.workers_per_trial=2",
        "--set",
        "resources.cpus_per_worker=1",
    )
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(
        "error: resources.workers_per_trial: 2 workers (1 CPU each) do not fit the Slurm "
        "allocation (1 × 1 CPUs, 0 GPUs: room for 1)"
    ), err
    assert not (tmp_path / "run").exists()


def test_dry_run_says_how_many_trials_fit(capsys, tmp_path: Path) -> None:
    code = main(
        [
            "--dry-run",
            "--cluster",
            "slurm",
            "--nodes",
            "2",
            "--cpus-per-node",
            "3",
            "--set",
            "resources.workers_per_trial=2",
            "--set",
            "resources.cpus_per_worker=1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert (
        "data-parallel: 2 workers per trial (1 CPU each); the Slurm allocation (2 × 3 CPUs, 0 GPUs) "
        "holds 6 workers: 3 trials at once"
    ) in out
    assert "#SBATCH --nodes=2" in out and "#SBATCH --cpus-per-task=3" in out
    code = main(["--dry-run", "--set", "resources.workers_per_trial=2", "--set", "resources.cpus_per_worker=1"])
    out = capsys.readouterr().out
    assert code == 0 and f"this machine (1 × {os.cpu_count()} CPUs" in out


# --------------------------------------------------------------------------- Slurm

SPY = '''
"""A 2-worker trial on the dev Slurm cluster, instrumented: ``train`` is fashion_mnist
logging each rank's reports (pid, rank, Slurm node, step); ``drive`` is run_study with a
checkpoint every 2 s (not 60); run as a script it is the launcher with that drive."""
import os
import sys

import orchestrator.sweep
from orchestrator.run import run_study
from trainables.fashion_mnist import METRICS, TrainableConfig, train as fashion_mnist

LOG = {log!r}


def train(config, report):
    def spy(metrics, checkpoint=None):
        with open(LOG, "a") as f:
            f.write(f"{{os.getpid()}} {{config.rank}} {{os.environ.get('SLURMD_NODENAME')}} {{metrics['step']}}\\n")
        report(metrics, checkpoint)
    fashion_mnist(config, spy)


def drive(run_dir, resume, backend):
    orchestrator.sweep.run_sweep.__kwdefaults__["checkpoint_every_s"] = 2.0
    return run_study(run_dir, resume, backend)


if __name__ == "__main__":
    import dpspy
    import orchestrator.launch

    orchestrator.launch.run_study = dpspy.drive  # pickled into the job by reference
    sys.exit(orchestrator.launch.main(sys.argv[1:]))
'''

SLURM_STEPS = 1000
SLURM_STUDY = """name = "dp-slurm"
trainable = "{spy}:train"
[trainable_config]
data_dir = "{data}"
val_size = 200
hidden = 256
sharpness_examples = 64
[search]
batch_sizes = [64]
lr = {{ min = 0.05, max = 0.05, points = 1 }}
momentum = 0.9
[budget]
max_steps = {steps}
stop_at_target = false
[target]
metric = "val_loss"
mode = "min"
value = 0.01
[early_stopping]
scheduler = "none"
[resources]
workers_per_trial = 2
cpus_per_worker = 1
"""


@pytest.mark.slurm
def test_slurm_two_workers_one_per_node_resume_after_a_requeue(slurm_env, data_dir: Path, tmp_path: Path) -> None:
    """One 2-worker trial on the dev cluster's two nodes of 1 CPU each (so one worker per
    node, gloo between them); USR2 once it has a checkpoint: the job requeues, Tune resumes
    the trial on both nodes from the checkpoint, and the curve is N = 1's, each step once."""
    import subprocess
    import time

    from test_slurm_launch import assert_nothing_left, job_id_of

    from support import REPO

    log = tmp_path / "reports.log"
    (tmp_path / "dpspy.py").write_text(SPY.format(log=str(log)))
    study = tmp_path / "dp.toml"
    study.write_text(SLURM_STUDY.format(spy=tmp_path / "dpspy.py", data=data_dir, steps=SLURM_STEPS))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{REPO}:{tmp_path}"}
    r = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "dpspy.py"),
            "--cluster",
            "slurm",
            "--study",
            str(study),
            "--nodes",
            "2",
            "--cpus-per-node",
            "1",
            "--time",
            "00:15:00",
            "--out",
            str(run_dir),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    job = job_id_of(r.stdout)

    def rank0_steps() -> list[int]:
        lines = log.read_text().splitlines() if log.is_file() else []
        return [int(ln.split()[3]) for ln in lines if ln.split()[1] == "0"]

    def settled() -> Path | None:
        """The trial's second checkpoint (or a later one), once Tune's experiment snapshot
        names it: a requeue restores what the snapshot names, and a loaded machine takes
        seconds to write it (a checkpoint's age says nothing about that)."""
        ckpts = sorted((run_dir / "tune").glob("sweep/*/checkpoint_*/state.pt"))
        if not ckpts or ckpts[-1].parent.name == "checkpoint_000000":
            return None
        snapshots = sorted((run_dir / "tune" / "sweep").glob("experiment_state-*.json"))
        named = snapshots and ckpts[-1].parent.name in snapshots[-1].read_text(errors="replace")
        return ckpts[-1] if named else None

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and settled() is None:
        time.sleep(0.1)
    ckpt = settled()
    assert ckpt is not None and rank0_steps()[-1] < SLURM_STEPS, "the trial never got going, or ended already"
    import torch

    ckpt_step = int(torch.load(ckpt, map_location="cpu", weights_only=False)["step"])
    subprocess.run(["scancel", "--signal=USR2", job], check=True, capture_output=True)
    follow = subprocess.run(
        [sys.executable, "-m", "orchestrator.follow", str(run_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert follow.returncode == 0, follow.stderr[-3000:]
    slurm_log = (run_dir / "slurm" / f"{job}_0_log.err").read_text() + (
        run_dir / "slurm" / f"{job}_0_log.out"
    ).read_text()
    # submitit caught the signal and the job ran again (its "Requeued job" line races with
    # the kill that `scontrol requeue` sends, and is lost under load)
    assert "Caught signal SIGUSR2" in slurm_log and slurm_log.count("Starting with JobEnvironment") == 2

    trials = pq.read_table(run_dir / "trials.parquet").to_pandas()
    assert list(trials.status) == ["completed"] and list(trials.steps) == [SLURM_STEPS]
    assert sorted(trials.node.iloc[0].split(",")) == ["n1", "n2"]  # the workers' own node names
    runs: dict[tuple[str, str], list[tuple[str, int]]] = {}  # (pid, rank) -> (node, step), in order
    for line in log.read_text().splitlines():
        pid, rank, node, step = line.split()
        runs.setdefault((pid, rank), []).append((node, int(step)))
    attempts = {rank: [v for (_, r), v in runs.items() if r == rank] for rank in "01"}
    assert [len(a) for a in attempts.values()] == [2, 2], (
        "each rank should have run twice: before and after the requeue"
    )
    for r0, r1 in zip(attempts["0"], attempts["1"]):
        nodes0, nodes1 = {n for n, _ in r0}, {n for n, _ in r1}
        assert len(nodes0) == len(nodes1) == 1 and nodes0 | nodes1 == {"n1", "n2"}  # one worker per node
    rank0 = attempts["0"]
    before, after = ([s for _, s in v] for v in rank0)
    # from that checkpoint or a later one (not step 0), and at most the last one reported
    # before the requeue: its first report is at most the evaluation after that one
    steps = eval_steps(SLURM_STEPS, 1.05)
    assert ckpt_step < after[0] <= steps[min(steps.index(before[-1]) + 1, len(steps) - 1)]
    assert after == steps[steps.index(after[0]) :]

    curves = curves_by_batch(run_dir)[64]
    assert [r["step"] for r in curves] == steps
    cfg = trial(
        {
            "batch_size": 64,
            "micro_batch_size": 64,
            "lr": 0.05,
            "seed": 0,
            "momentum": 0.9,
            "max_steps": SLURM_STEPS,
            "data_dir": str(data_dir),
            "val_size": 200,
            "hidden": 256,
            "sharpness_examples": 64,
        }
    )
    # 1000 steps take the tiny task's losses to ~1e-6, where float32 reduction-order noise
    # (2 ranks × 32 vs 64 in one pass) is a relative 1e-4: there, equal to within 1e-6
    assert_rows_match(run(cfg)[0], curves, "on Slurm", abs_tol=1e-6)
    assert_nothing_left(job)
