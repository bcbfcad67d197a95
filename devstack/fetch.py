"""Download Kafka, Apicurio Registry, s3proxy and the JMX exporter agent from Maven Central with Maven.

Maven is used (not ad-hoc HTTP) because it already knows the user's proxy and mirror settings
(``~/.m2/settings.xml``) and resolves Kafka's classpath from the same place the project's other
JVM tooling does. Each distribution lives in ``<cache>/dist/<name>-<version>`` and is complete only
when its ``.complete`` marker exists; the marker is written last, so an interrupted download is
thrown away and redone instead of half-used.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template

from devstack.config import APICURIO_VERSION, KAFKA_VERSION, S3PROXY_VERSION, StackConfig
from devstack.process import file_lock, tail
from ketenstroom.errors import FetchError

LOG4J_VERSION = "2.25.5"
#: The Prometheus JMX exporter java agent every broker runs with (1.0.1 resolves on Central here).
JMX_EXPORTER_VERSION = "1.0.1"
MARKER = ".complete"
FETCH_LOG = "fetch.log"
_HINT = "Maven Central unreachable? check network/proxy, or set KETENSTROOM_CACHE_DIR to a pre-filled cache"

Progress = Callable[[str], None]


def resource_text(name: str) -> str:
    """A template shipped in ``devstack/resources``."""
    return resources.files("devstack").joinpath("resources", name).read_text(encoding="utf-8")


def render_kafka_pom() -> str:
    """The pom whose runtime dependency closure is a working Kafka broker classpath."""
    return Template(resource_text("kafka-pom.xml")).substitute(
        kafka_version=KAFKA_VERSION, log4j_version=LOG4J_VERSION
    )


@dataclass(frozen=True)
class Layout:
    """Where each downloaded distribution lives under ``<cache>/dist``."""

    dist_dir: Path

    @property
    def kafka_dir(self) -> Path:
        return self.dist_dir / f"kafka-{KAFKA_VERSION}"

    @property
    def kafka_lib(self) -> Path:
        """Directory of jars; the classpath is ``<kafka_lib>/*``."""
        return self.kafka_dir / "lib"

    @property
    def kafka_tools_jar(self) -> Path:
        """Kafka's command-line tools (``kafka-tools``); caches fetched before they were added lack it."""
        return self.kafka_lib / f"kafka-tools-{KAFKA_VERSION}.jar"

    @property
    def apicurio_dir(self) -> Path:
        """The extracted Quarkus app: ``quarkus-run.jar``, ``lib/``, ``app/``, ``quarkus/``."""
        return self.dist_dir / f"apicurio-{APICURIO_VERSION}"

    @property
    def apicurio_jar(self) -> Path:
        return self.apicurio_dir / "quarkus-run.jar"

    @property
    def s3proxy_dir(self) -> Path:
        return self.dist_dir / f"s3proxy-{S3PROXY_VERSION}"

    @property
    def s3proxy_jar(self) -> Path:
        return self.s3proxy_dir / f"s3proxy-{S3PROXY_VERSION}-jar-with-dependencies.jar"

    @property
    def jmx_exporter_dir(self) -> Path:
        return self.dist_dir / f"jmx-exporter-{JMX_EXPORTER_VERSION}"

    @property
    def jmx_exporter_jar(self) -> Path:
        return self.jmx_exporter_dir / f"jmx_prometheus_javaagent-{JMX_EXPORTER_VERSION}.jar"

    def all_dirs(self) -> dict[str, Path]:
        return {
            "kafka": self.kafka_dir,
            "apicurio": self.apicurio_dir,
            "s3proxy": self.s3proxy_dir,
            "jmx-exporter": self.jmx_exporter_dir,
        }

    def is_complete(self, name: str) -> bool:
        if name == "kafka" and not self.kafka_tools_jar.is_file():
            return False  # a broker-only download from before the tools were fetched: add them
        return (self.all_dirs()[name] / MARKER).is_file()


def _mvn(config: StackConfig, args: list[str], cwd: Path, what: str) -> None:
    """Run Maven in batch mode; on failure raise FetchError with its output tail and log path."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FetchError(
            f"cannot download {what}: `mvn` (Apache Maven 3.8+) is not on PATH; install it "
            "(e.g. apt-get install maven) or set KETENSTROOM_CACHE_DIR to a pre-filled cache"
        )
    argv = [mvn, "-B", "-q", *args]
    if config.maven_repo_local is not None:
        argv.append(f"-Dmaven.repo.local={config.maven_repo_local}")
    log_path = cwd / FETCH_LOG
    with log_path.open("ab") as log:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        done = subprocess.run(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise FetchError(
            f"downloading {what} failed: mvn exited with {done.returncode}; expected exit 0. "
            f"{_HINT}. Last lines of {log_path}:\n{tail(log_path)}"
        )


def _fresh(directory: Path) -> None:
    """Discard a partial download: no marker means we cannot trust anything in there."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def fetch_kafka(config: StackConfig, layout: Layout) -> None:
    """Resolve ``kafka_2.13``, ``kafka-tools`` and the log4j2 binding into ``<kafka_dir>/lib`` (45 MB).

    A complete broker-only download (from before the tools were fetched) is topped up in place, not
    thrown away: ``copy-dependencies`` keeps the jars already there and adds the missing ones, so a
    broker running from that directory keeps its classpath.
    """
    if not (layout.kafka_dir / MARKER).is_file():
        _fresh(layout.kafka_dir)
    (layout.kafka_dir / "pom.xml").write_text(render_kafka_pom(), encoding="utf-8")
    _mvn(
        config,
        [
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={layout.kafka_lib}",
        ],
        layout.kafka_dir,
        f"Kafka {KAFKA_VERSION}",
    )
    if not any(layout.kafka_lib.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
        raise FetchError(
            f"mvn succeeded but {layout.kafka_lib} has no kafka_2.13-{KAFKA_VERSION}.jar; "
            f"see {layout.kafka_dir / FETCH_LOG}"
        )
    if not layout.kafka_tools_jar.is_file():
        raise FetchError(
            f"mvn succeeded but {layout.kafka_tools_jar} is missing; see {layout.kafka_dir / FETCH_LOG}"
        )


def fetch_apicurio(config: StackConfig, layout: Layout) -> None:
    """Download the Apicurio Registry Quarkus app tarball (about 159 MB) and unpack it in place."""
    _fresh(layout.apicurio_dir)
    artifact = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
    _mvn(
        config,
        ["dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={layout.apicurio_dir}"],
        layout.apicurio_dir,
        f"Apicurio Registry {APICURIO_VERSION}",
    )
    tarball = layout.apicurio_dir / f"apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
    try:
        with tarfile.open(tarball) as archive:
            archive.extractall(layout.apicurio_dir, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise FetchError(f"cannot unpack {tarball}: {exc}; delete {layout.apicurio_dir} and retry") from exc
    tarball.unlink()  # 150 MB we no longer need: the marker, not the tarball, says we are complete
    if not layout.apicurio_jar.is_file():
        raise FetchError(f"{tarball.name} unpacked but has no quarkus-run.jar at its root")


def fetch_s3proxy(config: StackConfig, layout: Layout) -> None:
    """Download s3proxy's self-contained jar (about 98 MB)."""
    artifact = f"org.gaul:s3proxy:{S3PROXY_VERSION}:jar:jar-with-dependencies"
    _fetch_jar(config, artifact, layout.s3proxy_dir, layout.s3proxy_jar, f"s3proxy {S3PROXY_VERSION}")


def fetch_jmx_exporter(config: StackConfig, layout: Layout) -> None:
    """Download the Prometheus JMX exporter java agent (about 3 MB): the brokers' ``/metrics``."""
    artifact = f"io.prometheus.jmx:jmx_prometheus_javaagent:{JMX_EXPORTER_VERSION}"
    label = f"the Prometheus JMX exporter {JMX_EXPORTER_VERSION}"
    _fetch_jar(config, artifact, layout.jmx_exporter_dir, layout.jmx_exporter_jar, label)


def _fetch_jar(config: StackConfig, artifact: str, directory: Path, jar: Path, label: str) -> None:
    """One Maven Central jar copied into a fresh ``directory``; ``jar`` is where it must land."""
    _fresh(directory)
    _mvn(
        config,
        ["dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={directory}"],
        directory,
        label,
    )
    if not jar.is_file():
        raise FetchError(f"mvn succeeded but {jar} is missing")


_FETCHERS: dict[str, Callable[[StackConfig, Layout], None]] = {
    "kafka": fetch_kafka,
    "apicurio": fetch_apicurio,
    "s3proxy": fetch_s3proxy,
    "jmx-exporter": fetch_jmx_exporter,
}


def fetch_all(config: StackConfig, progress: Progress | None = None) -> dict[str, float]:
    """Download whatever is missing; returns seconds spent per distribution actually fetched."""
    layout = Layout(config.dist_dir)
    spent: dict[str, float] = {}
    with file_lock(config.dist_dir / ".lock"):
        for name, fetcher in _FETCHERS.items():
            if layout.is_complete(name):
                continue
            if progress:
                progress(f"fetching {name} via Maven into {layout.all_dirs()[name]} ...")
            started = time.monotonic()
            fetcher(config, layout)
            (layout.all_dirs()[name] / MARKER).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z\n"))
            spent[name] = time.monotonic() - started
            if progress:
                progress(f"fetched {name} in {spent[name]:.1f} s")
    return spent
