from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ketenstroom.contract import load_schemas
from ketenstroom.contract.compat import check_history, schemas_at
from ketenstroom.settings import REPO_ROOT, CatalogueSettings

SHARED = {
    "type": "record",
    "name": "CodedValue",
    "namespace": "nl.ketenstroom.common",
    "fields": [{"name": "code", "type": "string"}],
}


def _record(extra: list[dict[str, object]]) -> dict[str, object]:
    return {
        "type": "record",
        "name": "Thing",
        "namespace": "nl.ketenstroom.om",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "code", "type": "nl.ketenstroom.common.CodedValue"},
            *extra,
        ],
    }


def _commit(repo: Path, record: dict[str, object], shared: dict[str, object], message: str) -> None:
    (repo / "schemas/om").mkdir(parents=True, exist_ok=True)
    (repo / "schemas/common").mkdir(parents=True, exist_ok=True)
    (repo / "schemas/om/nl.ketenstroom.om.Thing.avsc").write_text(json.dumps(record))
    (repo / "schemas/common/nl.ketenstroom.common.CodedValue.avsc").write_text(json.dumps(shared))
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message],
        check=True,
    )


def _repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    _commit(tmp_path, _record([]), SHARED, "v1")
    _commit(tmp_path, _record([{"name": "note", "type": ["null", "string"], "default": None}]), SHARED, "v2")
    return tmp_path


def test_compatible_history_passes(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    assert check_history(load_schemas(repo / "schemas"), repo) == []


def test_a_new_required_field_is_refused_against_every_earlier_version(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    _commit(
        repo,
        _record(
            [{"name": "note", "type": ["null", "string"], "default": None}, {"name": "must", "type": "int"}]
        ),
        SHARED,
        "v3 incompatible",
    )
    problems = check_history(load_schemas(repo / "schemas"), repo)
    # v1 and v2 both lack `must`; v3 itself is the current version and reads its own data
    assert len(problems) == 2
    assert all("No default value for field must" in p.error for p in problems)


def test_a_change_in_a_shared_type_is_checked_for_the_records_that_use_it(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    changed = {**SHARED, "fields": [{"name": "code", "type": "int"}]}  # string -> int: not resolvable
    _commit(repo, _record([{"name": "note", "type": ["null", "string"], "default": None}]), changed, "v3")
    problems = check_history(load_schemas(repo / "schemas"), repo)
    assert problems and problems[0].record == "nl.ketenstroom.om.Thing"


def test_schemas_at_reads_the_tree_of_a_commit(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    first = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "--max-parents=0", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    old = schemas_at(repo, first)["nl.ketenstroom.om.Thing"]
    assert [f["name"] for f in old.schema["fields"]] == ["id", "code"]


def test_the_project_schemas_resolve_against_their_whole_history() -> None:
    problems = check_history(load_schemas(CatalogueSettings().schema_dir), REPO_ROOT)
    assert problems == [], [str(p) for p in problems]
