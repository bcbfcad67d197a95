"""Schema evolution checks: every schema must read data written with every earlier committed version.

The check is real Avro schema resolution, not a rule list: random records are generated with the
old schema (fastavro), written, and read back with the new schema as reader. Earlier versions come
from git history: the whole ``schemas/`` tree at each commit that touched the record or a shared
type, so a change in a shared named type is checked for every record that uses it.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import fastavro
from fastavro.utils import generate_many

from ketenstroom.contract.schemas import EventSchema, SchemaSet, load_schemas
from ketenstroom.errors import ConfigurationError


@dataclass(frozen=True)
class Incompatibility:
    record: str
    old_commit: str
    error: str

    def __str__(self) -> str:
        return (
            f"{self.record}: cannot read data written by the version at {self.old_commit[:10]}: {self.error}"
        )


def resolves(old: EventSchema, new: EventSchema, samples: int = 64) -> str | None:
    """None if ``new`` reads ``samples`` random records written with ``old``, else the error."""
    for record in generate_many(old.parsed, samples):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, old.parsed, record)
        buf.seek(0)
        try:
            fastavro.schemaless_reader(buf, old.parsed, new.parsed)
        except Exception as exc:  # SchemaResolutionError and friends
            return f"{type(exc).__name__}: {exc}"
    return None


def _git(repo: Path, *args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ConfigurationError(f"git {' '.join(args)} failed in {repo}: {exc}") from exc


def schema_commits(repo: Path, schema_dir: str = "schemas") -> list[str]:
    """Commits that changed anything under ``schema_dir``, oldest first."""
    return _git(repo, "log", "--reverse", "--format=%H", "--", schema_dir).split()


def schemas_at(repo: Path, commit: str, schema_dir: str = "schemas") -> SchemaSet:
    """The contract as it was at ``commit``."""
    files = _git(repo, "ls-tree", "-r", "--name-only", commit, "--", schema_dir).split()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in files:
            if not name.endswith(".avsc"):
                continue
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_git(repo, "show", f"{commit}:{name}"), encoding="utf-8")
        return load_schemas(root / schema_dir)


def check_history(
    current: SchemaSet, repo: Path, schema_dir: str = "schemas", samples: int = 64
) -> list[Incompatibility]:
    """Check every current record against each committed version of it (BACKWARD_TRANSITIVE)."""
    problems: list[Incompatibility] = []
    seen: dict[str, set[str]] = {}
    for commit in schema_commits(repo, schema_dir):
        for old in schemas_at(repo, commit, schema_dir):
            if old.fullname not in current.events:
                continue  # a removed or renamed record is a new subject, not an evolution
            canonical = old.text
            if canonical in seen.setdefault(old.fullname, set()):
                continue  # same version as at an earlier commit
            seen[old.fullname].add(canonical)
            error = resolves(old, current[old.fullname], samples=samples)
            if error is not None:
                problems.append(Incompatibility(old.fullname, commit, error))
    return problems
