"""The dev cluster's processes: install the Debian packages if missing, start munged,
slurmctld and one slurmd per node (detached, pid files under the state directory), find
them again by pid, stop exactly them, and run Slurm clients against the cluster."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cluster import procs
from cluster.devslurm.layout import ENV_PORT, Layout, ctld_port, env

APT_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "srun", "scontrol", "squeue")
T = TypeVar("T")


def ensure_packages() -> None:
    """Install the Debian packages when a binary is missing (root only)."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(
            f"missing {', '.join(missing)}; install the Debian packages first: "
            f"sudo apt-get install -y {' '.join(APT_PACKAGES)}"
        )
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=apt_env)
    subprocess.run(["apt-get", "install", "-y", "-q", *APT_PACKAGES], check=True, env=apt_env)


def wait_for(
    what: str, check: Callable[[], T], timeout: float, poll: float = 0.2, log: Path | None = None
) -> T:
    """Poll `check()` until truthy; raise with the log's tail on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = ""
            if log is not None and log.exists():
                tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise TimeoutError(f"devslurm: timed out after {timeout:.0f}s waiting for {what}{tail}")
        time.sleep(poll)


def client(lay: Layout, *argv: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client (sinfo, scontrol, ...) against this cluster."""
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **env(lay.root)},
    )  # fmt: skip


def _ours(lay: Layout, pid: int | None) -> bool:
    """Alive and started by us: its argv names our state directory (guards pid reuse)."""
    if pid is None or not procs.alive(pid):
        return False
    return any(str(lay.root) in arg for arg in procs.cmdline(pid))


def daemon_pid(lay: Layout, daemon: str) -> int | None:
    """The pid of our running `daemon` (a name from Layout.daemons), or None."""
    pid = procs.read_pid_file(lay.pid_file(daemon))
    return pid if _ours(lay, pid) else None


def _argv(lay: Layout, daemon: str) -> list[str]:
    """Foreground argv of a daemon (foreground: the pid we spawn is the daemon)."""
    if daemon == "munged":
        return [
            "munged", "--foreground", f"--socket={lay.munge_socket}",
            f"--key-file={lay.munge_key}", f"--pid-file={lay.pid_file('munged')}",
            f"--log-file={lay.log / 'munged.log'}", f"--seed-file={lay.private / 'munged.seed'}",
        ]  # fmt: skip
    if daemon == "slurmctld":
        return ["slurmctld", "-D", "-f", str(lay.conf)]
    node = daemon.removeprefix("slurmd-")
    return ["slurmd", "-D", "-N", node, "-f", str(lay.conf)]


def _daemon_env(lay: Layout) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    return {**keep, "SLURM_CONF": str(lay.conf), "HOME": str(lay.root)}


def _spawn(lay: Layout, daemon: str) -> int:
    """Spawn one daemon detached from our session; record its pid in our pid file."""
    out = open(lay.log / f"{daemon}.stdout", "ab")  # noqa: SIM115 - handed to the child
    with out:
        proc = subprocess.Popen(
            _argv(lay, daemon), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            env=_daemon_env(lay), cwd=lay.root, start_new_session=True,
        )  # fmt: skip
    lay.pid_file(daemon).write_text(f"{proc.pid}\n")
    return proc.pid


def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_missing(lay: Layout) -> bool:
    """Start, in order, every daemon that is not running; wait until munged's socket
    exists and slurmctld answers. Returns True if it started any."""
    started = False
    port = ctld_port(lay.root)
    for i, daemon in enumerate(lay.daemons()):
        if daemon_pid(lay, daemon) is not None:
            continue
        if daemon != "munged":
            daemon_port = port if daemon == "slurmctld" else port + i - 1
            if _port_busy(daemon_port):
                raise RuntimeError(
                    f"devslurm: port {daemon_port} for {daemon} is taken by another "
                    f"process; set {ENV_PORT} to a free base port"
                )
        if daemon == "munged":
            lay.munge_socket.unlink(missing_ok=True)  # stale: its daemon is gone
        pid = _spawn(lay, daemon)
        started = True
        log = lay.log / f"{daemon}.stdout"
        if daemon == "munged":
            wait_for("munged's socket", lay.munge_socket.exists, 15, log=log)
        elif daemon == "slurmctld":
            wait_for(
                "slurmctld to answer",
                lambda: client(lay, "scontrol", "ping").stdout.count("UP") > 0,
                30, log=lay.log / "slurmctld.log",
            )  # fmt: skip
        if not procs.alive(pid):
            raise RuntimeError(f"devslurm: {daemon} exited at start; see {log}")
    return started


def _our_stepds(lay: Layout) -> list[int]:
    """slurmstepd processes spawned by our slurmd (they inherit our SLURM_CONF)."""
    conf = str(lay.conf)
    return [
        pid
        for pid in procs.all_pids()
        if (cmd := procs.cmdline(pid)) and cmd[0].startswith("slurmstepd")
        and procs.environ(pid).get("SLURM_CONF") == conf
    ]  # fmt: skip


def stop_all(lay: Layout, timeout: float) -> list[int]:
    """Stop our daemons (reverse start order) by pid, then leftover job steps of our
    slurmd; wait until they are gone. Returns the pids stopped."""
    stopped: list[int] = []
    for daemon in reversed(lay.daemons()):
        pid = daemon_pid(lay, daemon)
        if pid is not None:
            if procs.terminate([pid], timeout=timeout):
                raise RuntimeError(f"devslurm: {daemon} (pid {pid}) did not stop")
            stopped.append(pid)
        lay.pid_file(daemon).unlink(missing_ok=True)
    steps = _our_stepds(lay)
    procs.terminate(steps, timeout=10)
    return stopped + steps
