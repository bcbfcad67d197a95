"""Versioned terminology tables: partner code system + code -> uniform concepts, chosen by event time.

Tables are data files in ``terminology/`` listed in ``manifest.toml``; they are validated at start-up
(targets that ``concepts.csv`` does not define, overlapping or gapped validity for one source code and
target, empty columns, valid_to before valid_from) and a bad table stops the processor with an error
naming file, line and problem. A code without a mapping
valid at the event time is never guessed: the caller dead-letters the event.
"""

from __future__ import annotations

import csv
import itertools
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ketenstroom.errors import TerminologyError, UnknownCodeError

_COLUMNS = (
    "source_code_system",
    "source_code",
    "vocabulary",
    "target_code",
    "target_label",
    "counting_unit",
    "valid_from",
    "valid_to",
)


@dataclass(frozen=True)
class Mapping:
    vocabulary: str
    code: str
    label: str
    counting_unit: str
    source_code_system: str
    source_code: str
    valid_from: date
    valid_to: date | None  # exclusive; None = open-ended

    def valid_on(self, day: date) -> bool:
        return self.valid_from <= day and (self.valid_to is None or day < self.valid_to)

    def concept(self) -> dict[str, str]:
        return {
            "vocabulary": self.vocabulary,
            "code": self.code,
            "label": self.label,
            "counting_unit": self.counting_unit,
            "source_code_system": self.source_code_system,
            "source_code": self.source_code,
        }


@dataclass(frozen=True)
class Terminology:
    version: str
    _index: dict[tuple[str, str], tuple[Mapping, ...]]

    def lookup(self, code_system: str, code: str, code_system_version: str, on: date) -> list[dict[str, str]]:
        """Concepts for a code on a day; UnknownCodeError names code, code system and version."""
        found = [m.concept() for m in self._index.get((code_system, code), ()) if m.valid_on(on)]
        if not found:
            raise UnknownCodeError(
                f"code {code!r} of code system {code_system} (version {code_system_version}) has no mapping "
                f"valid on {on.isoformat()} in terminology {self.version}; add it to the table and replay"
            )
        return found

    def mappings(self, code_system: str, code: str) -> tuple[Mapping, ...]:
        """Every mapping of a code, whatever its validity (``lookup`` keeps those valid on a day)."""
        return self._index.get((code_system, code), ())

    def __len__(self) -> int:
        return sum(len(v) for v in self._index.values())

    @property
    def code_systems(self) -> frozenset[str]:
        """Every partner code system the tables map from."""
        return frozenset(system for system, _ in self._index)


def _date(value: str, where: str, column: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise TerminologyError(f"{where}: {column} {value!r} is not an ISO date (jjjj-mm-dd)") from None


def _concepts(path: Path) -> set[tuple[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise TerminologyError(f"{path}: cannot read the concept list: {exc.strerror}") from exc
    known = {(r["vocabulary"], r["code"]) for r in rows}
    for line, row in enumerate(rows, start=2):
        if row.get("parent") and (row["vocabulary"], row["parent"]) not in known:
            raise TerminologyError(f"{path}:{line}: parent {row['parent']!r} of {row['code']} is not defined")
    return known


def load_terminology(directory: Path) -> Terminology:
    manifest_path = directory / "manifest.toml"
    try:
        manifest = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
        version = str(manifest["version"])
        files = [str(t["file"]) for t in manifest["tables"]]
        concepts = _concepts(directory / str(manifest["concepts"]))
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise TerminologyError(f"{manifest_path}: cannot read terminology manifest: {exc!r}") from exc
    index: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for name in files:
        path = directory / name
        try:
            with path.open(encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                if tuple(reader.fieldnames or ()) != _COLUMNS:
                    raise TerminologyError(f"{path}: columns must be {', '.join(_COLUMNS)}")
                for line, row in enumerate(reader, start=2):
                    where = f"{path}:{line}"
                    empty = [c for c in _COLUMNS[:-1] if not (row.get(c) or "").strip()]
                    if empty:
                        raise TerminologyError(f"{where}: empty {', '.join(empty)}")
                    valid_to = _date(row["valid_to"], where, "valid_to") if row["valid_to"] else None
                    mapping = Mapping(
                        vocabulary=row["vocabulary"],
                        code=row["target_code"],
                        label=row["target_label"],
                        counting_unit=row["counting_unit"],
                        source_code_system=row["source_code_system"],
                        source_code=row["source_code"],
                        valid_from=_date(row["valid_from"], where, "valid_from"),
                        valid_to=valid_to,
                    )
                    if (mapping.vocabulary, mapping.code) not in concepts:
                        raise TerminologyError(
                            f"{where}: target {mapping.vocabulary} {mapping.code!r} is not "
                            "defined in the concept list"
                        )
                    if valid_to is not None and valid_to <= mapping.valid_from:
                        raise TerminologyError(f"{where}: valid_to {valid_to} is not after valid_from")
                    _check_overlap(index[(mapping.source_code_system, mapping.source_code)], mapping, where)
                    index[(mapping.source_code_system, mapping.source_code)].append(mapping)
        except OSError as exc:
            raise TerminologyError(f"{path}: cannot read terminology table: {exc.strerror}") from exc
    for mappings in index.values():
        _check_gaps(mappings)
    return Terminology(version=version, _index={k: tuple(v) for k, v in index.items()})


def _check_gaps(mappings: list[Mapping]) -> None:
    """One source code -> one target must be valid without holes once it starts (a hole is a typo)."""
    by_target: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for m in mappings:
        by_target[(m.vocabulary, m.code)].append(m)
    for spans in by_target.values():
        spans.sort(key=lambda m: m.valid_from)
        for before, after in itertools.pairwise(spans):
            if before.valid_to is not None and before.valid_to < after.valid_from:
                raise TerminologyError(
                    f"{after.source_code_system} {after.source_code} -> {after.vocabulary} {after.code}: "
                    f"no mapping between {before.valid_to} and {after.valid_from} (gap in validity)"
                )


def _check_overlap(existing: list[Mapping], new: Mapping, where: str) -> None:
    for old in existing:
        if (old.vocabulary, old.code) != (new.vocabulary, new.code):
            continue  # N:M: one source code may map to several concepts at once
        ends_old = old.valid_to or date.max
        ends_new = new.valid_to or date.max
        if new.valid_from < ends_old and old.valid_from < ends_new:
            raise TerminologyError(
                f"{where}: {new.source_code_system} {new.source_code} -> {new.vocabulary} {new.code} "
                f"overlaps an earlier row valid {old.valid_from}..{old.valid_to or 'open'}"
            )
