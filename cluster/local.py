"""The local back-end: the sweep runs in the foreground on this machine's Ray.

from cluster.local import LocalBackend, local_ray
LocalBackend().launch(request, resume=False)     # starts a private Ray, runs the driver
with local_ray(num_cpus=2):                      # or just the Ray, for a notebook
    ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from cluster import auth, watchdog
from cluster.backend import SweepRequest, follow_lease
from cluster.lease import Lease


@contextlib.contextmanager
def local_ray(num_cpus: int | None = None) -> Iterator[None]:
    """A Ray instance private to this process, stopped (and its files removed) at exit.

    Token auth with a fresh 0600 token, the dashboard off, and Ray's session files under a
    0700 temp dir of this run rather than the shared, world-writable /tmp/ray. Ray makes
    its own dir (and every session dir) 0777; the parent's 0700 is what keeps other users
    out of its sockets and logs. A watchdog (``cluster.watchdog``) stops Ray's processes
    and removes the dir within seconds if this process dies without getting here.
    """
    import ray

    root = Path(tempfile.mkdtemp(prefix="bs-"))  # 0700; short: Unix socket paths < 108 bytes
    dog = watchdog.start(os.getpid(), root)
    try:
        with auth.private_token(root):
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                _temp_dir=str(root / "r"),
            )
            try:
                yield
            finally:
                ray.shutdown()
    finally:
        dog.terminate()
        dog.wait()
        shutil.rmtree(root, ignore_errors=True)


def machine_resources() -> tuple[int, int]:
    """CPUs and GPUs the local Ray will have: Ray's own detection, as ``ray.init`` does it
    (cgroup limits included), or the OS's CPU count and no GPU if that API has moved."""
    try:
        from ray._private import accelerators, utils

        gpu = accelerators.get_accelerator_manager_for_resource("GPU")
        return int(utils.get_num_cpus()), int(gpu.get_current_node_num_accelerators()) if gpu else 0
    except (ImportError, AttributeError):
        return os.cpu_count() or 1, 0


class LocalBackend:
    """Runs the driver in this process, on a private local Ray."""

    name = "local"

    def describe(self, req: SweepRequest) -> str:
        return f"local: runs here in the foreground on this machine's Ray; RUN_DIR {req.run_dir}"

    def check(self, req: SweepRequest) -> None:
        # this machine's Ray takes what it has; only a trial bigger than all of it never runs
        if req.workers_per_trial > 1:
            req.workers.check(1, *machine_resources(), "this machine")

    def capacity(self, req: SweepRequest) -> str:
        return req.workers.line(1, *machine_resources(), "this machine")

    def launch(self, req: SweepRequest, resume: bool) -> Lease | None:
        with local_ray():
            req.drive(req.run_dir, resume, self.name)
        return None

    def is_alive(self, lease: Lease) -> bool:
        return lease.fresh()

    def follow(self, run_dir: Path, lease: Lease, show: Callable[[bool], None]) -> None:
        follow_lease(self, run_dir, lease, show)
