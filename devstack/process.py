"""Processes we start, and ports they need: pid files, ownership markers, port owners.

The services must outlive the Python process that started them (a CLI exits right after ``up``), so
all bookkeeping is on disk: a pid file per service, and a marker argument on the java command line
(``-Ddevstack.service=<service dir>``). down() only signals a pid whose command line still
carries our marker, so a recycled pid that now belongs to someone else is never killed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

MARKER_PROPERTY = "devstack.service"
POLL_INTERVAL = 0.2

#: Popen handles of children started by this Python process: kept so they can be reaped (no zombies
#: while we live) and so Python does not warn about collecting a handle of a running child.
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


def marker_arg(service_dir: Path) -> str:
    """The JVM argument that tags a process as the service living in ``service_dir``."""
    return f"-D{MARKER_PROPERTY}={service_dir}"


# -- pid files --------------------------------------------------------------------------------------


def read_pid(pid_file: Path) -> int | None:
    """The pid in ``pid_file``, or ``None`` if it is missing or garbage."""
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def write_pid(pid_file: Path, pid: int) -> None:
    """Write atomically, so a concurrent status() never reads half a pid."""
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(pid_file)


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (a zombie's kill(0) still succeeds)."""
    child = _SPAWNED.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no procfs: fall back to signal 0
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid`` (empty if unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def owned_pid(pid_file: Path, service_dir: Path) -> int | None:
    """The pid from ``pid_file`` if that process is alive and carries our marker, else ``None``."""
    pid = read_pid(pid_file)
    if pid is None or not is_alive(pid):
        return None
    args = cmdline(pid)
    # a JVM carries our marker; Prometheus and Alertmanager (no -D) their config file in service_dir
    ours = marker_arg(service_dir) in args or any(a.startswith(f"--config.file={service_dir}/") for a in args)
    return pid if ours else None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so two processes (CLI and a test run) never fetch or start twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- starting and stopping --------------------------------------------------------------------------


def spawn(argv: Sequence[str], *, cwd: Path, log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in its own session with stdout+stderr to ``log_path``; returns the pid.

    The previous log is kept as ``<log>.1`` so a crash before a restart stays readable.
    """
    if log_path.exists():
        log_path.replace(log_path.with_name(log_path.name + ".1"))
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
    _SPAWNED[proc.pid] = proc
    return proc.pid


def terminate(pid: int, timeout: float, *, sleep: Callable[[float], None] = time.sleep) -> bool:
    """SIGTERM ``pid``'s process group, wait up to ``timeout`` s, then SIGKILL. True if it is gone."""
    _signal(pid, signal.SIGTERM)
    if wait_gone(pid, timeout, sleep=sleep):
        return True
    _signal(pid, signal.SIGKILL)
    return wait_gone(pid, 10.0, sleep=sleep)


def request_stop(pid: int) -> None:
    """Send SIGTERM without waiting, so several services can shut down concurrently."""
    _signal(pid, signal.SIGTERM)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:  # we started it as a session leader: take its children along
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def wait_gone(pid: int, timeout: float, *, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Poll until ``pid`` is gone (reaping it if it is our child); False on deadline."""
    deadline = time.monotonic() + timeout
    while True:
        child = _SPAWNED.get(pid)
        if child is not None and child.poll() is not None:
            _SPAWNED.pop(pid, None)
            return True
        if not is_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        sleep(POLL_INTERVAL)


def child_exit_code(pid: int) -> int | None:
    """Exit code if ``pid`` is a child of ours that has exited, else ``None``."""
    child = _SPAWNED.get(pid)
    return None if child is None else child.poll()


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:])


# -- ports ------------------------------------------------------------------------------------------


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something listens on ``host:port`` (or the wildcard address) so we could not bind it.

    SO_REUSEADDR makes TIME_WAIT leftovers of a previous run not count, as they would not stop the
    JVM either (Java server sockets set it too).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def _listen_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def port_owner(port: int) -> str | None:
    """'pid N: <cmdline>' of the process listening on ``port``, if procfs lets us see it."""
    inodes = _listen_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            fds = list((proc_dir / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = str(fd.readlink())
            except OSError:
                continue
            if target in wanted:
                pid = int(proc_dir.name)
                args = " ".join(cmdline(pid))
                return f"pid {pid}: {args[:200]}"
    return "a process this user cannot inspect"
