"""A real two-node Slurm cluster on this machine, for development and tests.

    python -m cluster.devslurm up       # idempotent; waits until n1 and n2 are idle
    python -m cluster.devslurm status
    SLURM_CONF=$PWD/.devslurm/etc/slurm.conf sinfo -N
    python -m cluster.devslurm down     # stops exactly the daemons `up` started

One munged, one slurmctld and two slurmd (``slurmd -N n1`` / ``-N n2``, both at
NodeAddr 127.0.0.1 on their own port), each node with 2 CPUs and 2 fake GPUs (gres
backed by /dev/null-like device nodes; plain files when not root). Everything (config,
munge key and socket, spool, logs, pid files) lives under one directory:
``<repo>/.devslurm/`` or ``$BATCHSCALE_DEVSLURM_DIR``. Nothing reads or writes /etc/slurm
or /etc/munge: every daemon and client gets ``SLURM_CONF``, and Slurm finds our munge
socket through ``AuthInfo=socket=...`` (munge's own tools take
``--socket``; there is no environment variable for it).

Python API: ``up()``, ``down()``, ``status()``, ``env()``, ``job_info()``,
``wait_job()``; ``up()`` returns a :class:`DevSlurm` whose ``.env`` holds what clients
(sbatch, submitit) need. ``status`` exits 0 when the cluster runs, 3 when it doesn't.

Dev-cluster conveniences: requeued jobs restart after ~11 s (``cred_expire=10``), job ids
start at a per-directory ``FirstJobId``, and an epilog stops Ray processes a job left
behind (proctrack/linuxproc can't see daemonized processes).

Limits: accounting is off (no slurmdbd), so ``sacct`` fails and submitit's ``job.state``
reads ``UNKNOWN``; ``job.result()`` still works (it waits for the result file), and
``job_info()`` (scontrol) shows a job for 10 min after it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cluster import procs

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_DIR = "BATCHSCALE_DEVSLURM_DIR"
ENV_PORT = "BATCHSCALE_DEVSLURM_PORT"  # optional: slurmctld port; slurmd use +1, +2
NODES: tuple[str, ...] = ("n1", "n2")
CPUS_PER_NODE = 2  # this machine has 2 cores; both nodes declare them (overcommit)
GPUS_PER_NODE = 2
REAL_MEMORY_MB = 4000
PARTITION = "debug"
APT_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "srun", "scontrol", "squeue")
T = TypeVar("T")
# States in which a node is registered, responding and schedulable.
_USABLE = {"idle", "mixed", "allocated", "completing"}


@dataclass(frozen=True)
class Layout:
    """Every path the dev cluster uses, all below `root`."""

    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def conf(self) -> Path:
        return self.etc / "slurm.conf"

    @property
    def gres_conf(self) -> Path:
        return self.etc / "gres.conf"

    @property
    def epilog(self) -> Path:
        return self.etc / "epilog.sh"

    @property
    def munge_dir(self) -> Path:
        # munged insists that every directory above its socket is world-executable.
        return self.root / "munge"

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket"

    @property
    def private(self) -> Path:
        # 0700: the munge key and seed; munged refuses keys others could read.
        return self.root / "private"

    @property
    def munge_key(self) -> Path:
        return self.private / "munge.key"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def gres(self) -> Path:
        return self.root / "gres"

    def pid_file(self, daemon: str) -> Path:
        """Pid file for 'munged', 'slurmctld' or 'slurmd-<node>'."""
        return self.run / f"{daemon}.pid"

    def daemons(self) -> list[str]:
        """Daemon names in start order (stop in reverse)."""
        return ["munged", "slurmctld", *(f"slurmd-{n}" for n in NODES)]


@dataclass(frozen=True)
class DevSlurm:
    """A running dev cluster: where it lives and the environment its clients need."""

    state_dir: Path
    conf: Path
    munge_socket: Path
    nodes: tuple[str, ...]
    partition: str
    env: dict[str, str] = field(default_factory=dict)
    started: bool = False  # True if this `up` call started at least one daemon


def state_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The cluster directory: `path`, else $BATCHSCALE_DEVSLURM_DIR, else <repo>/.devslurm."""
    raw = path if path is not None else os.environ.get(ENV_DIR) or REPO_ROOT / ".devslurm"
    return Path(raw).expanduser().resolve()


