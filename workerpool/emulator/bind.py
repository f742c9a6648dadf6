"""Bind safety: which hosts the emulator may listen on, and with which key.

Kept apart from the HTTP server so that the command line can check a host before loading it.
"""

from __future__ import annotations

import ipaddress
import socket

from workerpool.emulator.common import DEFAULT_API_KEY


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback one ('' and 0.0.0.0 mean every interface: no)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None) if host else []
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def refuse_unsafe_bind(host: str, allow_remote: bool, api_key: str) -> str | None:
    """The one-line reason not to listen on `host`, or None.

    Anyone who can reach the emulator can read and write every index with its key, and the default
    key is published here: beyond loopback it needs both an explicit --allow-remote and a key of one's own.
    """
    if is_loopback(host):
        return None
    if not allow_remote:
        return (
            f"refusing to listen on {host!r}, which is not a loopback address; pass --allow-remote "
            "and an --api-key of your own to serve other hosts"
        )
    if api_key == DEFAULT_API_KEY:
        return (
            f"refusing to listen on {host!r} with the default API key, which anyone can read; "
            "pass --api-key with a key of your own"
        )
    return None
