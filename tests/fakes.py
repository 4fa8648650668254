"""Fakes for the fast tier: a VAD that hears loudness, a speech model that replies from a script.

They stand in for Silero and the cascade where a test is about logic (turn-taking, speculation, barge-in, sessions,
the app's handlers), so that it runs in milliseconds. Every behaviour they fake is also tested with the real models.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from omni.audio import FRAME, SAMPLE_RATE
from omni.speech_model import Audio, Finished, Message, NoSpeechError, ReplyChunk, TextDelta, Transcript, Turn, WordsEnd
from utils.vad import SileroVad

LOUD = 0.3  # amplitude of the fake "speech": a tone


class LoudnessVad(SileroVad):
    """A VAD whose speech probability is 1 for a loud frame and 0 for a quiet one (RMS above 0.05)."""

    def load(self, path=None) -> LoudnessVad:
        return self

    def fork(self) -> LoudnessVad:
        return LoudnessVad()

    def __call__(self, frame: np.ndarray) -> float:
        if np.asarray(frame).size != FRAME:
            raise ValueError("one 512-sample frame at a time")
        return 1.0 if float(np.sqrt(np.mean(np.square(frame)))) > 0.05 else 0.0


def speech(seconds: float) -> np.ndarray:
    """Fake speech: a loud tone (16 kHz float32)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (LOUD * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), np.float32)


def chunks(audio: np.ndarray, seconds: float = 0.5) -> Iterator[np.ndarray]:
    step = int(seconds * SAMPLE_RATE)
    for i in range(0, audio.size, step):
        yield audio[i : i + step]


@dataclass
class ScriptedModel:
    """A `SpeechModel` that answers every turn with REPLY, word by word, DELAY_S apart, each sentence spoken as
    AUDIO_S of quiet audio. Its transcript names how long the turn was ("1.5 s of speech")."""

    reply: str = "Hello there. How are you?"
    delay_s: float = 0.0
    wait_s: float = 0.0  # before the transcript: as if the model were busy with someone else
    audio_s: float = 0.2
    name: str = "scripted"
    sample_rate: int = SAMPLE_RATE
    heard: list[int] = field(default_factory=list)  # the size of every turn answered
    listened: list[int] = field(default_factory=list)  # ... and of every draft heard ahead
    histories: list[list[Message]] = field(default_factory=list)
    running: int = 0  # replies being generated right now
    waiting: int = 0  # what `CascadeSession.waiting` would say: this conversation's place in line for the model
    words_end: float | None = None  # the reading after each transcript (None: it reads nothing) ...
    asks: bool = True  # ... of a question

    @property
    def reads_turn_end(self) -> bool:
        return self.words_end is not None

    def session(self) -> ScriptedModel:
        return self

    def listen(
        self, audio: np.ndarray, sample_rate: int, history: Sequence[Message], breaks: Sequence[int] = ()
    ) -> WordsEnd | None:
        self.listened.append(audio.size)
        return None if self.words_end is None else WordsEnd(self.words_end, self.asks)

    def respond(
        self, audio: np.ndarray, sample_rate: int, history: Sequence[Message], breaks: Sequence[int] = ()
    ) -> Iterator[ReplyChunk]:
        loud = np.flatnonzero(np.abs(audio) > LOUD / 2)
        if not loud.size:
            raise NoSpeechError("No words were heard.")
        self.heard.append(audio.size)
        self.histories.append(list(history))
        transcript = f"{(loud[-1] - loud[0]) / sample_rate:.1f} s of speech"  # from the first loud sample to the last
        self.running += 1
        try:
            time.sleep(self.wait_s)
            yield Transcript(transcript)
            if self.words_end is not None:
                yield WordsEnd(self.words_end, self.asks)
            said = ""
            for word in self.reply.split(" "):
                time.sleep(self.delay_s)
                piece = word + " "
                said += piece
                yield TextDelta(piece)
                if word.endswith((".", "?", "!")):
                    yield Audio(np.zeros(int(self.audio_s * self.sample_rate), np.int16), said.strip())
                    said = ""
            yield Finished(Turn(transcript, self.reply, {"first_audio_ms": 0.0}))
        finally:
            self.running -= 1
