"""The dev cluster's processes: install the Debian packages if missing, start munged,
mariadbd (initialising its data directory the first time), slurmdbd, slurmctld and one
slurmd per node (detached, pid files under the state directory), find them again by pid,
stop exactly them, and run Slurm clients against the cluster."""

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
from cluster.devslurm.layout import ENV_PORT, Layout, daemon_ports, env

APT_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server")
BINARIES = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "srun", "scontrol", "squeue",
            "slurmdbd", "sacctmgr", "sacct", "mariadbd", "mariadb-install-db")  # fmt: skip
# mariadbd's settings (both for the one-off bootstrap and every start): the sizes are
# the least slurmdbd takes without "Database settings not recommended" in its log (the
# buffer pool fills as used: mariadbd stays near 110 MB resident). --no-defaults must
# come first: nothing is read from /etc/mysql.
MARIADB_OPTS = ("--no-defaults", "--user=root", "--skip-name-resolve",
                "--innodb-buffer-pool-size=512M", "--innodb-log-file-size=64M",
                "--innodb-lock-wait-timeout=900")  # fmt: skip
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


def wait_for(what: str, check: Callable[[], T], timeout: float, poll: float = 0.2, log: Path | None = None) -> T:
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
    """Alive and started by us: its argv names our state directory, or (slurmdbd, which
    has no config option) its environment holds our SLURM_CONF. Guards pid reuse."""
    if pid is None or not procs.alive(pid):
        return False
    if any(str(lay.root) in arg for arg in procs.cmdline(pid)):
        return True
    return procs.environ(pid).get("SLURM_CONF") == str(lay.conf)


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
    if daemon == "mariadbd":
        return [
            "mariadbd", *MARIADB_OPTS, f"--datadir={lay.mariadb_dir}",
            f"--socket={lay.mariadb_socket}", f"--port={daemon_ports(lay.root)['mariadbd']}",
            "--bind-address=127.0.0.1", f"--pid-file={lay.pid_file('mariadbd')}",
            f"--log-error={lay.log / 'mariadbd.log'}", f"--init-file={lay.mariadb_init}",
        ]  # fmt: skip
    if daemon == "slurmdbd":
        return ["slurmdbd", "-D"]  # reads slurmdbd.conf next to $SLURM_CONF
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


def port_open(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _mariadb_greets(path: Path) -> bool:
    """True once mariadbd accepts on its socket and sends its handshake (it starts
    accepting only after the --init-file ran)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(str(path))
            return bool(s.recv(4))
        except OSError:
            return False


def init_mariadb(lay: Layout) -> bool:
    """Create MariaDB's system tables in lay.mariadb_dir unless there (first start only;
    root logs in by Unix socket only). Built aside and renamed into place, so a failed
    bootstrap never leaves a half-made data directory. Returns True if it created it."""
    if (lay.mariadb_dir / "mysql").is_dir():
        return False
    if lay.mariadb_dir.exists() and any(lay.mariadb_dir.iterdir()):
        raise RuntimeError(f"devslurm: {lay.mariadb_dir} is not a MariaDB data directory; move it away")
    tmp = lay.mariadb_dir.with_name(lay.mariadb_dir.name + ".init")
    shutil.rmtree(tmp, ignore_errors=True)
    res = subprocess.run(
        ["mariadb-install-db", *MARIADB_OPTS, f"--datadir={tmp}",
         "--auth-root-authentication-method=socket", "--skip-test-db"],
        capture_output=True, text=True, timeout=120, cwd=lay.root,
    )  # fmt: skip
    (lay.log / "mariadb-install-db.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"devslurm: mariadb-install-db failed; see {lay.log}/mariadb-install-db.log")
    if lay.mariadb_dir.exists():
        lay.mariadb_dir.rmdir()  # empty, checked above
    tmp.rename(lay.mariadb_dir)
    return True


def _wait_ready(lay: Layout, daemon: str, pid: int) -> None:
    """Wait until a freshly spawned daemon serves; raise early if it died."""
    ports = daemon_ports(lay.root)
    checks: dict[str, tuple[str, Callable[[], bool], float, Path]] = {
        "munged": ("munged's socket", lay.munge_socket.exists, 15, lay.log / "munged.stdout"),
        "mariadbd": ("mariadbd to accept", lambda: _mariadb_greets(lay.mariadb_socket), 60,
                     lay.log / "mariadbd.log"),
        # slurmdbd listens once it has connected to the database and made its tables.
        "slurmdbd": ("slurmdbd to listen", lambda: port_open(ports["slurmdbd"]), 90,
                     lay.log / "slurmdbd.log"),
        "slurmctld": ("slurmctld to answer",
                      lambda: client(lay, "scontrol", "ping").stdout.count("UP") > 0, 30,
                      lay.log / "slurmctld.log"),
    }  # fmt: skip
    if daemon not in checks:
        return
    what, check, timeout, log = checks[daemon]

    def ready() -> bool:
        if not procs.alive(pid):
            raise RuntimeError(f"devslurm: {daemon} exited at start; see {log}")
        return check()

    wait_for(what, ready, timeout, log=log)


def start_missing(lay: Layout, before: dict[str, Callable[[], None]] | None = None) -> list[str]:
    """Start, in order, every daemon that is not running and wait until each serves
    (munged's socket, mariadbd's handshake, slurmdbd's port, slurmctld's ping).
    ``before[daemon]()`` runs just before `daemon` would be considered (e.g. sacctmgr
    set-up before slurmctld). Returns the daemons it started."""
    started: list[str] = []
    ports = daemon_ports(lay.root)
    for daemon in lay.daemons():
        if before and daemon in before:
            before[daemon]()
        if daemon_pid(lay, daemon) is not None:
            continue
        if daemon in ports and port_open(ports[daemon]):
            raise RuntimeError(
                f"devslurm: port {ports[daemon]} for {daemon} is taken by another "
                f"process; set {ENV_PORT} to a free base port"
            )
        if daemon == "munged":
            lay.munge_socket.unlink(missing_ok=True)  # stale: its daemon is gone
        if daemon == "mariadbd":
            init_mariadb(lay)
        pid = _spawn(lay, daemon)
        started.append(daemon)
        _wait_ready(lay, daemon, pid)
        if not procs.alive(pid):
            raise RuntimeError(f"devslurm: {daemon} exited at start; see {lay.log}/{daemon}.stdout")
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
