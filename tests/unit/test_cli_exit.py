"""The CLI leaves with its command's exit code and without tearing the C++ runtimes down (pyarrow's
thread pool aborted one exit in eight with -6 after a Parquet read; see ``cli.main``)."""

from __future__ import annotations

import sys

import pytest

import cli


class Left(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _exit(code: int) -> None:
    raise Left(code)


@pytest.mark.parametrize(("argv", "code"), [(["--help"], 0), (["catalogue", "show", "nope"], 2)])
def test_main_leaves_through_os_exit_with_the_commands_code(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], code: int
) -> None:
    monkeypatch.setattr(sys, "argv", ["ketenstroom", *argv])
    monkeypatch.setattr(cli.os, "_exit", _exit)
    with pytest.raises(Left) as left:
        cli.main()
    assert left.value.code == code
