"""The default speech model: Whisper -> llama.cpp chat model -> piper, streamed clause by clause.

Each finished clause is spoken as soon as the language model has written it, so the first clause is heard
while the rest of the answer is still being written.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from omni.asr import AsrOptions, Transcriber
from omni.audio import SAMPLE_RATE, prepare
from omni.clauses import ClauseSplitter
from omni.llm import ChatModel, ChatSlot, LlmOptions
from omni.memory import release_freed_memory
from omni.scheduler import LISTENING, ComputeQueue, reply_priority
from omni.settings import Settings
from omni.speech_model import (
    Audio,
    Finished,
    Heartbeat,
    Message,
    NoSpeechError,
    ReplyChunk,
    TextDelta,
    Transcript,
    Turn,
    WordsEnd,
)
from omni.tts import Speaker

T = TypeVar("T")
Written = tuple[list[str], float]  # text deltas, and the seconds spent writing them after the first
_DONE = object()
WAIT_S = 0.05  # while waiting for the model, a reply says so this often (and can be cancelled)
# At a pause, listening ahead has often heard all but the last few hundred ms of the phrase (the tail of its last
# word, then silence). The answer is then written to that draft while Whisper hears the whole phrase, on the other
# core, and kept if the two agree. Drafts that stopped 48-304 ms before Silero's silence (the audio goes 200 ms
# further): of 144 such pauses in our recordings at four chunk alignments, 90 heard the same words. In the browser
# benchmark a draft was kept in 4-5 turns of 8 (first audio 0.61-0.79 s after the answer began, 1.0-1.2 s without
# one) and dropped in 1.
DRAFT_S = 0.6
WRITE_AHEAD_TOKENS = 24  # at most this much of an answer is written ahead (its first clause is usually shorter)


def run(steps: Generator[object, None, T]) -> T:
    """Run a generator to its end and return its return value (for callers that need no heartbeats)."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


@dataclass
class Phrase:
    """A stretch of the user's turn and its transcript, kept so that no audio is transcribed twice."""

    audio: np.ndarray
    transcript: str

    def covers(self, audio: np.ndarray) -> bool:
        """True when AUDIO is the start of this phrase's audio: what follows it was silence (the caller cuts a turn
        at the end of its speech, a phrase in the middle of a pause), so this transcript is AUDIO's."""
        return 0 < audio.size <= self.audio.size and np.array_equal(audio, self.audio[: audio.size])

    @staticmethod
    def join(transcripts: Sequence[str]) -> str:
        """The phrases' transcripts as one text. Whisper ends each phrase like a sentence ("... is established."):
        where the next phrase goes on in lower case or with a word that carries a sentence on ("In the world?"),
        the sentence went on, and that mark is dropped."""
        text = ""
        for words in filter(None, (t.strip() for t in transcripts)):
            first = words.split()[0]
            if text and _SENTENCE_END.search(text) and (first[0].islower() or first in _GOES_ON):
                text, words = _SENTENCE_END.sub("", text), words[0].lower() + words[1:]
            text = f"{text} {words}" if text else words
        return text


def _drop(ahead: WrittenAhead | None) -> None:
    """Stop an answer written ahead for good (its caller owns it: `CascadeSession._take_ahead`)."""
    if ahead is not None:
        ahead.rest.close()


def _pieces(audio: np.ndarray, sample_rate: int, breaks: Sequence[int]) -> list[np.ndarray]:
    """A turn's audio at 16 kHz, cut into its phrases at the BREAKS (sample indices into AUDIO as given)."""
    audio = prepare(audio, sample_rate)
    cuts = [c for c in (round(b * SAMPLE_RATE / sample_rate) for b in breaks) if 0 < c < audio.size]
    return np.split(audio, cuts)


