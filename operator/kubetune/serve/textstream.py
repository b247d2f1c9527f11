"""Turning generated token ids into text pieces, and cutting the text at stop strings.

Pure and tokenizer-agnostic (a `decode` callable is injected), so it is tested without
a model. `Detokenizer` uses the offset scheme of text-generation-inference and vLLM:
each step decodes only a short window, not the whole completion, and holds text back
while it ends in U+FFFD (a byte-level BPE token can carry half a UTF-8 character), so
the pieces concatenate to the full decode. `StopScanner` holds back a tail that could
still grow into a stop string, so no piece of a stop string is ever sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT_CHAR = "\ufffd"


class Detokenizer:
    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the window decoded for context
        self._read_offset = 0  # end of what has been turned into text

    def push(self, token_id: int) -> str:
        """Add one token; return the new text it completes (maybe "")."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        if len(text) > len(prefix) and not text.endswith(REPLACEMENT_CHAR):
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
            return text[len(prefix) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return text[len(prefix) :]


class StopScanner:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Add generated text; return what is safe to emit. Sets `stopped` (and drops the
        stop string and everything after it) when one appears."""
        if self.stopped:
            return ""
        text = self._pending + piece
        found = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        if found:
            self.stopped = True
            self._pending = ""
            return text[: min(found)]
        hold = self._partial_stop_length(text)
        self._pending = text[len(text) - hold :]
        return text[: len(text) - hold]

    def flush(self) -> str:
        """The held-back tail once generation has ended without a stop string."""
        out, self._pending = ("" if self.stopped else self._pending), ""
        return out

    def _partial_stop_length(self, text: str) -> int:
        """Length of the longest end of `text` that begins some stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
