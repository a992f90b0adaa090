"""Small /proc helpers to find, signal and wait for *our own* processes by pid.

Used by ``cluster.devslurm`` and ``cluster.ray_node``: both must stop exactly the
processes they started (the machine is shared), never by name. Linux only; no psutil
(it is not a dependency of this project).

    python -c "from cluster import procs; print(procs.cmdline(1))"
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

_PROC = Path("/proc")


def _read(pid: int, name: str) -> bytes | None:
    try:
        return (_PROC / str(pid) / name).read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
        return None
    except OSError:  # e.g. ESRCH while the process exits
        return None


def _reap(pid: int) -> None:
    """Collect `pid` if it is our exited child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie (a zombie is dead, only unreaped)."""
    if pid <= 0:
        return False
    _reap(pid)
    stat = _read(pid, "stat")
    if stat is None:
        return False
    # Field 3 (after the parenthesised comm, which may contain spaces) is the state.
    state = stat[stat.rfind(b")") + 2 :].split(b" ", 1)[0]
    return state not in (b"Z", b"X")


def cmdline(pid: int) -> list[str]:
    """The argv of `pid` ([] when gone or unreadable)."""
    raw = _read(pid, "cmdline")
    if not raw:
        return []
    return [a.decode(errors="replace") for a in raw.rstrip(b"\0").split(b"\0")]


def environ(pid: int) -> dict[str, str]:
    """The initial environment of `pid` ({} when gone or unreadable)."""
    raw = _read(pid, "environ")
    if not raw:
        return {}
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def ppid(pid: int) -> int | None:
    """The parent pid of `pid`, or None when gone."""
    stat = _read(pid, "stat")
    if stat is None:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split(b" ")
    return int(fields[1])


def session_id(pid: int) -> int | None:
    """The session id (setsid group) of `pid`, or None when gone."""
    stat = _read(pid, "stat")
    if stat is None:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split(b" ")
    return int(fields[3])


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), or None when gone: with the pid, it
    names one process, even after the kernel reuses the pid."""
    stat = _read(pid, "stat")
    if stat is None:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split(b" ")
    return int(fields[19])


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` in the process tree (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for p in all_pids():
        parent = ppid(p)
        if parent is not None:
            children.setdefault(parent, []).append(p)
    found: set[int] = set()
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        if p not in found:
            found.add(p)
            todo.extend(children.get(p, []))
    return found


def owner(pid: int) -> int | None:
    """The uid owning `pid`, or None when gone."""
    try:
        return (_PROC / str(pid)).stat().st_uid
    except FileNotFoundError:
        return None


def all_pids() -> Iterator[int]:
    """Every pid currently visible in /proc."""
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def ancestors(pid: int) -> set[int]:
    """`pid` and all its ancestors (used so a caller never signals itself)."""
    seen: set[int] = set()
    cur: int | None = pid
    while cur and cur not in seen:
        seen.add(cur)
        cur = ppid(cur)
    return seen


def read_pid_file(path: Path) -> int | None:
    """The pid stored in `path`, or None if missing/garbled."""
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def wait_gone(pids: Iterable[int], timeout: float, poll: float = 0.1) -> set[int]:
    """Poll until none of `pids` is alive; return those still alive at `timeout`."""
    left = {p for p in pids if alive(p)}
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        time.sleep(poll)
        left = {p for p in left if alive(p)}
    return left


def terminate(pids: Iterable[int], timeout: float = 15.0) -> set[int]:
    """SIGTERM `pids`, wait up to `timeout`, SIGKILL the rest, wait again.

    Returns the pids that still exist afterwards (normally empty).
    """
    targets = {p for p in pids if alive(p)}
    for pid in targets:
        _signal(pid, signal.SIGTERM)
    left = wait_gone(targets, timeout)
    for pid in left:
        _signal(pid, signal.SIGKILL)
    return wait_gone(left, 5.0)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def listening(pids: Iterable[int]) -> list[tuple[int, str, int]]:
    """(pid, local ip, port) of every listening TCP socket (IPv4 and IPv6) of `pids`."""
    import ipaddress

    inode_to_addr: dict[str, tuple[str, int]] = {}
    for table, width in (("tcp", 4), ("tcp6", 16)):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] != "0A":  # TCP_LISTEN
                continue
            hex_ip, hex_port = cols[1].split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc/net/tcp* stores the address as 32-bit words in host (little) endian.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
            ip = ipaddress.ip_address(raw)
            inode_to_addr[cols[9]] = (str(ip), int(hex_port, 16))
    found = []
    for pid in pids:
        try:
            fds = list((_PROC / str(pid) / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inode_to_addr:
                found.append((pid, *inode_to_addr[target[8:-1]]))
    return found
