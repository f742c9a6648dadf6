"""redaction.dsn_passwords and redact_dsn: every password form a DSN can carry is found and hidden.
libpq's own parser (psycopg.conninfo, no server involved) is the oracle for what the password is."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from workerpool.redaction import dsn_passwords, redact_dsn, scrub

passwords = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="*", exclude_categories=("Cs", "Cc")),
    min_size=3,
    max_size=20,
)


@pytest.mark.parametrize(
    ("dsn", "redacted", "found"),
    [
        ("postgresql://app:s3cret@db:5432/shop", "postgresql://app:***@db:5432/shop", ["s3cret"]),
        ("postgres://app:p%40ss%2Fw@db/shop", "postgres://app:***@db/shop", ["p%40ss%2Fw", "p@ss/w"]),
        ("postgresql://db/shop?user=app&password=s3cret&sslmode=require",
         "postgresql://db/shop?user=app&password=***&sslmode=require", ["s3cret"]),
        ("host=db password=s3cret dbname=shop", "host=db password=*** dbname=shop", ["s3cret"]),
        ("host=db password = 's3 cr\\'et' dbname=shop", "host=db password=*** dbname=shop",
         ["'s3 cr\\'et'", "s3 cr\\'et", "s3 cr'et"]),
        ("postgresql://app@db/shop", "postgresql://app@db/shop", []),
        ("host=db dbname=shop", "host=db dbname=shop", []),
        ("", "", []),
    ],
)  # fmt: skip
def test_known_forms(dsn, redacted, found):
    assert redact_dsn(dsn) == redacted
    assert dsn_passwords(dsn) == found


@given(passwords)
def test_a_url_password_is_read_as_libpq_reads_it_and_hidden_in_both_forms(password):
    dsn = f"postgresql://app:{quote(password, safe='')}@db.example:5432/shop"
    assert dsn_passwords(dsn)[-1] == conninfo_to_dict(dsn)["password"] == password
    redacted = redact_dsn(dsn)
    if password in "app:@db.example:5432/shop":  # maybe also (a part of) the user, host or database name
        assert redacted.startswith("postgresql://") and ":***@" in redacted
    else:  # only where the DSN holds it: not inside another word (`xam` of `example` is not the password)
        assert redacted == "postgresql://app:***@db.example:5432/shop"


def test_a_password_inside_the_scheme_name_leaves_the_scheme_alone():
    assert redact_dsn("postgresql://app:sql@db/shop") == "postgresql://app:***@db/shop"
    assert redact_dsn("postgresql://app:app@db/shop") == "postgresql://***:***@db/shop"


@given(passwords)
def test_a_quoted_key_value_password_is_read_as_libpq_reads_it_and_hidden(password):
    assume(password.strip() == password)
    assume("://" not in password)  # test_a_key_value_password_holding_a_url_scheme_separator
    quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
    dsn = f"host=db.example password={quoted} dbname=shop"
    assert dsn_passwords(dsn)[-1] == conninfo_to_dict(dsn)["password"] == password
    redacted = redact_dsn(dsn)
    assert quoted not in redacted
    # The password is gone, unless it is (a part of) the rest of the DSN (`nam` of `dbname`).
    assert password not in redacted or password in "host=db.example password=*** dbname=shop"
    assert redacted.startswith("host=db") and "password=***" in redacted


@pytest.mark.parametrize("dsn", ["host=db password='ab://cd' dbname=shop", "host=db password=ab://cd dbname=shop"])
def test_a_key_value_password_holding_a_url_scheme_separator(dsn):
    assert dsn_passwords(dsn)[-1] == conninfo_to_dict(dsn)["password"] == "ab://cd"
    assert "ab://cd" not in redact_dsn(dsn)


# ---- issue 29: misspelled keywords, an unencoded `@`, short secrets -----------------------------


def test_the_value_of_a_misspelled_password_keyword_is_hidden():
    for dsn in ("host=db port=1 passwrd=S3cr3tPw", "host=db pasword = 'S3cr3tPw' dbname=x"):
        assert "S3cr3tPw" in dsn_passwords(dsn)
        assert "S3cr3tPw" not in redact_dsn(dsn) and "=***" in redact_dsn(dsn)
    assert (
        redact_dsn("postgresql://db/x?sslmode=require&passwrd=S3cr3tPw")
        == "postgresql://db/x?sslmode=require&passwrd=***"
    )
    # the keywords libpq knows keep their values
    assert redact_dsn("host=db port=5432 dbname=shop user=app sslmode=require") == (
        "host=db port=5432 dbname=shop user=app sslmode=require"
    )


def test_a_password_with_an_unencoded_at_sign_is_hidden_whole():
    dsn = "postgresql://postgres:S3c@r3tPw@db.example:5432/x"
    assert redact_dsn(dsn) == "postgresql://postgres:***@db.example:5432/x"
    # libpq reads `S3c` as the password and `r3tPw@db.example` as the host: both halves are secrets
    assert {"S3c@r3tPw", "S3c", "r3tPw"} <= set(dsn_passwords(dsn))
    assert scrub("failed to resolve host 'r3tPw@db.example'", dsn_passwords(dsn)) == (
        "failed to resolve host '***@db.example'"
    )


def test_a_short_secret_is_not_starred_inside_other_words():
    line = "Is the server running on that host and accepting TCP/IP connections?"
    assert scrub(line, ["os"]) == line  # under MIN_SCRUB: only the DSN's structure hides it
    assert scrub(line, ["ost"]) == line  # inside `host`: not the password
    assert scrub("password=ost host", ["ost"]) == "password=*** host"
    assert redact_dsn("postgresql://app:os@db/x") == "postgresql://app:***@db/x"
