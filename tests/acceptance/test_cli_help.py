"""`--help` of every command says, for every flag, what it means, its default and the environment
variable it overrides (or that none does)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from workerpool import cli, config

HELP = re.compile(
    r"^(?P<meaning>.*\S) \(default: (?P<default>[^;]+); "
    r"(?:environment: (?P<var>[A-Z_]+)|no environment variable)\)$"
)
# Flags of the emulator that read a variable under a shorter name.
OTHER_DESTS = {"app_id": "ALGOLIA_APP_ID", "api_key": "ALGOLIA_ADMIN_KEY"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"": parser, **sub.choices}


def _flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_flag_says_its_meaning_default_and_variable(command):
    parser = _commands()[command]
    for action in _flags(parser):
        text = " ".join((action.help or "").split())
        match = HELP.match(text)
        assert match, f"workerpool {command} {action.option_strings[0]}: {text!r}"
        var = match.group("var")
        if var:  # the variable named is the one the flag really overrides
            assert var in config.VARIABLES
            assert config.VARIABLES[var][0] == action.dest or OTHER_DESTS.get(action.dest) == var, (action.dest, var)
        elif action.dest in config._FIELD_TO_VAR:
            pytest.fail(
                f"{action.option_strings[0]} sets {config._FIELD_TO_VAR[action.dest]} but its help says no variable"
            )
    for action in parser._actions:
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            assert action.help, f"workerpool {command} {action.dest} has no help"


def test_every_setting_has_a_meaning_and_run_has_a_flag_for_each_worker_setting():
    assert set(config.MEANINGS) == set(config.VARIABLES)
    run = {a.dest for a in _flags(_commands()["run"])}
    assert {"workers", "batch_size", "polling_interval", "health_port", "health_host", "shutdown_timeout"} <= run


@pytest.mark.parametrize("command", sorted(c for c in _commands() if c))
def test_help_output_of_each_command_shows_all_three_for_every_flag(command):
    result = subprocess.run(
        [sys.executable, "-m", "workerpool", command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    flags = _flags(_commands()[command])
    assert text.count("(default: ") == len(flags), text
    assert text.count("; environment: ") + text.count("; no environment variable)") == len(flags), text
    if command == "run":
        assert "--batch-size BATCH_SIZE rows claimed per batch, 1-10000 (default: 100; environment: BATCH_SIZE)" in text
        assert "(default: 127.0.0.1; environment: HEALTH_HOST)" in text
