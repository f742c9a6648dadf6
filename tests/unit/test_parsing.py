"""Small parsers and classifiers: capture.model.Related.parse and failures.algolia_failure."""

from __future__ import annotations

import pytest
import requests
from algoliasearch.http.exceptions import AlgoliaUnreachableHostException, RequestException
from hypothesis import given
from hypothesis import strategies as st

from workerpool.capture.model import Related, WatchError
from workerpool.exit_codes import EXIT_ALGOLIA, EXIT_ERROR
from workerpool.failures import algolia_failure
from workerpool.runtime.algolia import AlgoliaError


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("brands:brand_id", Related("brands", "brand_id", None)),
        ("brands:brand_id:id", Related("brands", "brand_id", "id")),
        ("Shop Brands:Brand Id:code", Related("Shop Brands", "Brand Id", "code")),
    ],
)
def test_related_specs(spec, expected):
    assert Related.parse(spec) == expected


@pytest.mark.parametrize("spec", ["", "brands", "brands:", ":brand_id", "brands::id", "a:b:c:d", "a:b:"])
def test_a_bad_related_spec_is_one_line_naming_it(spec):
    with pytest.raises(WatchError) as caught:
        Related.parse(spec)
    message = str(caught.value)
    assert message.startswith(f"--related {spec!r} is not valid") and "\n" not in message


@given(st.text(max_size=30))
def test_related_parse_accepts_exactly_two_or_three_nonempty_parts(spec):
    parts = spec.split(":")
    if len(parts) in (2, 3) and all(parts):
        related = Related.parse(spec)
        fields = [related.related_table, related.fk_column, related.ref_column]
        assert ":".join(f for f in fields if f is not None) == spec
    else:
        with pytest.raises(WatchError):
            Related.parse(spec)


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("make", [lambda m, s: RequestException(m, s), lambda m, s: AlgoliaError(m, s)])
def test_refused_credentials_exit_4_and_name_the_settings(make, status):
    code, line = algolia_failure(make("Invalid Application-ID or API key", status))
    assert code == EXIT_ALGOLIA
    assert line.startswith(f"Algolia refused the credentials ({status}: Invalid Application-ID or API key)")
    assert "ALGOLIA_APP_ID" in line and "ALGOLIA_ADMIN_KEY" in line


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, None])
def test_throttling_timeouts_and_server_errors_are_unreachable(status):
    code, line = algolia_failure(AlgoliaError("busy", status))
    assert code == EXIT_ALGOLIA and line.startswith("Algolia unreachable: busy") and "ALGOLIA_HOSTS" in line


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_other_client_errors_are_rejections(status):
    code, line = algolia_failure(RequestException("Record too big", status))
    assert (code, line) == (EXIT_ERROR, f"Algolia rejected the request ({status}): Record too big")


def test_network_failures_are_unreachable():
    code, line = algolia_failure(AlgoliaUnreachableHostException("Unreachable hosts"))
    assert code == EXIT_ALGOLIA and "no host answered" in line
    code, line = algolia_failure(requests.ConnectionError("refused"))
    assert code == EXIT_ALGOLIA and "network error: ConnectionError" in line


def test_anything_else_is_not_an_algolia_failure():
    """None: the caller lets it escape with its traceback, as a bug."""
    assert algolia_failure(ValueError("bad")) is None
    assert algolia_failure(KeyboardInterrupt()) is None


def test_the_message_is_one_line_of_at_most_300_characters_of_the_reply():
    reply = "first line\n\tsecond   line\r\n" + "x" * 1000
    code, line = algolia_failure(AlgoliaError(reply, 400))
    assert code == EXIT_ERROR
    assert "\n" not in line and "\r" not in line and "\t" not in line
    assert line.startswith("Algolia rejected the request (400): first line second line xxx")
    assert len(line) == len("Algolia rejected the request (400): ") + 300