_SENTENCE_END = re.compile(r"[.?!\u2026]+$")
# Capitalised by Whisper at the start of a phrase, but rarely the start of a spoken sentence of their own.
_GOES_ON = {"In", "On", "At", "To", "From", "Of", "For", "With", "By", "About", "Into", "And", "Or", "But", "Than"}


@dataclass
class WrittenAhead:
    """The start of an answer to WORDS (after HISTORY_SIZE messages) written before anyone asked for it: its DELTAS
    so far, and REST, the language model's stream that goes on from there."""

    words: str
    history_size: int
    deltas: list[str]
    rest: Iterator[str]


@dataclass
class CascadeOptions:
    first_clause_words: int = 3  # the first clause is spoken once it is this long


class Cascade:
    """Speech in -> text -> text -> speech out, behind the `SpeechModel` interface.

    One Whisper, one llama.cpp model and one piper voice serve every conversation; `session()` gives each
    conversation its own phrases and prompt cache, and the compute queue takes their work one short step at a time,
    the most urgent first (`omni.scheduler`).
    """

    name = "cascade"

    def __init__(self, asr: Transcriber, llm: ChatModel, tts: Speaker, options: CascadeOptions | None = None):
        self.asr, self.llm, self.tts = asr, llm, tts
        self.options = options or CascadeOptions()
        self.sample_rate = tts.sample_rate
        self.queue = ComputeQueue()
        self.beside = ThreadPoolExecutor(1, thread_name_prefix="hear-beside")  # Whisper beside the writing
        # For callers without a conversation of their own (CLIs, bench): nobody waits on its reading of the words,
        # so it answers the whole recording without one (and evaluates the prompt as a remote engine does).
        self._own = CascadeSession(self, reads_turn_end=False)

    @classmethod
    def load(
        cls, settings: Settings, asr_options: AsrOptions | None = None, llm_options: LlmOptions | None = None
    ) -> Cascade:
        """The parts that SETTINGS name: each on its server where they give one (omni/remote.py), else here."""
        from omni.remote import remote_chat_model, remote_speaker, remote_transcriber

        return cls(
            remote_transcriber(settings, asr_options) or Transcriber(settings.asr, asr_options),
            remote_chat_model(settings, llm_options) or ChatModel(settings.llm, llm_options),
            remote_speaker(settings) or Speaker.load(settings.tts),
        )

    @property
    def reads_turn_end(self) -> bool:
        """A local language model reads whether the user has finished (a remote one is not asked: a round trip)."""
        return isinstance(self.llm, ChatModel)

    @property
    def description(self) -> str:
        return f"{self.asr.name} -> {self.llm.name} -> {self.tts.name}"

    def warm_up(self) -> None:
        """Run each model once so that the first user turn does not pay for lazy initialisation."""
        self.asr.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32))
        self.llm.warm_up()
        for _ in self.tts.synthesize("Hello."):
            pass
        release_freed_memory()

    def session(self) -> CascadeSession:
        return CascadeSession(self)

    def listen(
        self, audio: np.ndarray, sample_rate: int, history: Sequence[Message], breaks: Sequence[int] = ()
    ) -> WordsEnd | None:
        return self._own.listen(audio, sample_rate, history, breaks)

    def respond(
        self, audio: np.ndarray, sample_rate: int, history: Sequence[Message], breaks: Sequence[int] = ()
    ) -> Iterator[ReplyChunk]:
        return self._own.respond(audio, sample_rate, history, breaks)


