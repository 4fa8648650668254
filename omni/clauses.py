"""Cut a stream of text deltas into pieces worth speaking, as early as possible."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s")
_CLAUSE_END = re.compile(r"[,;:\u2014]\s")


def speakable_pieces(deltas: Iterable[str], first_clause_words: int = 3, max_words: int = 30) -> Iterator[str]:
    """Yield sentences from a text stream; the first piece may be just a clause.

    The first clause ("Sure, ...", "Hi Anna, ...") is spoken as soon as it is complete so that audio starts
    while the model is still writing; later pieces are whole sentences, which sound more natural. A very long
    sentence is cut at a comma so that the listener is never kept waiting.
    """
    buffer = ""
    first = True
    for delta in deltas:
        buffer += delta
        while True:
            cut = _cut(buffer, first, first_clause_words, max_words)
            if cut is None:
                break
            piece, buffer = buffer[:cut].strip(), buffer[cut:]
            if piece:
                first = False
                yield piece
    if buffer.strip():
        yield buffer.strip()


def _cut(text: str, first: bool, first_clause_words: int, max_words: int) -> int | None:
    sentence = _SENTENCE_END.search(text)
    if sentence:
        return sentence.end()
    if first or len(text.split()) > max_words:
        for clause in _CLAUSE_END.finditer(text):
            if len(text[: clause.end()].split()) >= first_clause_words:
                return clause.end()
    return None
