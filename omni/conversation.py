"""Reply on pause: hear microphone chunks, notice the end of the user's turn, answer, remember.

This is the one code path that the app, the CLI-style benchmark and the tests share. Its tricks for speed:
- listening ahead: while the user speaks, the model transcribes what it has heard so far and prepares its
  prompt (`SpeechModel.listen`), so that little is left to do once they stop. Where the user paused and went on
  (`phrase_breaks`), the words before are finished: the model may transcribe each phrase once;
- speculation: the moment the pause detector reports a pause (speech stopped for `pause_ms`), the answer to what
  was said so far starts in the background. If the user goes on talking it is thrown away; if the pause becomes
  the end of the turn (`end_of_turn_ms`), the answer is already under way, often with audio ready.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from omni.audio import FRAME, SAMPLE_RATE
from omni.speech_model import (
    Audio,
    Finished,
    Heartbeat,
    Message,
    ReplyChunk,
    SpeechModel,
    TextDelta,
    Transcript,
    WordsEnd,
)
from utils.turn import SmartTurn
from utils.vad import PauseDetector, PauseDetectorOptions, SileroVad, VadEvent

log = logging.getLogger(__name__)

_DONE = object()
# Silero reports silence 70-350 ms after the last sound (tests/data/turns): listening ahead on audio that ended up to
# this long before the silence Silero reports has heard every word, and its reading of them counts.
READ_SLACK = 5 * FRAME


@dataclass
class ConversationOptions:
    speculate: bool = True  # start answering at the first pause; drop it if the user resumes
    # ... or when a chunk ends this far into a silence: the pause (`pause_ms`) would show only in the next chunk,
    # 0.5 s later. On our recordings at four chunk alignments (216 runs), a chunk ended 64-191 ms into the turn's
    # last silence in 53 runs, and 5 times into a silence that did not become a pause (32 ms: 62 and 10). None:
    # only at a pause.
    speculate_in_silence_ms: float | None = 64.0
    # When listening ahead reads the words so far as finished (the end-of-turn policy's `text_complete`), the model
    # may write the start of its answer before the pause shows (`write_ahead`, if it has it): the answer at the pause
    # goes on from there if it heard the same words.
    write_ahead: bool = True
    listen_ahead: bool = True  # while the user speaks, let the model transcribe and prepare (SpeechModel.listen)
    # Full duplex: keep listening while the reply is spoken and stop it when the user talks over it (with the
    # pause detector's stricter barge-in start). Off: the guide's half duplex, nobody listens meanwhile.
    barge_in: bool = False
    pre_roll_ms: int = 300  # audio kept before the detected start of speech (soft onsets)
    post_roll_ms: int = 200  # and after its end (soft endings), all of it already heard by then


class BackgroundReply:
    """A reply generated in a thread of its own, its chunks buffered until someone reads them.

    `cancel` is honoured between two chunks (the cascade yields every token), after which the model's generator
    is closed, which stops its work. `hold` pauses it between two chunks, for a while.
    """

    def __init__(self, chunks: Iterator[ReplyChunk], observe: Callable[[ReplyChunk], None] | None = None):
        self._chunks = chunks
        self._observe = observe  # sees each chunk as it is made, before anyone reads it
        self.started_at = time.perf_counter()
        self._queue: queue.Queue = queue.Queue()
        self._cancelled = threading.Event()
        self._going = threading.Event()
        self._going.set()
        self._held_until = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for chunk in self._chunks:
                if not self._going.is_set():
                    self._going.wait(max(0.0, self._held_until - time.monotonic()))
                    self._going.set()
                if self._cancelled.is_set():
                    break
                if self._observe:
                    self._observe(chunk)
                self._queue.put(chunk)
        except BaseException as e:  # noqa: BLE001 - re-raised in the reader's thread
            self._queue.put(e)
        finally:
            self._chunks.close()  # type: ignore[attr-defined]
            self._queue.put(_DONE)

    def cancel(self) -> None:
        self._cancelled.set()
        self._going.set()

    def hold(self, seconds: float) -> None:
        """Make nothing more for up to SECONDS (until `release`, `cancel`, or the time is up)."""
        self._held_until = time.monotonic() + seconds
        self._going.clear()

    def release(self) -> None:
        self._going.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the model to stop; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def chunks(self, heartbeat_s: float | None = None) -> Iterator[ReplyChunk]:
        """The reply's chunks as they come; with HEARTBEAT_S, a `Heartbeat` whenever none came for that long."""
        while not self._cancelled.is_set():
            try:
                item = self._queue.get(timeout=heartbeat_s)
            except queue.Empty:
                yield Heartbeat()
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __iter__(self) -> Iterator[ReplyChunk]:
        return self.chunks()


