"""A start that fails leaves nothing of its own running (unit: stand-in processes, no Java)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from devstack import Stack, StackConfig
from ketenstroom.errors import ServiceStartError


def test_services_started_by_a_failed_up_are_stopped_and_those_running_before_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = Stack(StackConfig(cache_dir=tmp_path, stop_timeout=5))
    sleepers = {
        name: subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for name in "abc"
    }
    services = [
        SimpleNamespace(name=n, kind="s3proxy", pid_file=tmp_path / f"{n}.pid", directory=tmp_path)
        for n in "abc"
    ]
    for svc in services:
        svc.pid_file.write_text(str(sleepers[svc.name].pid))
    monkeypatch.setattr(
        "devstack.stack.owned_pid", lambda pid_file, _d: sleepers["c"].pid if "c." in str(pid_file) else None
    )
    monkeypatch.setattr(stack, "_check_ports", lambda _s: None)
    monkeypatch.setattr(
        stack, "_start", lambda to_start, _say: {s.name: (sleepers[s.name].pid, 0.0) for s in to_start}
    )

    def broker_fails(*_args: Any) -> None:
        raise ServiceStartError("a exited during start-up")

    monkeypatch.setattr(stack, "_wait_healthy", broker_fails)
    try:
        with pytest.raises(ServiceStartError):
            stack._up(services, lambda _m: None)  # type: ignore[arg-type]
        assert sleepers["a"].wait(timeout=10) is not None and sleepers["b"].wait(timeout=10) is not None
        assert not (tmp_path / "a.pid").exists() and not (tmp_path / "b.pid").exists()
        assert sleepers["c"].poll() is None  # running before this call: not ours to stop
    finally:
        for p in sleepers.values():
            p.kill()
            p.wait()
