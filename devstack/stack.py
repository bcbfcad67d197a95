"""The stack: fetch, start what is not running, wait until healthy, report, stop.

State is only on disk (pid files, startup.json), so ``up`` from a test session and ``status``/``down``
from the CLI in another process see the same stack. A stack is the Kafka nodes of its ``nodes``
setting plus the shared registry and s3proxy; ``down`` leaves the shared pair running while the other
stack (single vs cluster3) still has Kafka running, because that stack's users need them too.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from devstack.config import ENV_PREFIX, Endpoints, ServiceStatus, StackConfig
from devstack.fetch import Layout, fetch_all
from devstack.java import find_java
from devstack.monitoring import reload_config
from devstack.process import (
    POLL_INTERVAL,
    child_exit_code,
    file_lock,
    is_alive,
    owned_pid,
    port_in_use,
    port_owner,
    read_pid,
    request_stop,
    spawn,
    tail,
    terminate,
    write_pid,
)
from devstack.services import (
    Service,
    argv_for,
    ensure_compatibility,
    format_kafka,
    health,
    kafka_services,
    monitoring_services,
    registry_url,
    s3_credentials,
    secure_client_env,
    shared_services,
)
from ketenstroom.errors import PortInUseError, ServiceStartError

Progress = Callable[[str], None]


class Stack:
    """One local stack (``single`` or ``cluster3``) described by a :class:`StackConfig`."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.layout = Layout(config.dist_dir)
        #: What the last up() found or did per service, including spawn-to-healthy seconds.
        self.last_report: list[ServiceStatus] = []
        self._java: dict[int, Path] = {}

    # -- public API ---------------------------------------------------------------------------------

    def services(self) -> list[Service]:
        """Kafka nodes of this stack, then the shared registry and s3proxy (then Prometheus and
        Alertmanager when the config enables monitoring)."""
        monitoring = monitoring_services(self.config) if self.config.monitoring.enabled else []
        return kafka_services(self.config) + shared_services(self.config) + monitoring

    def fetch(self, progress: Progress | None = None) -> dict[str, float]:
        """Download whatever is not in the cache yet; seconds per distribution fetched."""
        return fetch_all(self.config, progress)

    def kafka_tool(self, name: str, args: list[str], progress: Progress | None = None) -> list[str]:
        """The command line that runs Kafka's tool ``name`` against this stack (fetches if needed)."""
        from devstack.tools import kafka_tool_argv, main_class

        main_class(name)  # an unknown name fails before any download
        self.fetch(progress)
        runtime = find_java(
            min_major=17,
            explicit_home=self.config.java_home,
            explicit_env=ENV_PREFIX + "JAVA_HOME",
            system_java_home=self.config.system_java_home,
            prefer_newest=False,
        )
        return kafka_tool_argv(self.config, runtime.executable, name, args)

    def endpoints(self) -> Endpoints:
        """Where clients find the stack (does not start anything; may create the S3 credentials)."""
        access, secret = s3_credentials(self.config)
        return Endpoints(
            kafka_bootstrap=self.config.kafka_bootstrap,
            registry_url=registry_url(self.config),
            s3_endpoint=f"http://127.0.0.1:{self.config.s3_port_effective}",
            s3_access_key=access,
            s3_secret_key=secret,
        )

    def up(self, progress: Progress | None = None) -> Endpoints:
        """Fetch if needed, start every service not already running, wait until all are healthy.

        Idempotent: services this stack already runs are left alone (same pids). Raises
        PortInUseError before starting anything if a port is taken by a foreign process, and
        ServiceStartError if a service exits or misses its deadline (``start_timeout``).
        """
        say = progress or (lambda _msg: None)
        self.fetch(say)
        self._up(self.services(), say)
        return self.endpoints()

    def up_monitoring(self, progress: Progress | None = None) -> list[ServiceStatus]:
        """Start only this stack's Prometheus and Alertmanager (the config's ``monitoring``), next to
        a stack someone else started; returns their status once both are ready."""
        self._up(monitoring_services(self.config), progress or (lambda _msg: None))
        return self.last_report

    def _up(self, services: list[Service], say: Progress) -> None:
        with file_lock(self.config.cache_dir / "run" / ".lock"):
            running: dict[str, int] = {}
            to_start: list[Service] = []
            for svc in services:
                pid = owned_pid(svc.pid_file, svc.directory)
                if pid is None:
                    svc.pid_file.unlink(missing_ok=True)  # stale or foreign: not ours to keep
                    to_start.append(svc)
                else:
                    running[svc.name] = pid
                    if svc.kind in ("prometheus", "alertmanager"):  # pick up changed targets or rules
                        reload_config(self.config, svc, say)
            self._check_ports(to_start)
            started = self._start(to_start, say)
            try:
                self.last_report = self._wait_healthy(services, running, started, say)
            except ServiceStartError:
                # a failed start leaves nothing behind: stop what this call started (a CI run left the
                # secured stack's registry and s3proxy running after its broker failed to bind);
                # services that were running before stay
                for name, (pid, _since) in started.items():
                    if is_alive(pid):
                        terminate(pid, self.config.stop_timeout)
                    next(svc for svc in to_start if svc.name == name).pid_file.unlink(missing_ok=True)
                raise

    def client_env(self, principal: str) -> dict[str, str]:
        """``KETENSTROOM_*`` variables for a component running as ``principal`` on the secured stack:
        endpoints, the CA file and the principal's password *file* (never the password itself)."""
        env = self.endpoints().as_env()
        if self.config.secure:
            env |= secure_client_env(self.config, principal)
            env["KETENSTROOM_KAFKA_BOOTSTRAP_SERVERS"] = self.config.kafka_bootstrap
        return env

    def status(self) -> list[ServiceStatus]:
        """Every service of this stack as it is now (pid from the pid file, health asked live)."""
        result: list[ServiceStatus] = []
        shown = self.services()
        if not self.config.monitoring.enabled:  # started by an earlier `up --with-monitoring`
            shown += [s for s in monitoring_services(self.config) if owned_pid(s.pid_file, s.directory)]
        for svc in shown:
            pid = owned_pid(svc.pid_file, svc.directory)
            seconds = self._startup_seconds(svc, pid)
            if pid is None:
                stale = read_pid(svc.pid_file)
                detail = "not running" + (f" (stale pid file names pid {stale})" if stale else "")
                result.append(ServiceStatus(svc.name, svc.ports, None, False, svc.log_path, detail))
                continue
            ok, detail = health(self.config, svc)
            if seconds is not None:
                detail += f"; healthy in {seconds:.1f} s after start"
            result.append(ServiceStatus(svc.name, svc.ports, pid, ok, svc.log_path, detail, seconds))
        return result

    def down(self) -> list[str]:
        """Stop the processes this stack started; returns the names of those stopped.

        Only a pid whose command line carries our marker for that service directory is signalled.
        The shared registry/s3proxy stay up while the other stack's Kafka is still running.
        """
        targets = monitoring_services(self.config) + kafka_services(self.config)
        if self.config.secure or not self._other_stack_running():
            targets += shared_services(self.config)
        return self._stop(targets)

    def down_monitoring(self) -> list[str]:
        """Stop only this stack's Prometheus and Alertmanager (Kafka and the rest keep running)."""
        return self._stop(monitoring_services(self.config))

    def _stop(self, targets: list[Service]) -> list[str]:
        with file_lock(self.config.cache_dir / "run" / ".lock"):
            pids = {svc.name: owned_pid(svc.pid_file, svc.directory) for svc in targets}
            for pid in pids.values():  # signal all first, so a cluster shuts down together
                if pid is not None:
                    request_stop(pid)
            stopped: list[str] = []
            for svc in targets:
                pid = pids[svc.name]
                if pid is not None:
                    if not terminate(pid, self.config.stop_timeout):
                        raise ServiceStartError(
                            f"{svc.name} (pid {pid}) survived SIGTERM and SIGKILL; log: {svc.log_path}"
                        )
                    stopped.append(svc.name)
                svc.pid_file.unlink(missing_ok=True)
                svc.startup_file.unlink(missing_ok=True)
        return stopped

    def stop_service(self, name: str) -> bool:
        """Stop one service of this stack (``kafka-1``, ``apicurio``, ``s3proxy``), for outage tests and
        rehearsals; ``up()`` starts it again. False if it was not running. Its data stays."""
        found = {svc.name: svc for svc in self.services()}
        svc = found.get(name)
        if svc is None:
            raise ServiceStartError(f"no service {name!r} in this stack; expected one of {sorted(found)}")
        with file_lock(self.config.cache_dir / "run" / ".lock"):
            pid = owned_pid(svc.pid_file, svc.directory)
            if pid is not None and not terminate(pid, self.config.stop_timeout):
                raise ServiceStartError(
                    f"{svc.name} (pid {pid}) survived SIGTERM and SIGKILL; log: {svc.log_path}"
                )
            svc.pid_file.unlink(missing_ok=True)
            svc.startup_file.unlink(missing_ok=True)
        return pid is not None

    def wipe(self) -> list[str]:
        """down(), then delete this stack's data (and the shared data if no other stack has any).

        Downloads are kept. Shared registry data is kept while the other stack has a run directory,
        because its Kafka topics hold schema ids that point into that registry.
        """
        stopped = self.down()
        shutil.rmtree(self.config.run_dir, ignore_errors=True)
        if self.config.secure:
            return stopped
        other = self._other_config()
        if not other.run_dir.exists() and not self._other_stack_running():
            shutil.rmtree(self.config.shared_run_dir, ignore_errors=True)
        return stopped

    # -- internals ----------------------------------------------------------------------------------

    def _other_config(self) -> StackConfig:
        return dataclasses.replace(self.config, nodes=3 if self.config.nodes == 1 else 1)

    def _other_stack_running(self) -> bool:
        return any(
            owned_pid(svc.pid_file, svc.directory) is not None for svc in kafka_services(self._other_config())
        )

    def _java_for(self, svc: Service) -> Path:
        if svc.min_java not in self._java:
            newest = svc.min_java >= 21
            runtime = find_java(
                min_major=svc.min_java,
                explicit_home=self.config.java21_home if newest else self.config.java_home,
                explicit_env=ENV_PREFIX + ("JAVA21_HOME" if newest else "JAVA_HOME"),
                system_java_home=self.config.system_java_home,
                prefer_newest=newest,
            )
            self._java[svc.min_java] = runtime.executable
        return self._java[svc.min_java]

    def _check_ports(self, to_start: list[Service]) -> None:
        for svc in to_start:
            for port in svc.ports:
                if port_in_use(port):
                    owner = port_owner(port) or "owner unknown (try `ss -ltnp`)"
                    raise PortInUseError(
                        f"cannot start {svc.name}: 127.0.0.1:{port} is already in use by {owner}; "
                        f"expected it free (or held by a process this stack started, per {svc.pid_file}). "
                        f"Stop that process or choose other ports ({ENV_PREFIX}*_PORT)."
                    )

    def _start(self, to_start: list[Service], say: Progress) -> dict[str, tuple[int, float]]:
        """Render configs, format new Kafka storage, spawn; returns name -> (pid, monotonic start)."""
        argvs = {
            svc.name: argv_for(self.config, svc, self._java_for(svc) if svc.min_java else Path(), self.layout)
            for svc in to_start
        }
        kafka = [svc for svc in to_start if svc.kind == "kafka"]
        if kafka:
            format_kafka(self.config, kafka, self._java_for(kafka[0]), self.layout)
        started: dict[str, tuple[int, float]] = {}
        for svc in to_start:
            svc.startup_file.unlink(missing_ok=True)
            pid = spawn(argvs[svc.name], cwd=svc.directory, log_path=svc.log_path)
            write_pid(svc.pid_file, pid)
            started[svc.name] = (pid, time.monotonic())
            say(f"started {svc.name} (pid {pid}), log {svc.log_path}")
        return started

    def _wait_healthy(
        self,
        services: list[Service],
        running: dict[str, int],
        started: dict[str, tuple[int, float]],
        say: Progress,
    ) -> list[ServiceStatus]:
        """Wait for every service in parallel (one poller thread each, so a slow Kafka metadata
        request does not delay noticing that s3proxy is up); re-raise the first failure."""
        t0 = time.monotonic()
        abort = threading.Event()
        jobs: dict[str, Future[ServiceStatus | None]] = {}
        with ThreadPoolExecutor(max_workers=len(services), thread_name_prefix="infra-wait") as pool:
            for svc in services:
                pid, since = started.get(svc.name, (running.get(svc.name, 0), t0))
                jobs[svc.name] = pool.submit(
                    self._await, svc, pid, since, fresh=svc.name in started, abort=abort, say=say
                )
            try:
                results = [jobs[svc.name].result() for svc in services]
            except BaseException:
                abort.set()
                raise
        return [r for r in results if r is not None]

    def _await(
        self, svc: Service, pid: int, since: float, *, fresh: bool, abort: threading.Event, say: Progress
    ) -> ServiceStatus | None:
        """Poll one service until it is healthy, exits, or misses its deadline."""
        while not abort.is_set():
            if not is_alive(pid) or child_exit_code(pid) is not None:
                svc.pid_file.unlink(missing_ok=True)
                raise ServiceStartError(
                    f"{svc.name} (pid {pid}) exited during start-up (code {child_exit_code(pid)}); "
                    f"expected it to keep running and become healthy. "
                    f"Last lines of {svc.log_path}:\n{tail(svc.log_path)}"
                )
            ok, detail = health(self.config, svc)
            elapsed = time.monotonic() - since
            if ok:
                if svc.kind == "apicurio":
                    ensure_compatibility(self.config)
                if fresh:
                    svc.startup_file.write_text(json.dumps({"pid": pid, "seconds": round(elapsed, 2)}))
                    say(f"{svc.name} healthy in {elapsed:.1f} s")
                seconds = elapsed if fresh else self._startup_seconds(svc, pid)
                note = f"healthy in {elapsed:.1f} s" if fresh else "already running"
                detail = f"{detail}; {note}"
                return ServiceStatus(svc.name, svc.ports, pid, True, svc.log_path, detail, seconds)
            if elapsed > self.config.start_timeout:
                terminate(pid, self.config.stop_timeout)
                svc.pid_file.unlink(missing_ok=True)
                raise ServiceStartError(
                    f"{svc.name} (pid {pid}) not healthy after {elapsed:.0f} s ({detail}); expected "
                    f"healthy within {self.config.start_timeout:.0f} s ({ENV_PREFIX}START_TIMEOUT); "
                    f"stopped it. Last lines of {svc.log_path}:\n{tail(svc.log_path)}"
                )
            time.sleep(POLL_INTERVAL)
        return None

    @staticmethod
    def _startup_seconds(svc: Service, pid: int | None) -> float | None:
        """Seconds-to-healthy recorded by the up() that started ``pid``, if it is that same process."""
        try:
            recorded = json.loads(svc.startup_file.read_text())
        except (OSError, ValueError):
            return None
        if pid is None or recorded.get("pid") != pid:
            return None
        return float(recorded["seconds"])
