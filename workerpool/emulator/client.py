"""The real algoliasearch client, pointed at an emulator."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # the client is heavy to import; the server itself never needs it
    from algoliasearch.search.client import SearchClientSync


def make_client(base_url: str, app_id: str, api_key: str) -> SearchClientSync:
    """The real algoliasearch v4 sync client, pointed at ``base_url`` (one host, no proxy).

    Proxies from the environment are dropped: the emulator is always reached directly.
    """
    from algoliasearch.http.hosts import Host, HostsCollection
    from algoliasearch.search.client import SearchClientSync
    from algoliasearch.search.config import SearchConfig

    cfg = SearchConfig(app_id, api_key)
    u = urlsplit(base_url)
    cfg.hosts = HostsCollection([Host(url=u.hostname or "127.0.0.1", scheme=u.scheme or "http", port=u.port)])
    cfg.proxies = {}
    return SearchClientSync.create_with_config(cfg)
