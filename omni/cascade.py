"""The default speech model: Whisper -> llama.cpp chat model -> piper, streamed clause by clause.

Each finished clause is spoken as soon as the language model has written it, so the first clause is heard
while the rest of the answer is still being written.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from omni.asr import AsrOptions, Transcriber
from omni.audio import SAMPLE_RATE, prepare
from omni.clauses import ClauseSplitter
from omni.llm import ChatModel, LlmOptions
from omni.memory import release_freed_memory
from omni.speech_model import Message, NoSpeechError, ReplyChunk, Turn
from omni.tts import Speaker

@dataclass
class Phrase:
    """A stretch of the user's turn and its transcript, kept so that no audio is transcribed twice."""

    audio: np.ndarray
    transcript: str

    def covers(self, audio: np.ndarray) -> bool:
        """True when AUDIO is the start of this phrase's audio: what follows it was silence (the caller cuts a turn
        at the end of its speech, a phrase in the middle of a pause), so this transcript is AUDIO's."""
        return 0 < audio.size <= self.audio.size and np.array_equal(audio, self.audio[: audio.size])


@dataclass
class CascadeOptions:
    # Read when the options are made, so that the CLIs' flags (which set these variables) count.
    asr: str = field(default_factory=lambda: os.environ.get("OMNI_ASR", "whisper-base"))
    llm: str = field(default_factory=lambda: os.environ.get("OMNI_LLM", "qwen2.5-1.5b"))
    tts: str = field(default_factory=lambda: os.environ.get("OMNI_TTS", "piper-joe"))
    first_clause_words: int = 3  # the first clause is spoken once it is this long


class Cascade:
    """Speech in -> text -> text -> speech out, behind the `SpeechModel` interface."""

    name = "cascade"

    def __init__(self, asr: Transcriber, llm: ChatModel, tts: Speaker, options: CascadeOptions | None = None):
        self.asr, self.llm, self.tts = asr, llm, tts
        self.options = options or CascadeOptions()
        self.sample_rate = tts.sample_rate
        # One llama.cpp context and one Whisper model serve every conversation: take turns.
        self._asr_lock = threading.Lock()
        self._llm_lock = threading.Lock()
        self._heard: list[Phrase] = []  # the phrases of the latest turn heard, for all conversations

    @classmethod
    def load(
        cls,
        options: CascadeOptions | None = None,
        asr_options: AsrOptions | None = None,
        llm_options: LlmOptions | None = None,
    ) -> "Cascade":
        from omni.remote import chat_model_from_env, speaker_from_env, transcriber_from_env  # OMNI_*_URL

        options = options or CascadeOptions()
        return cls(
            transcriber_from_env(asr_options) or Transcriber(options.asr, asr_options),
            chat_model_from_env(llm_options) or ChatModel(options.llm, llm_options),
            speaker_from_env() or Speaker.load(options.tts),
            options,
        )

    @property
    def description(self) -> str:
        return f"{self.asr.name} -> {self.llm.name} -> {self.tts.name}"

    def warm_up(self) -> None:
        """Run each model once so that the first user turn does not pay for lazy initialisation."""
        self.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32))
        with self._llm_lock:
            self.llm.warm_up()
        for _ in self.tts.synthesize("Hello."):
            pass
        release_freed_memory()

    def transcribe(self, audio: np.ndarray) -> str:
        with self._asr_lock:
            return self.asr.transcribe(audio)

    def listen(
        self, audio: np.ndarray, sample_rate: int, history: Sequence[Message], breaks: Sequence[int] = ()
    ) -> None:
        """Transcribe the turn so far and evaluate the prompt that answers it: if the user stops here, `respond`
        finds both done and starts writing at once; if they go on, it reuses the prompt up to the new words."""
        transcript = self._transcribe_turn(audio, sample_rate, breaks)
        if transcript:
            with self._llm_lock:
                self.llm.prefill(history, transcript)

    def _transcribe_turn(self, audio: np.ndarray, sample_rate: int, breaks: Sequence[int]) -> str:
        """The transcript of a turn (so far), phrase by phrase between the BREAKS where the speaker paused.

        A phrase already heard by an earlier call (checked by content: one cascade serves every conversation) is
        not transcribed again, so each call only transcribes the words since the last pause, however long the
        turn. Whisper hears a finished phrase whole, with the silence around it, so this costs no accuracy.
        """
        audio = prepare(audio, sample_rate)
        cuts = [c for c in (round(b * SAMPLE_RATE / sample_rate) for b in breaks) if 0 < c < audio.size]
        with self._asr_lock:
            known, heard = self._heard, []
            for i, piece in enumerate(np.split(audio, cuts)):
                phrase = known[i] if i < len(known) and known[i].covers(piece) else None
                heard.append(phrase or Phrase(piece, self.asr.transcribe(piece)))
            self._heard = heard
        return " ".join(p.transcript for p in heard if p.transcript)

    def respond(
        self, audio: np.ndarray, sample_rate: int, history: Sequence[Message], breaks: Sequence[int] = ()
    ) -> Iterator[ReplyChunk]:
        start = time.perf_counter()
        timings: dict[str, float] = {}

        def mark(name: str) -> None:
            timings.setdefault(name, (time.perf_counter() - start) * 1000)

        transcript = self._transcribe_turn(audio, sample_rate, breaks)
        mark("asr_ms")
        if not transcript:
            raise NoSpeechError("No words were heard.")
        yield ReplyChunk(transcript=transcript)

        reply: list[str] = []
        splitter = ClauseSplitter(self.options.first_clause_words)
        synth_s = spoken_s = writing_s = 0.0

        def speak(pieces: list[str]) -> Iterator[ReplyChunk]:
            nonlocal synth_s, spoken_s
            for piece in pieces:
                t = time.perf_counter()
                for i, pcm in enumerate(self.tts.synthesize(piece)):
                    mark("first_audio_ms")
                    synth_s += time.perf_counter() - t
                    spoken_s += len(pcm) / self.sample_rate
                    yield ReplyChunk(audio=pcm, spoken="" if i else piece)
                    t = time.perf_counter()

        # Writing and speaking take turns in this one thread: on two cores, llama.cpp's two threads and piper
        # running side by side slowed generation from ~24 to ~11 tokens/s, and both stay far ahead of playback.
        with self._llm_lock:
            deltas = self.llm.stream(history, transcript)
            try:
                t = time.perf_counter()
                for delta in deltas:
                    mark("first_token_ms")
                    if reply:  # time per token after the first, without the speaking in between
                        writing_s += time.perf_counter() - t
                    reply.append(delta)
                    # Every token is yielded: the caller sees the text grow, and can cancel between tokens.
                    yield ReplyChunk(text=delta)
                    yield from speak(splitter.push(delta))
                    t = time.perf_counter()
            finally:
                deltas.close()  # a closed reply (a cancelled turn) stops llama.cpp here, within one token
        yield from speak(splitter.flush())
        mark("total_ms")
        release_freed_memory()
        timings["tokens"] = len(reply)
        timings["tokens_per_s"] = (len(reply) - 1) / writing_s if writing_s > 0 else 0.0
        timings["tts_rtf"] = synth_s / spoken_s if spoken_s else 0.0
        yield ReplyChunk(turn=Turn(transcript, "".join(reply).strip(), timings))
