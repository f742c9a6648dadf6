"""Secrets in connection strings: every password a DSN can carry, found and hidden, so that no error
line or log shows one."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

_KV_PASSWORD = re.compile(r"(^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|(?:[^\s'\\]|\\.)+)")
_URL_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*:)([^@/?#]*)@")
_URL_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)")


_URL_SCHEME = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://")


def _is_url(dsn: str) -> bool:
    """Whether a DSN is a URL: it starts with a scheme (as libpq decides; any scheme, so a mistaken
    `mysql://…` is redacted too). Anything else is key=value, where a value may well contain `://`."""
    return bool(_URL_SCHEME.match(dsn))


def dsn_passwords(dsn: str) -> list[str]:
    """Every password written in a DSN, as written and as libpq reads it.

    The forms: URL userinfo (`postgresql://user:pw@host`), the URL query (`?password=pw`) and the
    libpq `key=value` string (`password=pw`, `password='p w'`). Percent-encoded and backslash-escaped
    values are listed both ways, so that neither form can leak.
    """
    if not dsn:
        return []
    found: list[str] = []
    if _is_url(dsn):
        for match in (_URL_USERINFO.match(dsn), *_URL_QUERY_PASSWORD.finditer(dsn)):
            if match and match.group(2):
                found += [match.group(2), unquote(match.group(2))]
    else:
        for match in _KV_PASSWORD.finditer(dsn):
            raw = match.group(2)
            value = raw[1:-1] if raw.startswith("'") else raw
            found += [raw, value, re.sub(r"\\(.)", r"\1", value)]
    return list(dict.fromkeys(p for p in found if p))


def redact_dsn(dsn: str) -> str:
    """The DSN with every password replaced by '***', safe to print."""
    if not dsn:
        return dsn
    if _is_url(dsn):
        redacted = _URL_USERINFO.sub(r"\1***@", dsn)
        redacted = _URL_QUERY_PASSWORD.sub(r"\1***", redacted)
    else:
        redacted = _KV_PASSWORD.sub(r"\1password=***", dsn)
    # The password anywhere else in the string (a malformed DSN, a password repeated as a user name);
    # never inside the scheme, where starring `sql` of `postgresql://` would print the password's value.
    scheme = _URL_SCHEME.match(redacted)
    start = scheme.end() if scheme else 0
    rest = redacted[start:]
    for password in dsn_passwords(dsn):
        if len(password) >= 3:
            rest = rest.replace(password, "***")
    return redacted[:start] + rest


def environment_secrets() -> list[str]:
    """Secrets libpq takes from the environment rather than from DATABASE_URL."""
    password = os.environ.get("PGPASSWORD", "")
    return [password] if password else []