class CascadeSession:
    """One conversation with the cascade: its phrases heard so far and its prompt cache (a `SpeechModel`)."""

    def __init__(self, cascade: Cascade, reads_turn_end: bool = True):
        self.cascade = cascade
        self.name, self.sample_rate = cascade.name, cascade.sample_rate
        self.phrases: list[Phrase] = []  # the latest turn heard, phrase by phrase
        self.slot = ChatSlot()
        self.reads_turn_end = reads_turn_end and cascade.reads_turn_end
        self._reading: tuple[str, int, WordsEnd] | None = None  # (words, history length, their reading) read last
        self._listened: tuple[str, list[Message]] | None = None  # the words listening ahead heard last, and history
        self._ahead: WrittenAhead | None = None  # see `write_ahead`
        self._ahead_lock = threading.Lock()  # held while a token is written ahead

    def session(self) -> CascadeSession:
        return self

    @property
    def waiting(self) -> int:
        """0, or this conversation's place in the queue for the model (1: next)."""
        return self.cascade.queue.waiting(self)

    def close(self) -> None:
        """The conversation is over: free its prompt cache."""
        _drop(self._take_ahead())
        with self.cascade.queue.step(self):
            self.cascade.llm.forget(self.slot)

    def _step(
        self, work: Callable[[], T], priority: Callable[[], float], keep: bool = False
    ) -> Generator[ReplyChunk, None, T]:
        """WORK() as one turn of the compute queue (`yield from` it: it returns what WORK returns).

        While it waits for its turn it yields a `Heartbeat` every WAIT_S, so that a reply waiting behind others
        can still be closed (cancelled) at once. With KEEP, the turn is kept for this conversation's next step."""
        queue = self.cascade.queue
        ticket = queue.ask(self, priority())
        try:
            while not queue.wait(ticket, WAIT_S, priority()):
                yield Heartbeat()
        except BaseException:  # closed while waiting
            queue.withdraw(ticket)
            raise
        try:
            return work()
        finally:
            queue.release(self, keep)

    def _llm_step(
        self, work: Callable[[], T], priority: Callable[[], float], keep: bool = False
    ) -> Generator[ReplyChunk, None, T]:
        """A step of the language model: a turn of the compute queue when it runs on these cores. A remote model's
        steps are waits on the network, which must not hold up other conversations' Whisper and piper."""
        if getattr(self.cascade.llm, "remote", False):
            return work()
        return (yield from self._step(work, priority, keep))

    def _llm_steps(
        self, steps: Iterator[T], priority: Callable[[], float], keep: bool = False
    ) -> Generator[ReplyChunk, None, T | None]:
        """Run the language model's STEPS, each a step of its own (`_llm_step`); returns the last one's value."""
        last = None
        while (value := (yield from self._llm_step(lambda: next(steps, _DONE), priority, keep))) is not _DONE:
            last = value
        return last

    def listen(
        self, audio: np.ndarray, sample_rate: int, history: Sequence[Message], breaks: Sequence[int] = ()
    ) -> WordsEnd | None:
        """Transcribe the turn so far and evaluate the prompt that answers it: if the user stops here, `respond`
        finds both done and starts writing at once; if they go on, it reuses the prompt up to the new words.
        A local model also reads whether the words are finished: that reading is returned."""
        if self.cascade.queue.replying(than=self):
            # Someone is waiting for a reply: on 2 cores, a transcription ahead (0.3-0.5 s, not interruptible)
            # would hold it up, as two browsers and two people at once showed (first audio 3-4 s late). This chunk's
            # words are heard at the next chunk, or at the pause.
            return None
        listening = lambda: LISTENING  # ahead of replies with more than a second in hand beyond their runway
        transcript = run(self._transcribe_turn(_pieces(audio, sample_rate, breaks), listening))
        if not transcript:
            return None
        reading = run(self._read(history, transcript, listening)) if self.reads_turn_end else None
        # Then the template's tail after the words (~5 tokens), so that an answer starts writing at once.
        run(self._llm_steps(self.cascade.llm.prefill_steps(history, transcript, self.slot), listening))
        self._listened = (transcript, list(history))
        return reading

    def write_ahead(self, stop: Callable[[], bool]) -> None:
        """Write the start of the answer to the words `listen` heard last, until its first clause is written, STOP()
        says so (the user went on), or a reply starts. Called when those words read as finished but the user may
        not be: the next `respond` to the same words goes on from there (`_take_ahead`), or drops it.

        The words often end in a chunk's last ~0.1 s, and Silero hears the silence 70-350 ms late, so the pause that
        starts the answer shows only in the next chunk, 0.5 s later: meanwhile the cores are idle. Each token is a
        step of the queue at listening priority, and none is taken while another conversation waits for a reply."""
        if self._listened is None or stop():
            return
        words, history = self._listened
        ahead = WrittenAhead(words, len(history), [], self.cascade.llm.stream(history, words, self.slot))
        with self._ahead_lock:
            older, self._ahead = self._ahead, ahead
        _drop(older)
        splitter = ClauseSplitter(self.cascade.options.first_clause_words)

        def next_delta() -> object:
            with self._ahead_lock:  # a reply takes the answer between two tokens, never during one
                # Not while someone else waits for a reply (as `listen`): these tokens may never be needed.
                if self._ahead is not ahead or stop() or self.cascade.queue.replying(than=self):
                    return _DONE
                delta = next(ahead.rest, _DONE)
                if delta is not _DONE:
                    ahead.deltas.append(delta)
                return delta

        listening = lambda: LISTENING
        while len(ahead.deltas) < WRITE_AHEAD_TOKENS:
            delta = run(self._llm_step(next_delta, listening))
            if delta is _DONE or splitter.push(delta):
                return

    def _take_ahead(self) -> WrittenAhead | None:
        """The answer written ahead, if any, now this caller's (its writing stops before the next token)."""
        with self._ahead_lock:
            ahead, self._ahead = self._ahead, None
            return ahead

    @staticmethod
    def _ahead_for(ahead: WrittenAhead | None, words: str, history: Sequence[Message]) -> WrittenAhead | None:
        """AHEAD if it answers WORDS after HISTORY; otherwise it is dropped and None."""
        if ahead is not None and (ahead.words, ahead.history_size) == (words, len(history)):
            return ahead
        _drop(ahead)
        return None

    def _read(
        self, history: Sequence[Message], words: str, priority: Callable[[], float] | None, keep: bool = False
    ) -> Generator[ReplyChunk, None, WordsEnd]:
        """The language model's reading of the user's WORDS (`WordsEnd`); the same words are read once. With KEEP,
        its steps keep the model like a clause does (a reply's reading: the detector and the listener wait for it).
        PRIORITY None: the caller holds the queue already, and the steps run at once."""
        if self._reading and self._reading[:2] == (words, len(history)):
            return self._reading[2]
        steps = self.cascade.llm.read_steps(history, words, self.slot)
        if priority is None:
            *_, reading = steps
        else:
            reading = yield from self._llm_steps(steps, priority, keep)
        self._reading = (words, len(history), reading)
        return reading

    def _transcribe_turn(
        self, pieces: list[np.ndarray], priority: Callable[[], float]
    ) -> Generator[ReplyChunk, None, str]:
        """The transcript of a turn (so far) from its phrases, the PIECES between the breaks where the speaker paused.

        A phrase already heard by an earlier call (checked by content) is not transcribed again, so each call only
        transcribes the words since the last pause, however long the turn. Whisper hears a finished phrase whole,
        with the silence around it: on bench.quality the phrases, joined by `Phrase.join`, had the word error rate
        of the whole utterance (hearing a turn of several phrases again whole at its end did not do better).
        """
        heard = []
        for i, piece in enumerate(pieces):
            phrase = self._known(i, piece)
            if phrase is None:
                phrase = yield from self._step(lambda i=i, piece=piece: self._hear(i, piece), priority)
            heard.append(phrase)
        return Phrase.join([p.transcript for p in heard])

    def _draft(self, pieces: list[np.ndarray]) -> str | None:
        """The words listening ahead heard of a turn whose every phrase it heard but the end of the last one: its
        draft of that phrase stops at most DRAFT_S before the phrase does. None if it heard less (or all of it)."""
        *before, last = pieces
        if not all(self._known(i, piece) for i, piece in enumerate(before)) or len(self.phrases) != len(pieces):
            return None
        heard = self.phrases[-1]
        if not (heard.transcript and 0 < last.size - heard.audio.size <= DRAFT_S * SAMPLE_RATE):
            return None
        if not np.array_equal(last[: heard.audio.size], heard.audio):
            return None
        return Phrase.join([p.transcript for p in self.phrases])

    def _hear_writing(
        self, i: int, piece: np.ndarray, history: Sequence[Message], draft: str, deltas: Iterator[str]
    ) -> tuple[Phrase, threading.Event, Future[Written]]:
        """Transcribe phrase I of the turn while, on a thread of its own, the language model reads the DRAFT of the
        words (unless listening ahead did) and writes DELTAS, the answer to it (a step of the queue: two jobs, one on
        each core). Returns the phrase as soon as it is heard (the pause detector waits for the reading); an event
        set once the draft is read (`_reading`); and the writing, which stops within a token once the phrase is
        heard: the deltas it wrote, and the seconds spent writing them after the first."""
        stop, read = threading.Event(), threading.Event()
        llm = self.cascade.llm

        def write() -> Written:
            written: list[str] = []
            first = last = 0.0
            with llm.beside_other_work():
                # Read first: reading the words after the answer was begun would undo that answer in the cache.
                try:
                    run(self._read(history, draft, None))
                finally:
                    read.set()
                while not stop.is_set() and (delta := next(deltas, _DONE)) is not _DONE:
                    if delta:
                        last = time.perf_counter()
                        first = first or last
                    written.append(delta)
            return written, last - first

        writing = self.cascade.beside.submit(write)
        try:
            phrase = self._hear(i, piece)
        except BaseException:
            stop.set()
            wait([writing])  # the caller closes DELTAS, which no thread may be running then
            raise
        stop.set()
        return phrase, read, writing

    def _known(self, i: int, piece: np.ndarray) -> Phrase | None:
        phrases = self.phrases
        return phrases[i] if i < len(phrases) and phrases[i].covers(piece) else None

    def _hear(self, i: int, piece: np.ndarray) -> Phrase:
        """Transcribe phrase I of the turn (a step of the queue), unless a call for this conversation that had the
        model just before did (listening ahead and the answer at a pause often ask for the same audio)."""
        phrase = self._known(i, piece)
        if phrase is None:
            phrase = Phrase(piece, self.cascade.asr.transcribe(piece))
            self.phrases = [*self.phrases[:i], phrase]
        return phrase

    def respond(
        self, audio: np.ndarray, sample_rate: int, history: Sequence[Message], breaks: Sequence[int] = ()
    ) -> Iterator[ReplyChunk]:
        cascade = self.cascade
        start = time.perf_counter()
        timings: dict[str, float] = {}
        first_audio_at: float | None = None
        spoken_s = synth_s = writing_s = 0.0

        def mark(name: str) -> None:
            timings.setdefault(name, (time.perf_counter() - start) * 1000)

        def lead() -> float:
            """This reply's priority: the less of its audio the listener has in hand, the sooner it gets the model."""
            if first_audio_at is None:
                return reply_priority(None)
            return reply_priority(spoken_s - (time.perf_counter() - first_audio_at))

        reply: list[str] = []
        splitter = ClauseSplitter(cascade.options.first_clause_words)

        def speak(pieces: list[str]) -> Iterator[ReplyChunk]:
            nonlocal synth_s, spoken_s, first_audio_at
            for piece in pieces:
                t = time.perf_counter()
                audio = yield from self._step(lambda piece=piece: list(cascade.tts.synthesize(piece)), lead)
                synth_s += time.perf_counter() - t
                for i, pcm in enumerate(audio):
                    mark("first_audio_ms")
                    first_audio_at = first_audio_at or time.perf_counter()
                    spoken_s += len(pcm) / self.sample_rate
                    yield Audio(pcm, "" if i else piece)

        def take(delta: str) -> Iterator[ReplyChunk]:
            mark("first_token_ms")
            reply.append(delta)
            # Every token is yielded: the caller sees the text grow, and can cancel between tokens.
            yield TextDelta(delta)
            yield from speak(splitter.push(delta))

        parts = _pieces(audio, sample_rate, breaks)
        ahead = self._take_ahead()  # the start of an answer written ahead (`write_ahead`), maybe to these words
        draft = self._draft(parts) if self.reads_turn_end else None
        deltas: Iterator[str] | None = None
        written: list[str] = []  # the answer's deltas written before its words were known to be the ones heard
        writing: Future[Written] | None = None
        try:  # a closed reply (a cancelled turn) stops writing within one token
            if draft is not None:
                # The answer to the draft is written while Whisper hears the last words; kept if they are the same.
                if ahead := self._ahead_for(ahead, draft, history):
                    written, deltas = ahead.deltas, ahead.rest
                else:
                    deltas = cascade.llm.stream(history, draft, self.slot)
                hear = lambda: self._hear_writing(len(parts) - 1, parts[-1], history, draft, deltas)
                phrase, read, writing = yield from self._step(hear, lead)
                transcript = Phrase.join([*(p.transcript for p in self.phrases[:-1]), phrase.transcript])
                timings["draft_kept"] = float(transcript == draft)
                if transcript == draft:
                    read.wait()  # then `_read` below has the reading
                else:  # other words: that answer is for a question not asked
                    wait([writing])
                    deltas.close()
                    deltas = writing = None
                    written = []
            else:
                transcript = yield from self._transcribe_turn(parts, lead)
                if ahead := self._ahead_for(ahead, transcript, history):
                    written, deltas = ahead.deltas, ahead.rest
            ahead = None  # in DELTAS now, or closed
            mark("asr_ms")
            if not transcript:
                raise NoSpeechError("No words were heard.")
            yield Transcript(transcript)
            if self.reads_turn_end:
                # Has the user finished? Listening ahead has often read these very words already.
                reading = yield from self._read(history, transcript, lead, keep=True)
                mark("words_end_ms")
                yield reading

            # Writing and speaking take turns, one step at a time: on two cores, llama.cpp's two threads and piper
            # running side by side slowed generation from ~24 to ~11 tokens/s, and both stay far ahead of playback.
            # Each token is a step that keeps the model for this reply, until a clause is spoken.
            deltas = deltas or cascade.llm.stream(history, transcript, self.slot)
            timings["written_ahead"] = sum(1 for delta in written if delta)
            if writing is not None:
                beside, writing_s = writing.result()
                written = written + beside
            for delta in filter(None, written):
                yield from take(delta)
            t = time.perf_counter()
            while (delta := (yield from self._llm_step(lambda: next(deltas, _DONE), lead, keep=True))) is not _DONE:
                if not delta:  # the prompt being evaluated, or part of a character
                    continue
                if reply:  # time per token after the first, without the speaking in between
                    writing_s += time.perf_counter() - t
                yield from take(delta)
                t = time.perf_counter()
        finally:
            if writing is not None:
                wait([writing])  # a generator may not be closed while another thread runs it
            if deltas is not None:
                deltas.close()
            _drop(ahead)  # not used
        yield from speak(splitter.flush())
        mark("total_ms")
        release_freed_memory()
        timings["tokens"] = len(reply)
        written_here = len(reply) - timings["written_ahead"]  # tokens/s of this reply's own writing
        timings["tokens_per_s"] = (written_here - 1) / writing_s if writing_s > 0 and written_here > 1 else 0.0
        timings["tts_rtf"] = synth_s / spoken_s if spoken_s else 0.0
        yield Finished(Turn(transcript, "".join(reply).strip(), timings))
