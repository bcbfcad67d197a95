"""The tracked tree is whole: no merge left half done."""

from __future__ import annotations

import re
import subprocess

from ketenstroom.settings import REPO_ROOT

MARKER = re.compile(r"^(<{7} |>{7} |={7}$)", re.MULTILINE)


def test_no_conflict_markers_in_tracked_text_files() -> None:
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    found = []
    for name in files:
        path = REPO_ROOT / name
        if not path.is_file() or path.suffix in {".parquet", ".png", ".jar"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        found += [f"{name}:{text[: m.start()].count(chr(10)) + 1}" for m in MARKER.finditer(text)]
    assert not found, f"merge conflict markers left in: {found}"
