"""The default speech model: Whisper -> llama.cpp chat model -> piper, streamed clause by clause.

The language model writes in a thread of its own while the main generator turns finished clauses into
speech, so the first clause is heard while the rest of the answer is still being written.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from omni.asr import AsrOptions, Transcriber
from omni.audio import SAMPLE_RATE, prepare
from omni.clauses import speakable_pieces
from omni.llm import ChatModel, LlmOptions
from omni.speech_model import Message, NoSpeechError, ReplyChunk, Turn
from omni.tts import Speaker

_END = object()  # marks the end of the language model's stream in the queue


@dataclass
class CascadeOptions:
    asr: str = os.environ.get("OMNI_ASR", "whisper-base")
    llm: str = os.environ.get("OMNI_LLM", "qwen2.5-1.5b")
    tts: str = os.environ.get("OMNI_TTS", "piper-joe")
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

    @classmethod
    def load(
        cls,
        options: CascadeOptions | None = None,
        asr_options: AsrOptions | None = None,
        llm_options: LlmOptions | None = None,
    ) -> "Cascade":
        options = options or CascadeOptions()
        return cls(
            Transcriber(options.asr, asr_options),
            ChatModel(options.llm, llm_options),
            Speaker.load(options.tts),
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

    def transcribe(self, audio: np.ndarray) -> str:
        with self._asr_lock:
            return self.asr.transcribe(audio)

    def respond(self, audio: np.ndarray, sample_rate: int, history: Sequence[Message]) -> Iterator[ReplyChunk]:
        start = time.perf_counter()
        timings: dict[str, float] = {}

        def mark(name: str) -> None:
            timings.setdefault(name, (time.perf_counter() - start) * 1000)

        transcript = self.transcribe(prepare(audio, sample_rate))
        mark("asr_ms")
        if not transcript:
            raise NoSpeechError("No words were heard.")
        yield ReplyChunk(transcript=transcript)

        deltas: queue.Queue = queue.Queue()
        stop = threading.Event()
        writer = threading.Thread(target=self._write, args=(history, transcript, deltas, stop), daemon=True)
        writer.start()

        reply: list[str] = []
        spoken_s = synth_s = 0.0

        def text_stream() -> Iterator[str]:
            while (delta := deltas.get()) is not _END:
                if isinstance(delta, BaseException):
                    raise delta
                mark("first_token_ms")
                reply.append(delta)
                yield delta

        try:
            for piece in speakable_pieces(text_stream(), self.options.first_clause_words):
                yield ReplyChunk(text=piece)
                t = time.perf_counter()
                for pcm in self.tts.synthesize(piece):
                    mark("first_audio_ms")
                    synth_s += time.perf_counter() - t
                    spoken_s += len(pcm) / self.sample_rate
                    yield ReplyChunk(audio=pcm)
                    t = time.perf_counter()
        finally:
            stop.set()  # a closed generator (cancelled turn) stops the language model within one token
        mark("total_ms")
        tokens = len(reply)
        gen_s = (timings["total_ms"] - timings.get("first_token_ms", timings["total_ms"])) / 1000
        timings["tokens"] = tokens
        timings["tokens_per_s"] = (tokens - 1) / gen_s if tokens > 1 and gen_s > 0 else 0.0
        timings["tts_rtf"] = synth_s / spoken_s if spoken_s else 0.0
        yield ReplyChunk(turn=Turn(transcript, "".join(reply).strip(), timings))

    def _write(self, history: Sequence[Message], transcript: str, deltas: queue.Queue, stop: threading.Event) -> None:
        try:
            with self._llm_lock:
                for delta in self.llm.stream(history, transcript):
                    if stop.is_set():
                        break
                    deltas.put(delta)
        except Exception as e:  # noqa: BLE001 - handed to the consumer, which raises it in the caller's thread
            deltas.put(e)
        deltas.put(_END)