# How a cut-off reply ends in the history the model sees: what was heard, then this. Not a bracketed note such as
# "[interrupted by the user]": the model copied that into its next replies, where it was read aloud and shown.
INTERRUPTED = "\u2026"


@dataclass
class SpokenReply:
    """What the current (or latest) reply said out loud, to keep only what was heard if it is interrupted."""

    transcript: str = ""
    text: str = ""
    segments: list[tuple[float, str]] = field(default_factory=list)  # (seconds of audio, the words in it)
    first_audio_at: float | None = None  # perf_counter() when its first audio was handed on
    in_history: bool = False
    heard: str | None = None  # once interrupted: the words the user heard

    def add_audio(self, seconds: float, words: str | None) -> None:
        if words or not self.segments:
            self.segments.append((seconds, words or ""))
        else:  # more audio of the same words
            last_seconds, last_words = self.segments[-1]
            self.segments[-1] = (last_seconds + seconds, last_words)

    def heard_text(self, heard_s: float) -> str:
        """The reply's words within its first HEARD_S seconds of audio (a cut piece keeps a share of its words)."""
        if not any(words for _, words in self.segments):  # the model did not say which audio says what
            total = sum(seconds for seconds, _ in self.segments) or 1.0
            words = self.text.split()
            return " ".join(words[: round(len(words) * min(1.0, heard_s / total))])
        kept, start = [], 0.0
        for seconds, words in self.segments:
            if start + seconds <= heard_s:
                kept.append(words)
            elif heard_s > start:
                part = words.split()
                kept.append(" ".join(part[: int(len(part) * (heard_s - start) / seconds)]))
            start += seconds
        return " ".join(k for k in kept if k)


@dataclass
class EndedTurn:
    """A turn the pause detector has ended, kept for its reply while the detector already hears the next one."""

    audio: np.ndarray  # the user's words with a little margin either side (16 kHz mono float32)
    breaks: list[int]  # where they paused and went on: sample indices into `audio`
    speech_start: int  # where speech began and ended, in the detector's stream before it was reset
    speech_end: int
    verdict: tuple[float | None, WordsEnd | None] = (None, None)  # what smart-turn heard and the model read at the end


