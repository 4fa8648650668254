"""Cut a stream of text deltas into pieces worth speaking, as early as possible."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s")
_CLAUSE_END = re.compile(r"[,;:\u2014]\s")


class ClauseSplitter:
    """Push text deltas, get back the pieces that are ready to be spoken.

    The first clause ("Sure, ...", "Hi Anna, ...") is released as soon as it is complete so that audio starts
    while the model is still writing; later pieces are whole sentences, which sound more natural. A very long
    sentence is cut at a comma so that the listener is never kept waiting.
    """

    def __init__(self, first_clause_words: int = 3, max_words: int = 30):
        self.first_clause_words = first_clause_words
        self.max_words = max_words
        self._buffer = ""
        self._first = True

    def push(self, delta: str) -> list[str]:
        self._buffer += delta
        pieces = []
        while (cut := self._cut()) is not None:
            piece, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            if piece:
                self._first = False
                pieces.append(piece)
        return pieces

    def flush(self) -> list[str]:
        piece, self._buffer = self._buffer.strip(), ""
        return [piece] if piece else []

    def _cut(self) -> int | None:
        text = self._buffer
        if sentence := _SENTENCE_END.search(text):
            return sentence.end()
        if self._first or len(text.split()) > self.max_words:
            for clause in _CLAUSE_END.finditer(text):
                if len(text[: clause.end()].split()) >= self.first_clause_words:
                    return clause.end()
        return None
