"""workerpool.exit_codes is the one definition of the exit codes, and the README's "Exit codes" table
lists exactly the codes a command returns."""

from __future__ import annotations

import re
from pathlib import Path

from workerpool import exit_codes

ROOT = Path(__file__).resolve().parents[2]


def _readme_codes() -> set[int]:
    section = ROOT.joinpath("README.md").read_text().split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    return {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}


def test_the_readme_table_lists_every_command_exit_code():
    assert _readme_codes() == set(exit_codes.COMMAND_EXIT_CODES)
    named = {v for k, v in vars(exit_codes).items() if k.startswith("EXIT_")}
    assert named == set(exit_codes.COMMAND_EXIT_CODES), "every EXIT_ constant is in COMMAND_EXIT_CODES"


def test_no_other_module_defines_an_exit_code():
    defined = re.compile(r"^\s*(?:WORKER_)?EXIT_[A-Z_]+\s*(?::[^=]+)?=", re.MULTILINE)
    owners = sorted(
        str(path.relative_to(ROOT))
        for path in ROOT.joinpath("workerpool").rglob("*.py")
        if defined.search(path.read_text())
    )
    assert owners == ["workerpool/exit_codes.py"]


def test_the_supervisor_tells_a_worker_that_cannot_boot_from_one_that_crashed():
    assert exit_codes.WORKER_EXIT_BOOT_ERROR not in (exit_codes.WORKER_EXIT_OK, exit_codes.WORKER_EXIT_CRASH)
    assert exit_codes.WORKER_EXIT_OK == 0
