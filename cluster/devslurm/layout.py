"""The dev cluster's shape and where it lives: nodes and their size, every path below the
state directory, the ports and job-id range derived from that directory, and the
environment a Slurm client needs to talk to it."""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_DIR = "BATCHSCALE_DEVSLURM_DIR"
ENV_PORT = "BATCHSCALE_DEVSLURM_PORT"  # optional base port: see daemon_ports
CLUSTER_NAME = "batchscale-dev"
NODES: tuple[str, ...] = ("n1", "n2")
# Node features, so that --constraint can be tried (and refused) as on a real site
FEATURES: dict[str, str] = {"n1": "cpu,fast", "n2": "cpu"}
CPUS_PER_NODE = 2  # this machine has 2 cores; both nodes declare them (overcommit)
GPUS_PER_NODE = 2
REAL_MEMORY_MB = 4000
PARTITION = "debug"


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
    def slurmdbd_conf(self) -> Path:
        # slurmdbd has no -f: it reads slurmdbd.conf next to $SLURM_CONF.
        return self.etc / "slurmdbd.conf"

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
    def db_password(self) -> Path:
        """slurmdbd's MariaDB password (generated once)."""
        return self.private / "slurmdbd.pass"

    @property
    def mariadb_init(self) -> Path:
        """SQL mariadbd runs at every start (--init-file): slurmdbd's database user."""
        return self.private / "mariadb-init.sql"

    @property
    def mariadb_dir(self) -> Path:
        """MariaDB's data directory (slurmdbd's database; kept across down/up)."""
        return self.root / "mariadb"

    @property
    def mariadb_socket(self) -> Path:
        return self.run / "mariadb.sock"

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
        """Pid file of a daemon named in ``daemons()`` ('munged', 'slurmd-n1', ...)."""
        return self.run / f"{daemon}.pid"

    def daemons(self) -> list[str]:
        """Daemon names in start order (stop in reverse)."""
        return ["munged", "mariadbd", "slurmdbd", "slurmctld", *(f"slurmd-{n}" for n in NODES)]


def state_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The cluster directory: `path`, else $BATCHSCALE_DEVSLURM_DIR, else <repo>/.devslurm."""
    raw = path if path is not None else os.environ.get(ENV_DIR) or REPO_ROOT / ".devslurm"
    return Path(raw).expanduser().resolve()


def env(path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Environment variables a Slurm client needs to talk to the dev cluster."""
    lay = Layout(state_dir(path))
    return {"SLURM_CONF": str(lay.conf), ENV_DIR: str(lay.root)}


PORTS_PER_CLUSTER = 3 + len(NODES)  # slurmctld, one slurmd per node, slurmdbd, mariadbd


def ctld_port(root: Path) -> int:
    """slurmctld's port, the first of ``PORTS_PER_CLUSTER`` consecutive ones (see
    daemon_ports); $BATCHSCALE_DEVSLURM_PORT overrides it.

    Derived from the directory so two checkouts on one machine do not collide; kept in
    7000..8999, below Ray's ports (20000 and up) and the kernel's ephemeral range.
    """
    if os.environ.get(ENV_PORT):
        return int(os.environ[ENV_PORT])
    return 7000 + (zlib.crc32(str(root).encode()) % 400) * PORTS_PER_CLUSTER


def daemon_ports(root: Path) -> dict[str, int]:
    """{daemon: TCP port} for every daemon but munged (a Unix socket): slurmctld at the
    base port, slurmd of node i at base + 1 + i, then slurmdbd, then mariadbd."""
    base = ctld_port(root)
    ports = {"slurmctld": base, **{f"slurmd-{n}": base + 1 + i for i, n in enumerate(NODES)}}
    ports["slurmdbd"] = base + 1 + len(NODES)
    ports["mariadbd"] = base + 2 + len(NODES)
    return ports


def first_job_id(root: Path) -> int:
    """First job id, from the directory like the ports: two dev clusters on one machine
    (two checkouts) then number jobs in different ranges, and per-job resources named
    after the job id (Ray's /tmp/bs-<job>-<node>, its ports) can't clash."""
    return (1 + zlib.crc32(str(root).encode()) % 9000) * 1000