def env(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Environment variables a Slurm client needs to talk to the dev cluster."""
    lay = Layout(state_dir(path))
    return {"SLURM_CONF": str(lay.conf), ENV_DIR: str(lay.root)}


def ctld_port(root: Path) -> int:
    """slurmctld's port; slurmd of node i listens on port + 1 + i.

    Derived from the directory so two checkouts on one machine do not collide; kept in
    7000..7899, below Ray's ranges and the kernel's ephemeral range.
    """
    if os.environ.get(ENV_PORT):
        return int(os.environ[ENV_PORT])
    return 7000 + (zlib.crc32(str(root).encode()) % 300) * 3


def first_job_id(root: Path) -> int:
    """First job id, from the directory like the ports: two dev clusters on one machine
    (two checkouts) then number jobs in different ranges, and per-job resources named
    after the job id (Ray's /tmp/bs-<job>-<node>, its ports) can't clash."""
    return (1 + zlib.crc32(str(root).encode()) % 9000) * 1000


def render_slurm_conf(lay: Layout, port: int, hostname: str) -> str:
    """slurm.conf text for the dev cluster (pure; tested via the running cluster)."""
    nodes = ",".join(NODES)
    node_lines = "\n".join(
        f"NodeName={n} NodeAddr=127.0.0.1 NodeHostname={hostname} Port={port + 1 + i} "
        f"CPUs={CPUS_PER_NODE} RealMemory={REAL_MEMORY_MB} Gres=gpu:{GPUS_PER_NODE} State=UNKNOWN"
        for i, n in enumerate(NODES)
    )
    return f"""\
# Generated by `python -m cluster.devslurm up`; edits are overwritten.
ClusterName=batchscale-dev
FirstJobId={first_job_id(lay.root)}
SlurmctldHost={hostname}(127.0.0.1)
SlurmctldPort={port}
# Bind the daemons to NodeAddr/SlurmctldHost's address (127.0.0.1), not every interface.
CommunicationParameters=NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: requeued jobs wait cred_expire+1 s before they may start (default 120).
AuthInfo=socket={lay.munge_socket},cred_expire=10
StateSaveLocation={lay.spool / "ctld"}
SlurmdSpoolDir={lay.spool}/%n
SlurmctldPidFile={lay.pid_file("slurmctld")}
SlurmdPidFile={lay.run}/slurmd-%n.pid
SlurmctldLogFile={lay.log / "slurmctld.log"}
SlurmdLogFile={lay.log}/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a dev box: track processes by parentage, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
GresTypes=gpu
MpiDefault=none
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={lay.log / "jobcomp.log"}
# submitit requeues itself on preemption/timeout (scontrol requeue).
JobRequeue=1
ReturnToService=2
# linuxproc loses daemonized processes (Ray's): the epilog stops a job's leftovers.
Epilog={lay.epilog}
# Start jobs fast and notice dead daemons quickly.
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MessageTimeout=10
TCPTimeout=2
SlurmdTimeout=30
SlurmctldTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
MinJobAge=600
{node_lines}
PartitionName={PARTITION} Nodes={nodes} Default=YES MaxTime=INFINITE State=UP
"""


def render_epilog(lay: Layout, python: str) -> str:
    """Epilog: what proctrack/cgroup would do for Ray nodes that left the job's process
    tree (see cluster.ray_node.cleanup). Always exits 0: a failing epilog drains the
    node."""
    return f"""#!/bin/sh
# Generated by `python -m cluster.devslurm up`; edits are overwritten.
[ -n "$SLURM_JOB_ID" ] || exit 0
PYTHONPATH={REPO_ROOT} timeout 30 {python} -m cluster.ray_node cleanup \\
    --job-id "$SLURM_JOB_ID" --node-name "$SLURMD_NODENAME" >> {lay.log}/epilog.log 2>&1
exit 0
"""


def render_gres_conf(lay: Layout) -> str:
    """gres.conf: 2 'GPUs' per node, each a fake device file (see _make_fake_gpu)."""
    last = GPUS_PER_NODE - 1
    return "".join(
        f"NodeName={n} Name=gpu File={lay.gres / n}/gpu[0-{last}]\n" for n in NODES
    )


# --------------------------------------------------------------------------- helpers


def _ensure_packages() -> None:
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


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def _prepare(lay: Layout) -> bool:
    """Create directories, munge key, fake GPU files and configs (idempotent).

    Returns True if a config file's content changed.
    """
    for d in (lay.root, lay.etc, lay.munge_dir, lay.run, lay.log, lay.spool, lay.gres):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o755)  # munged checks the socket path's directories
    lay.private.mkdir(parents=True, exist_ok=True)
    lay.private.chmod(0o700)
    (lay.spool / "ctld").mkdir(exist_ok=True)
    for n in NODES:
        (lay.spool / n).mkdir(exist_ok=True)
        (lay.gres / n).mkdir(exist_ok=True)
        for i in range(GPUS_PER_NODE):
            _make_fake_gpu(lay.gres / n / f"gpu{i}")
    if not lay.munge_key.exists():
        fd = os.open(lay.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(1024))
    port = ctld_port(lay.root)
    changed = _write_if_changed(lay.conf, render_slurm_conf(lay, port, socket.gethostname()))
    changed = _write_if_changed(lay.epilog, render_epilog(lay, sys.executable)) or changed
    lay.epilog.chmod(0o755)
    return _write_if_changed(lay.gres_conf, render_gres_conf(lay)) or changed


def _make_fake_gpu(path: Path) -> None:
    """One fake GPU for gres.conf's File=.

    Slurm 22.05 accepts a plain file but logs "is not a valid character or block
    device" and then leaves CUDA_VISIBLE_DEVICES unset in jobs. As root we therefore
    make a character device with /dev/null's numbers (1, 3): harmless, and jobs see
    CUDA_VISIBLE_DEVICES like on a real GPU node. Otherwise a plain file is used.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISCHR(st.st_mode):
        return
    try:
        path.unlink(missing_ok=True)
        os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        path.touch()


def _ours(lay: Layout, pid: int | None) -> bool:
    """Alive and started by us: its argv names our state directory (guards pid reuse)."""
    if pid is None or not procs.alive(pid):
        return False
    return any(str(lay.root) in arg for arg in procs.cmdline(pid))


def _daemon_pid(lay: Layout, daemon: str) -> int | None:
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


def _start(lay: Layout, daemon: str) -> int:
    """Spawn one daemon detached from our session; record its pid in our pid file."""
    out = open(lay.log / f"{daemon}.stdout", "ab")  # noqa: SIM115 - handed to the child
    with out:
        proc = subprocess.Popen(
            _argv(lay, daemon), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            env=_daemon_env(lay), cwd=lay.root, start_new_session=True,
        )  # fmt: skip
    lay.pid_file(daemon).write_text(f"{proc.pid}\n")
    return proc.pid


def _wait_for(
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


def _client(lay: Layout, *argv: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **env(lay.root)},
    )  # fmt: skip


def node_states(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """{node: sinfo long state} e.g. {'n1': 'idle', 'n2': 'idle*'}; {} if unreachable."""
    lay = Layout(state_dir(path))
    try:
        res = _client(lay, "sinfo", "-h", "-N", "-p", PARTITION, "-o", "%N %T", timeout=15)
    except subprocess.TimeoutExpired:
        return {}
    if res.returncode != 0:
        return {}
    states = {}
    for line in res.stdout.splitlines():
        name, _, state = line.strip().partition(" ")
        states[name] = state
    return states


@contextlib.contextmanager
def _locked(lay: Layout) -> Iterator[None]:
    """Serialise up/down between processes (e.g. two pytest sessions)."""
    lay.root.mkdir(parents=True, exist_ok=True)
    with open(lay.root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------- API


def up(path: str | os.PathLike[str] | None = None, timeout: float = 120.0) -> DevSlurm:
    """Start whatever is not running yet and wait until both nodes are usable.

    Idempotent: a second call finds every daemon alive and only re-checks `sinfo`.
    """
    lay = Layout(state_dir(path))
    started = False
    with _locked(lay):
        _ensure_packages()
        running = [d for d in lay.daemons() if _daemon_pid(lay, d) is not None]
        if _prepare(lay) and "slurmctld" in running:
            # Most settings (epilog, timeouts, scheduler) apply on reconfigure; changed
            # ports or nodes need `down` + `up`, which would cancel running jobs.
            _client(lay, "scontrol", "reconfigure")
            print(
                "devslurm: config changed; applied with `scontrol reconfigure` (port or "
                "node changes need `python -m cluster.devslurm down` then `up`)",
                file=sys.stderr,
            )
        port = ctld_port(lay.root)
        for i, daemon in enumerate(lay.daemons()):
            if _daemon_pid(lay, daemon) is not None:
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
            pid = _start(lay, daemon)
            started = True
            log = lay.log / f"{daemon}.stdout"
            if daemon == "munged":
                _wait_for("munged's socket", lay.munge_socket.exists, 15, log=log)
            elif daemon == "slurmctld":
                _wait_for(
                    "slurmctld to answer",
                    lambda: _client(lay, "scontrol", "ping").stdout.count("UP") > 0,
                    30, log=lay.log / "slurmctld.log",
                )  # fmt: skip
            if not procs.alive(pid):
                raise RuntimeError(f"devslurm: {daemon} exited at start; see {log}")
        _wait_usable(lay, timeout)
    return DevSlurm(
        state_dir=lay.root, conf=lay.conf, munge_socket=lay.munge_socket, nodes=NODES,
        partition=PARTITION, env=env(lay.root), started=started,
    )  # fmt: skip


def _wait_usable(lay: Layout, timeout: float) -> None:
    """Poll sinfo until every node is registered and schedulable.

    A node left DOWN/DRAIN by an earlier unclean stop is resumed once: ReturnToService=2
    only revives nodes that were down for not responding.
    """
    resumed = False
    deadline = time.monotonic() + timeout

    def ready() -> bool:
        nonlocal resumed
        states = node_states(lay.root)
        if all(states.get(n) in _USABLE for n in NODES):
            return True
        stuck = [n for n in NODES if any(s in states.get(n, "") for s in ("down", "drain"))]
        if stuck and not resumed and deadline - time.monotonic() < timeout - 5:
            _client(lay, "scontrol", "update", f"NodeName={','.join(stuck)}", "State=RESUME")
            resumed = True
        return False

    _wait_for("nodes n1, n2 idle in sinfo", ready, timeout, poll=0.5, log=lay.log / "slurmctld.log")


def down(path: str | os.PathLike[str] | None = None, timeout: float = 60.0) -> list[int]:
    """Cancel our jobs, stop our daemons by pid and wait until they are gone.

    Returns the pids that were stopped. Leftover job steps (slurmstepd whose environment
    carries our SLURM_CONF) are stopped too, so nothing of this cluster survives.
    """
    lay = Layout(state_dir(path))
    stopped: list[int] = []
    with _locked(lay):
        if _daemon_pid(lay, "slurmctld") is not None:
            _client(lay, "scancel", f"--partition={PARTITION}")  # our cluster's jobs only
            with contextlib.suppress(TimeoutError):
                _wait_for(
                    "jobs to end",
                    lambda: not _client(lay, "squeue", "-h", "-o", "%i").stdout.strip(),
                    15,
                )  # fmt: skip
        for daemon in reversed(lay.daemons()):
            pid = _daemon_pid(lay, daemon)
            if pid is not None:
                if procs.terminate([pid], timeout=timeout):
                    raise RuntimeError(f"devslurm: {daemon} (pid {pid}) did not stop")
                stopped.append(pid)
            lay.pid_file(daemon).unlink(missing_ok=True)
        steps = _our_stepds(lay)
        procs.terminate(steps, timeout=10)
        stopped.extend(steps)
    return stopped


def _our_stepds(lay: Layout) -> list[int]:
    """slurmstepd processes spawned by our slurmd (they inherit our SLURM_CONF)."""
    conf = str(lay.conf)
    return [
        pid
        for pid in procs.all_pids()
        if (cmd := procs.cmdline(pid)) and cmd[0].startswith("slurmstepd")
        and procs.environ(pid).get("SLURM_CONF") == conf
    ]  # fmt: skip


def job_info(job_id: int | str, path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """`scontrol show job` as a dict (JobState, ExitCode, NodeList, ...); {} if unknown.

    The dev cluster has no accounting (no sacct); finished jobs stay visible here for
    MinJobAge (600 s).
    """
    res = _client(Layout(state_dir(path)), "scontrol", "show", "job", "--oneliner", str(job_id))
    if res.returncode != 0:
        return {}
    return dict(item.split("=", 1) for item in res.stdout.split() if "=" in item)


def wait_job(
    job_id: int | str, timeout: float = 300.0, path: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """Poll (0.5 s) until the job has ended; return its job_info. Quicker than
    `sbatch --wait`, whose polling interval grows to tens of seconds."""
    ended = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
             "PREEMPTED", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT"}  # fmt: skip
    return _wait_for(
        f"job {job_id} to end",
        lambda: (info := job_info(job_id, path)).get("JobState") in ended and info,
        timeout, poll=0.5,
    )  # fmt: skip


def status(path: str | os.PathLike[str] | None = None) -> dict[str, object]:
    """{'state_dir', 'daemons': {name: pid|None}, 'nodes': {node: state}, 'running'}."""
    lay = Layout(state_dir(path))
    daemons = {d: _daemon_pid(lay, d) for d in lay.daemons()}
    nodes = node_states(lay.root) if daemons["slurmctld"] else {}
    running = all(daemons.values()) and all(nodes.get(n) in _USABLE for n in NODES)
    return {"state_dir": str(lay.root), "daemons": daemons, "nodes": nodes, "running": running}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.devslurm", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--dir", default=None, help=f"state directory (default ${ENV_DIR} or <repo>/.devslurm)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            ds = up(args.dir)
            how = "started" if ds.started else "already running"
            print(f"devslurm up ({how}): nodes {', '.join(ds.nodes)}")
            print(f"  export SLURM_CONF={ds.conf}")
        elif args.command == "down":
            pids = down(args.dir)
            print(f"devslurm down: stopped {len(pids)} process(es) {pids}")
        else:
            st = status(args.dir)
            print(f"state dir: {st['state_dir']}")
            for name, pid in st["daemons"].items():  # type: ignore[union-attr]
                print(f"  {name:12s} {'pid ' + str(pid) if pid else 'not running'}")
            for node, state in st["nodes"].items():  # type: ignore[union-attr]
                print(f"  node {node}: {state}")
            print("running" if st["running"] else "not running")
            return 0 if st["running"] else 3
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
