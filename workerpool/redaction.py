"""Secrets in connection strings: every password a DSN can carry, found and hidden, so that no error
line or log shows one."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

_KV_PASSWORD = re.compile(r"(^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|(?:[^\s'\\]|\\.)+)")
# Any `key = value` of a key=value DSN (a value quoted or not), to find the values of misspelled keys.
_KV_PAIR = re.compile(r"(^|\s)([^\s=]+)\s*=\s*('(?:[^'\\]|\\.)*'|(?:[^\s'\\]|\\.)+)")
# The userinfo's password runs to the *last* `@` of the authority: `user:S3c@r3t@host` is a password
# with an unencoded `@` (libpq splits at the first one and reads `r3t@host` as the host).
_URL_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*:)([^/?#]*)@")
_URL_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)")
_URL_QUERY_PAIR = re.compile(r"[?&]([^=&#]*)=([^&#]*)")

# libpq's connection keywords whose values are not secret (PostgreSQL 17's list). A value under any
# other keyword, a misspelled `passwrd=` included, is treated as a password: libpq refuses the DSN
# and the error quotes it back.
NOT_SECRET_KEYWORDS = frozenset(
    [
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "passfile",
        "require_auth",
        "channel_binding",
        "connect_timeout",
        "client_encoding",
        "options",
        "application_name",
        "fallback_application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "replication",
        "gssencmode",
        "sslmode",
        "sslnegotiation",
        "requiressl",
        "sslcompression",
        "sslcert",
        "sslkey",
        "sslcertmode",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "requirepeer",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "krbsrvname",
        "gsslib",
        "gssdelegation",
        "service",
        "target_session_attrs",
        "load_balance_hosts",
    ]
)

_URL_SCHEME = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")

MIN_SCRUB = 3  # a shorter secret is hidden only where a DSN's structure says it is (redact_dsn)


def _is_url(dsn: str) -> bool:
    """Whether a DSN is a URL: it starts with a scheme (as libpq decides; any scheme, so a mistaken
    `mysql://…` is redacted too). Anything else is key=value, where a value may well contain `://`."""
    return bool(_URL_SCHEME.match(dsn))


def _unquoted(raw: str) -> list[str]:
    """A key=value value as written, without its quotes, and unescaped as libpq reads it."""
    value = raw[1:-1] if raw.startswith("'") else raw
    return [raw, value, re.sub(r"\\(.)", r"\1", value)]


def dsn_passwords(dsn: str) -> list[str]:
    """Every password written in a DSN, as written and as libpq reads it (that one last).

    The forms: URL userinfo (`postgresql://user:pw@host`, also with an unencoded `@` in the
    password), the URL query (`?password=pw`) and the libpq `key=value` string (`password=pw`,
    `password='p w'`). Percent-encoded and backslash-escaped values are listed both ways, so that
    neither form can leak. The value of a keyword libpq does not know (`passwrd=pw`, `?pasword=pw`)
    counts as a password too: a misspelling must not print the secret it was meant to hide.
    """
    if not dsn:
        return []
    found: list[str] = []
    if _is_url(dsn):
        for key, value in _URL_QUERY_PAIR.findall(dsn):
            if value and unquote(key) not in NOT_SECRET_KEYWORDS and key != "password":
                found += [value, unquote(value)]
        userinfo = _URL_USERINFO.match(dsn)
        if userinfo and userinfo.group(2):
            whole = userinfo.group(2)
            # Each side of an unencoded `@` shows up alone in libpq's errors (the host it could not resolve).
            found += [whole, *whole.split("@")[1:], unquote(whole), unquote(whole.split("@")[0])]
        for match in _URL_QUERY_PASSWORD.finditer(dsn):
            if match.group(2):
                found += [match.group(2), unquote(match.group(2))]
    else:
        for _, key, raw in _KV_PAIR.findall(dsn):
            if key not in NOT_SECRET_KEYWORDS and key != "password":
                found += _unquoted(raw)
        for match in _KV_PASSWORD.finditer(dsn):
            found += _unquoted(match.group(2))
    unique = list(dict.fromkeys(p for p in found if p))
    if unique:  # libpq's reading last, as documented
        last = found[-1] if found[-1] else unique[-1]
        unique.remove(last)
        unique.append(last)
    return unique


def scrub(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    """`text` with each secret of at least MIN_SCRUB characters replaced by '***' where it stands as
    a token of its own: not inside a longer word, so that a short password is not starred inside
    other words ("h***t"), which would both garble the line and tell where the password's letters are."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) < MIN_SCRUB or secret not in text:
            continue
        before = r"(?<![A-Za-z0-9_])" if secret[0].isalnum() or secret[0] == "_" else ""
        after = r"(?![A-Za-z0-9_])" if secret[-1].isalnum() or secret[-1] == "_" else ""
        text = re.sub(before + re.escape(secret) + after, "***", text)
    return text


def redact_dsn(dsn: str) -> str:
    """The DSN with every password replaced by '***', safe to print."""
    if not dsn:
        return dsn
    if _is_url(dsn):
        redacted = _URL_USERINFO.sub(r"\1***@", dsn)
        redacted = _URL_QUERY_PASSWORD.sub(r"\1***", redacted)
        redacted = _URL_QUERY_PAIR.sub(
            lambda m: m.group(0) if unquote(m.group(1)) in NOT_SECRET_KEYWORDS else m.group(0)[0] + m.group(1) + "=***",
            redacted,
        )
    else:
        redacted = _KV_PAIR.sub(
            lambda m: m.group(0) if m.group(2) in NOT_SECRET_KEYWORDS else f"{m.group(1)}{m.group(2)}=***", dsn
        )
    # The password anywhere else in the string (a malformed DSN, a password repeated as a user name);
    # never inside the scheme, where starring `sql` of `postgresql://` would print the password's value.
    scheme = _URL_SCHEME.match(redacted)
    start = scheme.end() if scheme else 0
    return redacted[:start] + scrub(redacted[start:], dsn_passwords(dsn))


def environment_secrets() -> list[str]:
    """Secrets libpq takes from the environment rather than from DATABASE_URL."""
    password = os.environ.get("PGPASSWORD", "")
    return [password] if password else []