class Conversation:
    """One person's conversation with a speech model: turn-taking state plus the text history."""

    def __init__(
        self,
        model: SpeechModel,
        vad_options: PauseDetectorOptions | None = None,
        options: ConversationOptions | None = None,
        vad: SileroVad | None = None,
        smart_turn: SmartTurn | None = None,
    ):
        self.model = model.session()  # this conversation's own caches in a shared model
        self.options = options or ConversationOptions()
        # The model's reading of the words (`_words_end`) tells the detector whether a pause is the end of the turn.
        text_end = self._words_end if model.reads_turn_end else None
        self.detector = PauseDetector(vad_options, vad, smart_turn=smart_turn, text_end=text_end)
        # The latest reading: (turn, the end of the audio read (a detector sample), the reading).
        self._reading: tuple[int, int, WordsEnd] | None = None
        self._turns = 0  # turns begun: a reading is only for the turn (and pause) it was made in
        self._listened: tuple[int, int] | None = None  # (turn, the end of the audio) handed to `listen` last
        self.history: list[Message] = []
        self.spoken = SpokenReply()
        self.speaking = False  # a reply is being generated or played: the user may barge in
        self.interruptions = 0
        self._speculation: BackgroundReply | None = None
        self._silence_answered: int | None = None  # where the silence began that the speculation answers, until a pause
        self._reply: BackgroundReply | None = None
        self._listening: threading.Thread | None = None
        self.ended: EndedTurn | None = None  # the turn that ended and waits for `reply`
        self._lock = threading.RLock()

    def hear(self, audio: np.ndarray, sample_rate: int) -> list[VadEvent]:
        """Feed a microphone chunk; returns what the pause detector noticed in it.

        In full duplex, speech that starts while the assistant speaks is a barge-in: the reply is cancelled at
        once and the history keeps only what was heard of it (`interruptions` counts them). The new turn has
        been recorded from where that speech began. The next turn starts the moment one ends: audio after the
        end of a turn in the same chunk (or before its reply starts) belongs to the next one.
        """
        with self._lock:
            events = self._heard(self.detector.feed(audio, sample_rate))
            self._speculate_in_silence()
            self._listen_ahead()
            return events

    def _heard(self, events: list[VadEvent]) -> list[VadEvent]:
        for i, event in enumerate(events):
            if event.kind == "speech_start" and self.speaking and self.options.barge_in:
                self.interrupt()
            elif event.kind == "pause" and self.options.speculate:
                # Not when the same chunk shows them talking again: that answer would be dead on arrival,
                # and its transcription would hold up listening ahead. When the same chunk ends the turn (on what
                # listening ahead read), this is the answer: it hears what listening ahead heard, so the words are
                # transcribed and read already (quiet, first audio 360-470 ms after the end of the turn; started at
                # the end of the turn instead, it transcribed the whole turn again: 590-640 ms).
                answered, self._silence_answered = self._silence_answered, None
                if answered == event.sample and self._speculation:
                    continue  # a chunk that ended in this silence started the answer already
                if not any(later.kind == "resume" for later in events[i + 1 :]):
                    self._speculate(event)
            elif event.kind == "resume" and self._speculation:
                self._speculation.cancel()  # they went on talking: that answer is for a question not asked
                self._speculation = None
            elif event.kind == "end_of_turn":
                return events[: i + 1] + self._next_turn(event)
        return events

    def _next_turn(self, end: VadEvent) -> list[VadEvent]:
        """Keep the ended turn for its reply and start hearing the next one from where the end was decided."""
        detector = self.detector
        self.ended = None  # an earlier turn never answered (stopped) gives way to this one
        self.ended = EndedTurn(
            self.turn_audio(), self.phrase_breaks(), detector.speech_start or 0, end.sample, detector.verdict
        )
        after = np.array(detector.audio[end.detected_at :])
        self._reset_detector()
        detector.barge_in = self.options.barge_in  # the reply is about to be spoken: maybe over it
        return self._heard(detector.feed(after, SAMPLE_RATE)) if after.size else []

    def _speculate_in_silence(self) -> None:
        """Start answering when the chunk ends a little way into a silence (`speculate_in_silence_ms`), and drop that
        answer when they went on talking before the silence became a pause."""
        detector, answered = self.detector, self._silence_answered
        if answered is not None and detector.speech_end != answered:
            self._silence_answered = None
            if self._speculation:
                self._speculation.cancel()
                self._speculation = None
        after_ms = self.options.speculate_in_silence_ms
        if not self.options.speculate or after_ms is None or self._speculation or detector.paused or detector.turn_ended:
            return
        silent_since = detector.speech_end
        if not detector.started_talking or silent_since is None:
            return
        if (detector.position - silent_since) * 1000 / SAMPLE_RATE >= after_ms:
            self._speculate(VadEvent("pause", silent_since, detector.position))
            self._silence_answered = silent_since

    def _reset_detector(self) -> None:
        self.detector.reset()
        self._turns += 1
        self._reading = None
        self._silence_answered = None

    def _words_end(self, sample: int) -> WordsEnd | None:
        """For the detector, deciding whether the silence since SAMPLE ends the turn: the model's reading of the
        user's words, if it has read all of them. A reading of the audio up to any point in this silence has (the
        silence is still going on, so nothing was said between SAMPLE and there), and so has one that ended up to
        READ_SLACK before it (the tail of the last word, which Silero still hears as speech)."""
        reading = self._reading
        fresh = reading is not None and reading[0] == self._turns
        if fresh and sample - READ_SLACK <= reading[1] <= self.detector.position:
            return reading[2]
        return None

    def _read(self, turn: int, until: int, words_end: WordsEnd | None) -> None:
        if words_end is not None:
            self._reading = (turn, until, words_end)

    def _listen_ahead(self) -> None:
        """While the user is speaking, hand the model their words so far (one `listen` at a time, in a thread).

        The CPU is idle while people talk; this moves the transcription and the prompt out of the wait after
        the turn ends."""
        detector = self.detector
        talking = detector.started_talking and not detector.paused and not detector.turn_ended
        if not (self.options.listen_ahead and talking) or self.speaking or self._speculation:
            return  # (an answer under way hears the same audio)
        if self._listening and self._listening.is_alive():
            return
        audio = self.turn_audio()
        self._listened = (self._turns, self._turn_start() + audio.size)
        args = (audio, list(self.history), self.phrase_breaks(), *self._listened)
        self._listening = threading.Thread(target=self._listen, args=args, daemon=True)
        self._listening.start()

    def _listen(self, audio: np.ndarray, history: list[Message], breaks: list[int], turn: int, until: int) -> None:
        try:
            reading = self.model.listen(audio, SAMPLE_RATE, history, breaks)
        except Exception:  # only a head start is lost: the reply meets the same problem and reports it
            log.exception("listening ahead failed")
            return
        self._read(turn, until, reading)
        write_ahead, policy = getattr(self.model, "write_ahead", None), self.detector.options.turn
        if self.options.write_ahead and write_ahead and policy and reading and reading.probability >= policy.text_complete:
            # Until the next chunk comes (or the turn is over): its words, or its pause, decide what happens next.
            stop = lambda: self._turns != turn or self.detector.samples_fed != until
            threading.Thread(target=write_ahead, args=(stop,), daemon=True, name="write-ahead").start()

    @property
    def reply_started_at(self) -> float | None:
        """perf_counter() time when the reply being read began (earlier than the end of turn if speculated)."""
        return self._reply.started_at if self._reply else None

    @property
    def turn_ended(self) -> bool:
        """A turn has ended and waits for `reply`."""
        return self.ended is not None

    def _turn_start(self) -> int:
        return max(0, (self.detector.speech_start or 0) - self.options.pre_roll_ms * SAMPLE_RATE // 1000)

    def turn_audio(self, speech_end: int | None = None) -> np.ndarray:
        """The user's words in the turn that ended, or else in the current one (16 kHz mono float32), with a
        little margin either side."""
        if self.ended is not None and speech_end is None:
            return self.ended.audio
        detector = self.detector
        if detector.speech_start is None:
            return np.zeros(0, dtype=np.float32)
        end = detector.speech_end if speech_end is None else speech_end
        end = min(detector.samples_fed, (end or detector.samples_fed) + self.options.post_roll_ms * SAMPLE_RATE // 1000)
        return np.array(detector.audio[self._turn_start() : end])

    def phrase_breaks(self) -> list[int]:
        """Where the user paused and went on in this turn, as sample indices into `turn_audio()`."""
        if self.ended is not None:
            return self.ended.breaks
        return [b - self._turn_start() for b in self.detector.phrase_breaks]

    def _answer(self) -> BackgroundReply:
        """Start answering the turn as heard so far."""
        audio, history = self.turn_audio(), list(self.history)
        return BackgroundReply(self.model.respond(audio, SAMPLE_RATE, history, self.phrase_breaks()))

    def _speculate(self, pause: VadEvent) -> None:
        """Start answering at a pause, as if the turn ended there. The answer first reads the words, which the
        detector waits for to end the turn (`WordsEnd`)."""
        if self._speculation:
            self._speculation.cancel()
        audio = self.turn_audio(pause.sample)
        # The words up to the pause, with a post-roll for soft endings. If listening ahead heard past where Silero's
        # silence began (itself 70-350 ms after the last sound), the answer hears that same audio: the model has
        # its words already (~0.3 s of Whisper with a browser on the machine). On 110 recordings, cut where the
        # silence began or 200 ms later, Whisper's WER was the same (15.9 vs 16.1 %). Not audio that ends before
        # that: cut right after the words, Whisper heard "the beach and" as "the V-chond".
        listened = self._listened
        if listened and listened[0] == self._turns and pause.sample <= listened[1] < self._turn_start() + audio.size:
            audio = audio[: listened[1] - self._turn_start()]
        turn, until = self._turns, self._turn_start() + audio.size
        chunks = self.model.respond(audio, SAMPLE_RATE, list(self.history), self.phrase_breaks())

        def observe(chunk: ReplyChunk) -> None:
            if isinstance(chunk, WordsEnd):
                self._read(turn, until, chunk)

        self._speculation = BackgroundReply(chunks, observe=observe)

    def reply(self, heartbeat_s: float | None = None) -> Iterator[ReplyChunk]:
        """Answer the turn that just ended (or whatever was heard so far), then listen for the next one.

        Raises `NoSpeechError` when there was nothing to answer. The finished exchange is added to the history;
        a cancelled one is not (see `cancel`), an interrupted one only as far as it was heard (see `interrupt`).
        With HEARTBEAT_S, a `Heartbeat` comes whenever the model has been quiet that long (a streaming output
        may need a nudge to pass on what it holds).
        """
        with self._lock:
            reply = self._speculation or self._answer()
            self._speculation = None
            self._reply = reply
            self.spoken = spoken = SpokenReply()
            self.speaking = True
            self.ended = None  # answered (the detector hears the next turn since this one ended)
            self.detector.barge_in = self.options.barge_in
        try:
            for chunk in reply.chunks(heartbeat_s):
                if isinstance(chunk, WordsEnd):
                    continue  # for the detector (see `_speculate`), not for the reply's readers
                with self._lock:
                    if reply.cancelled:
                        return
                    match chunk:
                        case Transcript(text):
                            spoken.transcript = text
                        case TextDelta(text):
                            spoken.text += text
                        case Audio(pcm, words):
                            spoken.first_audio_at = spoken.first_audio_at or time.perf_counter()
                            spoken.add_audio(len(pcm) / self.model.sample_rate, words)
                        case Finished(turn):
                            self.history.extend(turn.messages())
                            spoken.in_history = True
                            if spoken.first_audio_at is None:
                                self.played()  # nothing will play: back to normal listening now
                yield chunk
        except BaseException:
            self.played()  # a failed reply will not be played
            raise
        finally:
            reply.cancel()
            with self._lock:
                if self._reply is reply:
                    self._reply = None

    def played(self) -> None:
        """The reply has finished playing (or will not play): back to normal listening."""
        with self._lock:
            self.speaking = False
            self.detector.barge_in = False

    def interrupt(self, heard_s: float | None = None) -> None:
        """Stop the reply being spoken; the history keeps what the user heard of it, marked as interrupted.

        HEARD_S defaults to the time since its first audio was handed on; `heard` corrects it later with the
        player's own count.
        """
        with self._lock:
            if self._reply:
                self._reply.cancel()
                self._reply = None
            self.played()  # the user's new turn has begun: normal rules for the rest of it
            self.interruptions += 1
            spoken = self.spoken
            if not spoken.transcript:
                return  # cut off before it understood anything: nothing to remember
            if heard_s is None:
                heard_s = time.perf_counter() - spoken.first_audio_at if spoken.first_audio_at else 0.0
            said: Message = {"role": "assistant", "content": self._interrupted_text(heard_s)}
            if spoken.in_history:
                self.history[-1] = said
            else:
                self.history.extend([{"role": "user", "content": spoken.transcript}, said])
                spoken.in_history = True

    def hold(self, seconds: float = 3.0) -> None:
        """The listener may be about to interrupt (the browser heard a loud sound and paused playback): stop
        generating until `resume` or an interruption, for at most SECONDS, so no CPU goes to a reply that may die."""
        with self._lock:
            if self._reply:
                self._reply.hold(seconds)

    def resume(self) -> None:
        """It was not an interruption: carry on with the reply."""
        with self._lock:
            if self._reply:
                self._reply.release()

    def heard(self, heard_s: float) -> str:
        """Set the interrupted reply in the history to its first HEARD_S seconds (as the player counted).

        Returns the words kept."""
        with self._lock:
            text = self._interrupted_text(heard_s)
            if self.spoken.in_history and self.history and self.history[-1]["role"] == "assistant":
                self.history[-1] = {"role": "assistant", "content": text}
            return self.spoken.heard or ""

    def _interrupted_text(self, heard_s: float) -> str:
        self.spoken.heard = heard = self.spoken.heard_text(max(0.0, heard_s))
        return f"{heard}{INTERRUPTED}"

    def cancel(self) -> None:
        """Stop whatever is being generated and forget the turn in progress (the history is kept)."""
        with self._lock:
            for reply in (self._speculation, self._reply):
                if reply:
                    reply.cancel()
            self._speculation = self._reply = None
            self.ended = None
            self.played()
            self._reset_detector()

    def clear(self) -> None:
        self.cancel()
        self.history.clear()

    def close(self) -> None:
        """The conversation is over: stop its work and free what the model keeps for it."""
        self.cancel()
        close = getattr(self.model, "close", None)
        if close:
            close()
