"""ProgressBar on a StringIO: the line it draws, every 10% in a log, one redrawn line on a terminal,
and the finish."""

from __future__ import annotations

import io
import re

from workerpool.ops import progress
from workerpool.ops.progress import ProgressBar

LINE = re.compile(
    r"^(?P<label>\S+) \[(?P<bar>[#.]{30})\] +(?P<pct>\d+\.\d)%  (?P<done>[\d,]+)/(?P<total>[\d,]+) rows  "
    r"(?P<rate>[\d,]+) rows/s  (?P<tail>ETA (?:\d+:)?\d+:\d\d|--:--|ETA --:--|took (?:\d+:)?\d+:\d\d)$"
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _parse(line: str) -> dict[str, str]:
    match = LINE.match(line)
    assert match, line
    return match.groupdict()


def test_the_line_says_label_bar_percent_counts_rate_and_eta():
    bar = ProgressBar(10_000, "reindex", stream=io.StringIO())
    bar.update(4_500)
    fields = _parse(bar.line())
    assert fields["label"] == "reindex"
    assert fields["bar"] == "#" * 13 + "." * 17  # int(0.45 * 30)
    assert fields["pct"] == "45.0"
    assert (fields["done"], fields["total"]) == ("4,500", "10,000")
    assert fields["tail"].startswith("ETA")


def test_a_log_gets_a_line_per_tenth_and_no_repeat_at_the_finish():
    stream = io.StringIO()
    bar = ProgressBar(1000, "verify", stream=stream)
    for done in range(1, 1001):
        bar.update(done)
    bar.finish()
    lines = stream.getvalue().splitlines()
    assert [_parse(line)["pct"] for line in lines] == [f"{p:.1f}" for p in (0.1, *range(10, 101, 10))]
    assert "\r" not in stream.getvalue()
    assert _parse(lines[-1])["tail"].startswith("took")


def test_finishing_short_of_the_total_counts_what_was_there():
    """Rows deleted during the walk: the finish shows 100% of the rows actually seen."""
    stream = io.StringIO()
    bar = ProgressBar(1000, "verify", stream=stream)
    bar.update(950)
    bar.finish()
    last = _parse(stream.getvalue().splitlines()[-1])
    assert (last["pct"], last["done"], last["total"], last["bar"]) == ("100.0", "950", "950", "#" * 30)
    assert last["tail"].startswith("took")


def test_a_terminal_gets_one_redrawn_line_ended_at_the_finish():
    stream = Terminal()
    bar = ProgressBar(100, "reindex", stream=stream)
    for done in range(1, 101):
        bar.update(done)  # far faster than 10 redraws a second: drawn once
    bar.finish()
    out = stream.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")
    frames = out[:-1].split("\r")[1:]
    assert len(frames) == 2, frames
    assert all(len(frame) >= 100 for frame in frames)  # padded over a longer previous frame
    assert _parse(frames[-1].rstrip())["pct"] == "100.0"


def test_an_empty_walk_is_complete():
    stream = io.StringIO()
    bar = ProgressBar(0, "verify", stream=stream)
    bar.finish()
    fields = _parse(stream.getvalue().strip())
    assert (fields["pct"], fields["done"], fields["total"]) == ("100.0", "0", "0")


def test_a_resumed_walk_counts_its_rate_from_where_it_resumed():
    bar = ProgressBar(1000, "reindex", stream=io.StringIO(), done=900)
    assert _parse(bar.line())["rate"] == "0"  # nothing done since the resume
    assert _parse(bar.line())["pct"] == "90.0"


def test_clock_format():
    assert [progress._clock(s) for s in (0, 59.6, 65, 3600, 3725)] == ["0:00", "1:00", "1:05", "1:00:00", "1:02:05"]
