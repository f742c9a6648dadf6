"""config.load: defaults, precedence, and a one-line ConfigError naming the variable for every kind of
bad value. Pure: an explicit environ mapping, no .env unless a test writes one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workerpool.config import VARIABLES, ConfigError, Settings, load

FREE_TEXT = {"ALGOLIA_APP_ID", "ALGOLIA_ADMIN_KEY"}  # any text is accepted

# Bad values per variable. Integer variables get their range ends from the error message itself
# (test_an_integer_range_is_the_range_the_message_states), so here only their non-numbers.
BAD: dict[str, list[str]] = {
    "DATABASE_URL": ["mysql://u@h/db", "just-a-host"],
    "DATABASE_POOL_MODE": ["statement", "pgbouncer", "tx"],
    "LISTEN_DATABASE_URL": ["mysql://u@h/db", "just-a-host"],
    "ALGOLIA_HOSTS": ["ftp://x", "127.0.0.1:8089", "http://", "http://h:99999", "http://h:port"],
    "ALGOLIA_INDEX_PREFIX": ["dev prefix", "dev/", "prod*", "é"],
    "ALGOLIA_FORWARD_TO_REPLICAS": ["maybe", "2", "truthy"],
    "LOG_LEVEL": ["LOUD", "5", "info!"],
    "HEALTH_HOST": ["localhost", "256.0.0.1", "0.0.0.0:80"],
    "DASHBOARD_TOKEN": ["s3cr3t", "a" * 15, "a" * 20 + " b", "é" * 20],
    "LOG_RETENTION_DAYS": ["-1", "36501", "nan", "inf", "a week"],
    "VACUUM_WARN_DEAD_RATIO": ["-0.5", "1000001", "nan", "lots"],
    "BATCH_SIZE_MAX": ["ten", "1.5", "0", "10001", "99"],  # 99: below the default BATCH_SIZE, 100
}
INTEGER_VARS = [v for v, (_, parse) in VARIABLES.items() if parse.__name__ == "parse"]
for _var in INTEGER_VARS:
    BAD[_var] = ["ten", "1.5", "0x10", "1e3"]


def _load(**environ: str) -> Settings:
    return load(environ=environ, env_file=None)


def _one_line_error_naming(var: str, raw: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(**{var: raw})
    message = str(caught.value)
    assert "\n" not in message, message
    assert var in message, message
    return message


def test_defaults_with_an_empty_environment():
    settings = _load()
    assert settings == Settings()
    assert (settings.batch_size, settings.workers, settings.lease_timeout, settings.log_level) == (
        100,
        1,
        60000,
        "INFO",
    )
    assert settings.algolia_hosts == () and settings.health_host == "127.0.0.1" and settings.health_port == 0


def test_every_validated_variable_has_bad_values_here():
    """A new variable with a parser must get its bad values in this file."""
    assert set(VARIABLES) - FREE_TEXT == set(BAD)


@pytest.mark.parametrize(("var", "raw"), [(var, raw) for var, raws in BAD.items() for raw in raws])
def test_a_bad_value_is_one_line_naming_the_variable(var, raw):
    message = _one_line_error_naming(var, raw)
    if var == "DASHBOARD_TOKEN":
        assert raw.strip() not in message, "the token was echoed back"
    else:
        assert raw.strip().rstrip("/") in message, message


@pytest.mark.parametrize("var", INTEGER_VARS)
def test_an_integer_range_is_the_range_the_message_states(var):
    message = _one_line_error_naming(var, "ten")
    lo, hi = map(int, re.search(r"from (-?\d+) to (\d+)", message).groups())
    field = VARIABLES[var][0]
    assert getattr(_load(**{var: str(lo)}), field) == lo
    assert getattr(_load(**{var: f" {hi} "}), field) == hi
    for outside in (lo - 1, hi + 1):
        assert "out of range" in _one_line_error_naming(var, str(outside))


@given(st.integers(min_value=1, max_value=10_000))
def test_batch_size_accepts_every_whole_number_in_range_with_or_without_underscores(n):
    assert _load(BATCH_SIZE=str(n)).batch_size == n
    assert _load(BATCH_SIZE=f"{n:_}").batch_size == n


@given(var=st.sampled_from(sorted(VARIABLES)), raw=st.text(max_size=40))
def test_any_text_either_loads_or_is_a_one_line_config_error(var, raw):
    """Never a traceback: whatever an operator writes, the outcome is a value or a ConfigError."""
    try:
        _load(**{var: raw})
    except ConfigError as exc:
        assert var in str(exc) and "\n" not in str(exc)


def test_a_blank_value_counts_as_unset():
    assert _load(BATCH_SIZE="  ", LOG_LEVEL="") == Settings()


def test_values_are_normalized():
    settings = _load(
        LOG_LEVEL="warn",
        ALGOLIA_HOSTS=" http://a:1/, https://b ,",
        HEALTH_HOST="::",
        LOG_RETENTION_DAYS="0.5",
        DASHBOARD_TOKEN="  " + "t" * 16 + "  ",
    )
    assert settings.log_level == "WARNING"
    assert settings.algolia_hosts == ("http://a:1", "https://b")
    assert settings.health_host == "::"
    assert settings.log_retention_days == 0.5
    assert settings.dashboard_token == "t" * 16


def test_a_bad_dsn_is_reported_without_its_password():
    message = _one_line_error_naming("DATABASE_URL", "mysql://app:hunter2secret@db/app")
    assert "hunter2secret" not in message and "***" in message


def test_precedence_env_file_then_environment_then_overrides(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text("BATCH_SIZE=7\nWORKERS=3\nLOG_LEVEL=DEBUG\n")
    settings = load(
        overrides={"workers": 5, "pool_size": None}, environ={"BATCH_SIZE": "9", "WORKERS": "4"}, env_file=env_file
    )
    assert (settings.batch_size, settings.workers, settings.log_level, settings.pool_size) == (9, 5, "DEBUG", 2)


def test_a_bad_override_names_its_variable():
    with pytest.raises(ConfigError, match=r"^REQUESTS_IN_FLIGHT='65' is out of range"):
        load(overrides={"requests_in_flight": 65}, environ={}, env_file=None)


def test_required_settings_name_what_is_missing():
    with pytest.raises(ConfigError, match=r"^ALGOLIA_APP_ID is not set"):
        Settings(algolia_admin_key="k").require_algolia()
    with pytest.raises(ConfigError, match=r"^ALGOLIA_ADMIN_KEY is not set"):
        Settings(algolia_app_id="A").require_algolia()
    with pytest.raises(ConfigError, match=r"^DATABASE_URL is not set"):
        Settings().require_database()
    Settings(algolia_app_id="A", algolia_admin_key="k", database_url="postgresql://h/d").require_algolia()


def test_secrets_are_not_in_the_repr():
    settings = _load(ALGOLIA_ADMIN_KEY="admin-key-xyz", DASHBOARD_TOKEN="tok" * 6)
    assert "admin-key-xyz" not in repr(settings) and "tok" * 6 not in repr(settings)
    assert {"admin-key-xyz", "tok" * 6} <= set(settings.secrets())


def test_batch_size_max_defaults_to_1000_or_batch_size_when_larger():
    assert _load().batch_size_max == 1000
    assert _load(BATCH_SIZE="50").batch_size_max == 1000
    assert _load(BATCH_SIZE="5000").batch_size_max == 5000
    assert load(overrides={"batch_size": 2500}, environ={}, env_file=None).batch_size_max == 2500
    assert _load(BATCH_SIZE="10", BATCH_SIZE_MAX="10").batch_size_max == 10
    assert _load(BATCH_SIZE="10", BATCH_SIZE_MAX="10_000").batch_size_max == 10_000


@pytest.mark.parametrize(
    ("environ", "overrides"),
    [
        ({"BATCH_SIZE": "500", "BATCH_SIZE_MAX": "499"}, {}),
        ({"BATCH_SIZE_MAX": "499"}, {"batch_size": 500}),  # a --batch-size flag above the variable
    ],
)
def test_batch_size_max_below_batch_size_is_one_line_naming_both(environ, overrides):
    with pytest.raises(ConfigError) as caught:
        load(overrides=overrides, environ=environ, env_file=None)
    message = str(caught.value)
    assert message == "BATCH_SIZE_MAX=499 is below BATCH_SIZE=500; expected a number from 500 to 10000", message
