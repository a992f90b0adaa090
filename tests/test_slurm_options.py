"""Real-cluster sbatch options: from flags, the study's [slurm] table and the user's
~/.config/batchscale/slurm.toml (flags win), all in the dry run's script, and refused by
the real dev cluster's ``sbatch --test-only`` where Slurm refuses them."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from test_slurm_launch import assert_nothing_left, job_id_of

from orchestrator.launch import main
from support import launch

OPTIONS = [
    "--qos",
    "short",
    "--constraint",
    "fast",
    "--mem",
    "2G",
    "--exclude",
    "n9",
    "--reservation",
    "r1",
    "--mail-user",
    "me@lab.example",
    "--mail-type",
    "END,FAIL",
    "--exclusive",
    "--sbatch",
    "licenses=scratch:1",
    "--setup",
    "module load cuda/12.4",
]


def test_every_option_is_in_the_dry_run_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--cluster", "slurm", "--dry-run", "--budget", "smoke", *OPTIONS, "--out", str(tmp_path / "r")]) == 0
    script = capsys.readouterr().out
    for line in (
        "#SBATCH --qos=short",
        "#SBATCH --constraint=fast",
        "#SBATCH --mem=2G",
        "#SBATCH --exclude=n9",
        "#SBATCH --reservation=r1",
        "#SBATCH --mail-user=me@lab.example",
        "#SBATCH --mail-type=END,FAIL",
        "#SBATCH --exclusive",
        "#SBATCH --licenses=scratch:1",
        "\nmodule load cuda/12.4\n",
    ):
        assert line in script, line
    assert not (tmp_path / "r").exists()


def test_flags_win_over_the_study_and_the_study_over_the_user_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user = tmp_path / "slurm.toml"
    user.write_text('[slurm]\nqos = "from-user"\nmem = "1G"\naccount = "lab-b"\nsetup = ["echo user"]\n')
    monkeypatch.setenv("BATCHSCALE_SLURM_DEFAULTS", str(user))
    study = ["--set", 'slurm={ qos = "from-study", mem = "3G", setup = ["echo study"] }']
    assert main(["--cluster", "slurm", "--dry-run", "--budget", "smoke", *study, "--mem", "4G"]) == 0
    script = capsys.readouterr().out
    assert "#SBATCH --qos=from-study" in script and "#SBATCH --mem=4G" in script and "#SBATCH --account=lab-b" in script
    assert script.index("echo user") < script.index("echo study")
    user.write_text('[slurm]\nqoss = "typo"\n')
    assert main(["--cluster", "slurm", "--dry-run", "--budget", "smoke"]) == 2
    assert f"{user}: slurm.qoss: unknown key" in capsys.readouterr().err
    assert main(["--dry-run", "--budget", "smoke", "--set", "slurm.memm=1G"]) == 2
    assert "slurm.memm: unknown key" in capsys.readouterr().err


@pytest.mark.slurm
@pytest.mark.parametrize(
    "flags,says",
    [
        (["--qos", "restricted"], "invalid qos"),
        (["--constraint", "nosuchfeature"], "invalid feature"),
        (["--mem", "100G"], "requested node configuration is not available"),
        (["--exclude", "n1,n2"], "requested node configuration is not available"),
    ],
)
def test_what_slurm_refuses_is_refused_before_anything_is_written(
    slurm_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], says: str
) -> None:
    out = tmp_path / "run"
    assert main(["--cluster", "slurm", "--budget", "smoke", *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: sbatch refused the job:") and says in err.lower(), err
    assert not out.exists()


@pytest.mark.slurm
def test_a_constraint_puts_the_job_on_the_nodes_with_the_feature(slurm_env: dict[str, str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    r = launch(
        "--cluster",
        "slurm",
        "--budget",
        "smoke",
        "--set",
        "search.batch_sizes=[64]",
        "--constraint",
        "fast",
        "--qos",
        "short",
        "--account",
        "lab-b",
        "--time",
        "00:05:00",
        "--out",
        str(run_dir),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    job = job_id_of(r.stdout)
    try:  # what Slurm gave the job once it runs: the node with the feature, the QOS, the account
        deadline, got = time.monotonic() + 60, ""
        while time.monotonic() < deadline:
            q = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %N %q %a"], capture_output=True, text=True)
            got = q.stdout.strip()
            if got.startswith("RUNNING"):
                break
            time.sleep(0.5)
        assert got == "RUNNING n1 short lab-b", got  # only n1 has the feature "fast"
    finally:
        subprocess.run(["scancel", job], check=False)
    assert_nothing_left(job)
