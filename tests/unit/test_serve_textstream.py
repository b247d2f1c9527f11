"""Incremental detokenisation and stop strings, with a byte-level fake tokenizer."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from kubetune.serve.textstream import Detokenizer, StopScanner

# Token id -> bytes, like a byte-level BPE: "é" (c3 a9) and "😀" (f0 9f 98 80) are
# split across tokens, as a real byte-level vocabulary does for rare characters.
VOCAB = {
    1: b"Hello",
    2: b" world",
    3: b" caf",
    4: b"\xc3",
    5: b"\xa9",
    6: b" \xf0\x9f",
    7: b"\x98",
    8: b"\x80",
    9: b"!",
}


def decode(ids: Sequence[int]) -> str:
    return b"".join(VOCAB[i] for i in ids).decode("utf-8", errors="replace")


def pieces_of(ids: list[int]) -> list[str]:
    d = Detokenizer(decode)
    out = [d.push(i) for i in ids]
    out.append(d.flush())
    return out


@pytest.mark.parametrize(
    "ids",
    [
        pytest.param([1, 2, 9], id="ascii"),
        pytest.param([1, 3, 4, 5, 9], id="two-byte-char-split"),
        pytest.param([1, 6, 7, 8, 2], id="four-byte-char-split"),
        pytest.param([1, 3, 4], id="ends-mid-character"),
    ],
)
def test_pieces_add_up_to_the_full_decode(ids):
    assert "".join(pieces_of(ids)) == decode(ids)


def test_half_a_character_is_held_back_not_sent_as_replacement():
    pieces = pieces_of([1, 3, 4, 5, 9])
    assert pieces == ["Hello", " caf", "", "é", "!", ""]
    assert all("\ufffd" not in p for p in pieces)


def feed_all(scanner: StopScanner, parts: list[str]) -> str:
    return "".join(scanner.feed(p) for p in parts) + scanner.flush()


def test_stop_string_split_across_pieces_is_cut_and_never_sent():
    scanner = StopScanner(["###"])
    sent = [scanner.feed(p) for p in ["one #", "#", "# two"]]
    assert sent == ["one ", "", ""]
    assert scanner.stopped
    assert scanner.flush() == ""


def test_partial_stop_prefix_is_released_when_it_does_not_complete():
    scanner = StopScanner(["END"])
    assert scanner.feed("the EN") == "the "
    assert scanner.feed("D") == ""
    assert scanner.stopped
    other = StopScanner(["END"])
    assert feed_all(other, ["the EN", "dless", " E"]) == "the ENdless E"
    assert not other.stopped


def test_earliest_of_several_stops_wins():
    scanner = StopScanner(["b", "xyz", "a"])
    assert scanner.feed("..xyz..a..b") == ".."
    assert scanner.feed("more") == ""


def test_without_stops_everything_passes_through():
    assert feed_all(StopScanner([]), ["a", "b"]) == "ab"
