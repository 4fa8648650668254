"""Reply on pause: hear microphone chunks, notice the end of the user's turn, answer, remember.

This is the one code path that the app, the CLI-style benchmark and the tests share. Its trick for speed is
speculation: the moment the pause detector reports a pause (speech stopped for `pause_ms`), the answer to what
was said so far starts in the background. If the user goes on talking it is thrown away; if the pause becomes
the end of the turn (`end_of_turn_ms`), the answer is already under way, often with audio ready.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from omni.audio import SAMPLE_RATE
from omni.speech_model import Message, ReplyChunk, SpeechModel
from utils.vad import PauseDetector, PauseDetectorOptions, SileroVad, VadEvent

_DONE = object()


@dataclass
class ConversationOptions:
    speculate: bool = True  # start answering at the first pause; drop it if the user resumes
    pre_roll_ms: int = 300  # audio kept before the detected start of speech (soft onsets)
    post_roll_ms: int = 200  # and after its end (soft endings), all of it already heard by then


class BackgroundReply:
    """A reply generated in a thread of its own, its chunks buffered until someone reads them.

    `cancel` is honoured between two chunks (the cascade yields every token), after which the model's generator
    is closed, which stops its work.
    """

    def __init__(self, chunks: Iterator[ReplyChunk]):
        self._chunks = chunks
        self.started_at = time.perf_counter()
        self._queue: queue.Queue = queue.Queue()
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for chunk in self._chunks:
                if self._cancelled.is_set():
                    break
                self._queue.put(chunk)
        except BaseException as e:  # noqa: BLE001 - re-raised in the reader's thread
            self._queue.put(e)
        finally:
            self._chunks.close()  # type: ignore[attr-defined]
            self._queue.put(_DONE)

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the model to stop; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def chunks(self, heartbeat_s: float | None = None) -> Iterator[ReplyChunk]:
        """The reply's chunks as they come; with HEARTBEAT_S, an empty ReplyChunk() whenever none came for that long."""
        while not self._cancelled.is_set():
            try:
                item = self._queue.get(timeout=heartbeat_s)
            except queue.Empty:
                yield ReplyChunk()
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __iter__(self) -> Iterator[ReplyChunk]:
        return self.chunks()


class Conversation:
    """One person's conversation with a speech model: turn-taking state plus the text history."""

    def __init__(
        self,
        model: SpeechModel,
        vad_options: PauseDetectorOptions | None = None,
        options: ConversationOptions | None = None,
        vad: SileroVad | None = None,
    ):
        self.model = model
        self.options = options or ConversationOptions()
        self.detector = PauseDetector(vad_options, vad)
        self.history: list[Message] = []
        self._speculation: BackgroundReply | None = None
        self._reply: BackgroundReply | None = None
        self._lock = threading.Lock()

    def hear(self, audio: np.ndarray, sample_rate: int) -> list[VadEvent]:
        """Feed a microphone chunk; returns what the pause detector noticed in it."""
        with self._lock:
            events = self.detector.feed(audio, sample_rate)
            for event in events:
                if event.kind == "pause" and self.options.speculate and not self.detector.turn_ended:
                    self._speculate(event)
                elif event.kind == "resume" and self._speculation:
                    self._speculation.cancel()  # they went on talking: that answer is for a question not asked
                    self._speculation = None
            return events

    @property
    def reply_started_at(self) -> float | None:
        """perf_counter() time when the reply being read began (earlier than the end of turn if speculated)."""
        return self._reply.started_at if self._reply else None

    @property
    def turn_ended(self) -> bool:
        return self.detector.turn_ended

    def turn_audio(self, speech_end: int | None = None) -> np.ndarray:
        """The user's words in the current turn (16 kHz mono float32), with a little margin either side."""
        detector = self.detector
        if detector.speech_start is None:
            return np.zeros(0, dtype=np.float32)
        end = detector.speech_end if speech_end is None else speech_end
        start = max(0, detector.speech_start - self.options.pre_roll_ms * SAMPLE_RATE // 1000)
        end = min(detector.samples_fed, (end or detector.samples_fed) + self.options.post_roll_ms * SAMPLE_RATE // 1000)
        return np.array(detector.audio[start:end])

    def _speculate(self, pause: VadEvent) -> None:
        if self._speculation:
            self._speculation.cancel()
        chunks = self.model.respond(self.turn_audio(pause.sample), SAMPLE_RATE, list(self.history))
        self._speculation = BackgroundReply(chunks)

    def reply(self, heartbeat_s: float | None = None) -> Iterator[ReplyChunk]:
        """Answer the turn that just ended (or whatever was heard so far), then listen for the next one.

        Raises `NoSpeechError` when there was nothing to answer. The finished exchange is added to the history;
        a cancelled one is not (see `cancel`). With HEARTBEAT_S, an empty chunk comes whenever the model has
        been quiet that long (a streaming output may need a nudge to pass on what it holds).
        """
        with self._lock:
            reply = self._speculation
            self._speculation = None
            if reply is None:
                reply = BackgroundReply(self.model.respond(self.turn_audio(), SAMPLE_RATE, list(self.history)))
            self._reply = reply
            self.detector.reset()  # the next turn starts now
        try:
            for chunk in reply.chunks(heartbeat_s):
                if chunk.turn is not None:
                    self.history.extend(chunk.turn.messages())
                yield chunk
        finally:
            reply.cancel()
            with self._lock:
                if self._reply is reply:
                    self._reply = None

    def cancel(self) -> None:
        """Stop whatever is being generated and forget the turn in progress (the history is kept)."""
        with self._lock:
            for reply in (self._speculation, self._reply):
                if reply:
                    reply.cancel()
            self._speculation = self._reply = None
            self.detector.reset()

    def clear(self) -> None:
        self.cancel()
        self.history.clear()
