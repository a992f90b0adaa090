"""A real two-node Slurm cluster on this machine, with accounting, for development and tests.

    python -m cluster.devslurm up       # idempotent; waits until n1 and n2 are idle
    python -m cluster.devslurm status
    SLURM_CONF=$PWD/.devslurm/etc/slurm.conf sinfo -N
    python -m cluster.devslurm down     # stops exactly the daemons `up` started

One munged, one mariadbd (Debian's MariaDB server, its data in ``mariadb/``), one
slurmdbd on it, one slurmctld and two slurmd (``slurmd -N n1`` / ``-N n2``, both at
NodeAddr 127.0.0.1 on their own port), each node with 2 CPUs and 2 fake GPUs (gres
backed by /dev/null-like device nodes; plain files when not root); started in that
order and stopped in reverse. Everything (config, munge key and socket, database,
spool, logs, pid files) lives under one directory: ``<repo>/.devslurm/`` or
``$BATCHSCALE_DEVSLURM_DIR``. Nothing reads or writes /etc/slurm, /etc/munge or
/etc/mysql, and the system's MariaDB service is never touched: every daemon and client
gets ``SLURM_CONF``, Slurm finds our munge socket through ``AuthInfo=socket=...`` (and
``AccountingStoragePass``, for slurmdbd), mariadbd runs with ``--no-defaults``. Ports:
see ``layout.daemon_ports`` (5 consecutive ones in 7000..8999, from the directory).

Accounting is enforced like at a real site (``AccountingStorageEnforce=associations,
limits,qos``): the first ``up`` creates, with sacctmgr, the accounts ``lab-a`` (the
user's default) and ``lab-b``, and the QOS ``normal`` (default), ``short`` (MaxWall
10 min, one GPU per user, refused at submission) and ``restricted`` (not allowed to the
user); see ``accounting``. Later ``up`` calls reuse the database.

Python API: ``up()``, ``down()``, ``status()``, ``env()``, ``job_info()``,
``wait_job()``, ``sacct()``, ``node_states()``; ``up()`` returns a :class:`DevSlurm`
whose ``.env`` holds what clients (sbatch, sacct, submitit) need. ``status`` exits 0
when the cluster runs, 3 when it doesn't.

Dev-cluster conveniences: requeued jobs restart after ~11 s (``cred_expire=10``), job ids
start at a per-directory ``FirstJobId``, and an epilog stops Ray processes a job left
behind (proctrack/linuxproc can't see daemonized processes).

Limits: slurmdbd lags a job by a second or more, so ``sacct`` may not list a job that
has just ended; ``job_info()`` (scontrol) shows a job for 10 min after it ends.
slurmdbd and slurmctld listen on every interface (munge authenticates their clients);
slurmd and mariadbd only on 127.0.0.1.

Modules: ``layout`` (nodes, paths, ports, client env), ``config`` (files on disk),
``daemons`` (processes), ``accounting`` (sacctmgr set-up), ``api`` (what is exported
here), ``__main__`` (the CLI). For development only: nothing in the production path
imports this package.
"""

from cluster.devslurm.api import DevSlurm, down, job_info, node_states, sacct, status, up, wait_job
from cluster.devslurm.layout import ENV_DIR, ENV_PORT, NODES, PARTITION, env, state_dir

__all__ = [
    "ENV_DIR",
    "ENV_PORT",
    "NODES",
    "PARTITION",
    "DevSlurm",
    "down",
    "env",
    "job_info",
    "node_states",
    "sacct",
    "state_dir",
    "status",
    "up",
    "wait_job",
]
