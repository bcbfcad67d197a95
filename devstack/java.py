"""Find a Java runtime of the version a service needs.

Kafka 4.x and s3proxy run on Java 17; Apicurio Registry 3.x needs Java 21+. Machines often have
several JDKs with the default ``java`` being the oldest, so we look at every candidate and say what
we found when nothing fits, instead of failing later with an ``UnsupportedClassVersionError``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ketenstroom.errors import JavaNotFoundError

#: Where distribution packages (Debian/Ubuntu, Adoptium's apt repo, RPM) install JDKs.
JVM_SCAN_DIR = Path("/usr/lib/jvm")

_VERSION_RE = re.compile(r'version "(?P<v>[0-9][^"]*)"')

_FIX_HINT = (
    "install a JDK (e.g. `apt-get install temurin-25-jdk` from Adoptium, or openjdk-21-jdk) "
    "or point {env} at one (the directory that contains bin/java)"
)


@dataclass(frozen=True, order=True)
class JavaRuntime:
    """A java executable and the version it reported."""

    major: int
    version: str
    executable: Path


def parse_java_version(output: str) -> tuple[int, str] | None:
    """(major, full version) from ``java -version`` output, or ``None`` if it is not recognisable.

    Handles the modern ``"17.0.15"`` / ``"25.0.1"`` / ``"21"`` forms and the legacy ``"1.8.0_392"``.
    """
    match = _VERSION_RE.search(output)
    if match is None:
        return None
    version = match.group("v")
    parts = re.split(r"[._+-]", version)
    try:
        major = int(parts[0])
        if major == 1 and len(parts) > 1:
            major = int(parts[1])
    except ValueError:
        return None
    return major, version


def probe_java(executable: Path) -> JavaRuntime | None:
    """Run ``<executable> -version`` (it prints to stderr) and parse it; ``None`` if it is not a Java."""
    try:
        done = subprocess.run(
            [str(executable), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    parsed = parse_java_version(done.stderr + done.stdout)
    if parsed is None:
        return None
    return JavaRuntime(major=parsed[0], version=parsed[1], executable=executable)


def _home_java(home: Path) -> Path:
    return home / "bin" / "java"


def candidate_executables(system_java_home: Path | None, scan_dir: Path = JVM_SCAN_DIR) -> list[Path]:
    """``$JAVA_HOME/bin/java``, ``java`` on PATH, then every ``<scan_dir>/*/bin/java``, de-duplicated."""
    found: list[Path] = []
    if system_java_home is not None:
        found.append(_home_java(system_java_home))
    on_path = shutil.which("java")
    if on_path:
        found.append(Path(on_path))
    if scan_dir.is_dir():
        found.extend(sorted(p for p in scan_dir.glob("*/bin/java") if p.is_file()))
    seen: set[Path] = set()
    unique: list[Path] = []
    for path in found:
        key = path.resolve() if path.exists() else path
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def choose_java(
    runtimes: Iterable[JavaRuntime], min_major: int, *, prefer_newest: bool
) -> JavaRuntime | None:
    """The first (or, with ``prefer_newest``, the newest) runtime of at least ``min_major``."""
    fitting = [r for r in runtimes if r.major >= min_major]
    if not fitting:
        return None
    return max(fitting, key=lambda r: r.major) if prefer_newest else fitting[0]


def find_java(
    *,
    min_major: int,
    explicit_home: Path | None,
    explicit_env: str,
    system_java_home: Path | None,
    prefer_newest: bool,
    scan_dir: Path = JVM_SCAN_DIR,
) -> JavaRuntime:
    """A Java of at least ``min_major``.

    An explicit home (``explicit_env``) is used as given and never silently replaced: if it is too
    old or broken that is an error, because the user asked for it. Otherwise candidates are tried in
    order ``$JAVA_HOME``, PATH, ``/usr/lib/jvm/*``.
    """
    if explicit_home is not None:
        runtime = probe_java(_home_java(explicit_home))
        if runtime is None:
            raise JavaNotFoundError(
                f"{explicit_env}={explicit_home} but {_home_java(explicit_home)} is not a working java; "
                f"expected a JDK/JRE home with bin/java of version >= {min_major}"
            )
        if runtime.major < min_major:
            raise JavaNotFoundError(
                f"{explicit_env}={explicit_home} is Java {runtime.version}; this service needs Java "
                f">= {min_major}: {_FIX_HINT.format(env=explicit_env)}"
            )
        return runtime
    runtimes = [r for r in (probe_java(p) for p in candidate_executables(system_java_home, scan_dir)) if r]
    chosen = choose_java(runtimes, min_major, prefer_newest=prefer_newest)
    if chosen is None:
        seen = ", ".join(f"{r.executable} ({r.version})" for r in runtimes) or "no java at all"
        raise JavaNotFoundError(
            f"no Java >= {min_major} found (looked at $JAVA_HOME, PATH and {scan_dir}/*; found: {seen}); "
            + _FIX_HINT.format(env=explicit_env)
        )
    return chosen
