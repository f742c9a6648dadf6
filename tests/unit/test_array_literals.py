"""The array literals the worker sends instead of lists: Postgres reads them back as the same values,
whether or not an element needs escaping (the quick path and the quoting one)."""

from __future__ import annotations

import pytest

from workerpool.runtime.queue import text_array


@pytest.mark.parametrize(
    ("values", "literal"),
    [
        ([], "{}"),
        (["a"], '{"a"}'),
        (["products", "1", ""], '{"products","1",""}'),
        (["NULL", "a,b", "{x}", " sp "], '{"NULL","a,b","{x}"," sp "}'),
        (["a", None], '{"a",NULL}'),
        (['say "hi"', "back\\slash"], '{"say \\"hi\\"","back\\\\slash"}'),
    ],
)
def test_text_array_quotes_every_element_and_escapes_quotes_and_backslashes(values, literal):
    assert text_array(values) == literal
    assert text_array(iter(values)) == literal  # any iterable, read once
