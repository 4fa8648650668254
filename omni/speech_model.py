"""The one streaming interface every speech-in -> speech-out model implements.

A model hears one user turn (mono float32 PCM) plus the text history of the conversation and yields
`ReplyChunk`s as soon as each piece exists: first the `Transcript` of what the user said, then the reply's
`TextDelta`s and `Audio`, interleaved, and finally `Finished` with the finished `Turn`. Each kind of chunk is a
type of its own; readers `match` on them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias, TypedDict, runtime_checkable

import numpy as np


class Message(TypedDict):
    """One entry of the text history, in the OpenAI/Gradio "messages" shape."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass
class Turn:
    """What one exchange leaves behind for the history and for latency reports."""

    transcript: str
    reply_text: str
    # Milliseconds from the moment `respond` was called: asr_ms, first_token_ms, first_audio_ms, total_ms, ...
    timings: dict[str, float] = field(default_factory=dict)

    def messages(self) -> list[Message]:
        return [
            {"role": "user", "content": self.transcript},
            {"role": "assistant", "content": self.reply_text},
        ]


@dataclass(frozen=True)
class Transcript:
    """The user's words, once known: the first chunk of a reply."""

    text: str


@dataclass(frozen=True)
class TextDelta:
    """The next piece of the reply's text."""

    text: str


@dataclass(frozen=True, eq=False)
class Audio:
    """The next piece of the reply's speech: mono int16 PCM at `SpeechModel.sample_rate`.

    `words`, where the model knows them: the words this audio starts to say ("" = more of the same words). They let
    an interrupted reply be cut to what the user actually heard."""

    pcm: np.ndarray
    words: str | None = None


@dataclass(frozen=True)
class WordsEnd:
    """A model's reading of the user's words (`reads_turn_end`): its probability that they end where the transcript
    does, and whether they ask something (a question: the answer is wanted now; a statement may be the preamble to
    one). Returned by `listen`, and a chunk of `respond` right after the transcript; the conversation's pause
    detector uses it, readers of a reply never see it."""

    probability: float
    asks: bool = True


@dataclass(frozen=True)
class Finished:
    """The last chunk of a reply: the finished exchange."""

    turn: Turn


@dataclass(frozen=True)
class Heartbeat:
    """Nothing new yet: the model is waiting for its turn or quiet (it lets a reader cancel, or say "you are next")."""


# A piece of a reply, one of the types above.
ReplyChunk: TypeAlias = Transcript | TextDelta | Audio | WordsEnd | Finished | Heartbeat


class NoSpeechError(ValueError):
    """The audio holds no words to answer (silence, noise, an empty transcript)."""


@runtime_checkable
class SpeechModel(Protocol):
    """A speech-in -> speech-out model (the cascade, or mini-omni)."""

    name: str
    sample_rate: int  # of the reply audio
    # True: `respond` follows the transcript with a `WordsEnd` chunk, the model's reading of whether the user has
    # finished, which lets the pause detector end a finished turn after ~1/4 s of silence.
    reads_turn_end: bool

    def session(self) -> SpeechModel:
        """The model for one conversation: what it keeps between turns (caches) is that conversation's own.

        Returning self is correct for a model that keeps nothing between calls."""
        ...

    def respond(
        self, audio: np.ndarray, sample_rate: int, history: Sequence[Message], breaks: Sequence[int] = ()
    ) -> Iterator[ReplyChunk]:
        """Answer one user turn. `audio` is mono float32 in [-1, 1]; raises NoSpeechError for nothing to answer.

        `breaks` are sample indices in `audio` where the speaker paused and went on (`PauseDetector.phrase_breaks`):
        the words before each one are finished, so a model may transcribe each phrase once. Ignoring them is correct.
        Closing the iterator early (generator.close()) must stop all work promptly: it is how a turn is cancelled.
        """
        ...

    def listen(
        self, audio: np.ndarray, sample_rate: int, history: Sequence[Message], breaks: Sequence[int] = ()
    ) -> WordsEnd | None:
        """Get ready to answer a turn still under way: `audio` is what the user has said so far (`breaks` as above).

        Called again and again while they speak (never while `respond` runs for the same conversation); the work
        it does ahead, such as transcribing, shortens the `respond` that follows. Doing nothing is correct.
        A model that `reads_turn_end` returns its reading of the words in `audio` (`WordsEnd`). It may also offer
        `write_ahead(stop)`, which the conversation calls when that reading says the words are finished: start the
        answer to them until `stop()` (`omni.cascade.CascadeSession.write_ahead`).
        """
        ...
