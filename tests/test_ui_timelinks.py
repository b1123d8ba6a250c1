"""Times written in chat text become seek links; everything else in model output stays inert text."""

from __future__ import annotations

import re

import pytest

from longwatch.app.ui.timelinks import find_times, format_clock, linkify


@pytest.mark.parametrize("text, seconds", [
    ("the sign changed at 01:30.", [90.0]),
    ("at 1:02:03 the door opens", [3723.0]),
    ("around 95.5 s and again at 12 sec", [95.5, 12.0]),
    ("about 3 minutes in", [180.0]),
    ("the patch <95.5 seconds> shows a car", [95.5]),
    ("from 00:12 to 00:16", [12.0, 16.0]),
    ("between 5s and 7 seconds", [5.0, 7.0]),
])
def test_every_time_format_the_model_writes_is_found(text, seconds):
    assert [t.seconds for t in find_times(text)] == seconds


@pytest.mark.parametrize("text", ["a 16:9 screen", "version 3.5", "5 apples", "1080p", "ratio 4:3", "10 m away"])
def test_numbers_that_are_not_times_are_left_alone(text):
    assert find_times(text) == []


def test_linkify_wraps_each_time_in_a_seek_link_and_keeps_the_wording():
    out = linkify("It said OPEN at 00:12 and CLOSED <20.5 seconds>.")
    links = re.findall(r'<a class="lw-seek" href="#t=([\d.]+)"[^>]*>([^<]*)</a>', out)
    assert links == [("12.00", "00:12"), ("20.50", "&lt;20.5 seconds&gt;")]
    assert out.startswith("It said OPEN at ") and out.endswith(".")


def test_model_output_cannot_inject_markup():
    out = linkify('<img src=x onerror="alert(1)"> at 00:05 <script>x()</script>')
    assert "<img" not in out and "<script" not in out and "&lt;script&gt;" in out
    assert out.count("<a ") == 1


def test_format_clock_matches_the_player_display():
    assert format_clock(0) == "00:00"
    assert format_clock(95.7) == "01:35"
    assert format_clock(3723) == "1:02:03"
    assert format_clock(-3) == "00:00"
