"""Cut a stream of text deltas into pieces worth speaking, as early as possible."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s")
# A sentence that ends where the text so far ends: "?" or "!", or a full stop after a lower-case word ("Paris.", not
# "3." of "3.5", "Dr." or "U.S."). Cut there at once instead of when the next token brings its space: the first
# clause is spoken one token (~55 ms with a browser on the machine) sooner.
_SENTENCE_END_NOW = re.compile(r"(?:[!?]|(?<=[a-z]{2})\.)[\"')\]]*$")
# "Mrs. Smith", "Acme Inc. makes": the sentence goes on.
_ABBREVIATIONS = frozenset(["mrs", "ms", "vs", "prof", "approx", "etc", "inc", "ltd", "corp"])
_CLAUSE_END = re.compile(r"[,;:\u2014]\s")
# Words a spoken phrase naturally starts with: a first sentence with no comma is cut before one of them
# ("The birch canoe slid smoothly | on the smooth planks.") so its first half is heard while the rest is written.
_PHRASE_STARTS = frozenset(
    [
        *("and", "or", "but", "so", "because"),
        *("on", "in", "at", "with", "for", "to", "from", "of", "about", "like"),
        *("is", "are", "was", "were", "could", "would", "should", "can", "will"),
    ]
)


class ClauseSplitter:
    """Push text deltas, get back the pieces that are ready to be spoken.

    The first clause ("Sure, ...", "Hi Anna, ...") is released as soon as it is complete so that audio starts
    while the model is still writing; a long first sentence without a comma is cut before a word that starts a
    phrase. Later pieces are whole sentences, which sound more natural. A very long sentence is cut at a comma so
    that the listener is never kept waiting.
    """

    def __init__(self, first_clause_words: int = 3, max_words: int = 30, first_phrase_words: int = 5):
        self.first_clause_words = first_clause_words
        self.first_phrase_words = first_phrase_words
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
        if _SENTENCE_END_NOW.search(text) and text.split()[-1].rstrip(".\"')]").lower() not in _ABBREVIATIONS:
            return len(text)
        if self._first or len(text.split()) > self.max_words:
            for clause in _CLAUSE_END.finditer(text):
                if len(text[: clause.end()].split()) >= self.first_clause_words:
                    return clause.end()
        if self._first:
            return self._phrase_cut(text)
        return None

    def _phrase_cut(self, text: str) -> int | None:
        """Where to cut a long first sentence without punctuation: before a phrase-starting word."""
        words = list(re.finditer(r"\S+\s", text))  # complete words only (followed by a space)
        for i, word in enumerate(words):
            if i >= self.first_phrase_words and word.group().strip().lower() in _PHRASE_STARTS:
                return word.start()
        return None
