"""Is the user's turn over? Two opinions beside the silence, and the policy that weighs them.

* `SmartTurn` hears it: smart-turn v3.2 (Daily, BSD-2-Clause; a Whisper-tiny encoder, 8.7 MB int8 onnx) reads the
  last <= 8 s of the turn as Whisper log-mel features and gives the probability that the utterance is complete.
  It hears melody and rhythm (a trailing "um", a rising "and..."), not meaning: a finished-sounding opening
  clause ("Unless the weather gets a lot better,") scores high.
* The chat model reads it (`omni.llm.ChatModel.read_steps`, with `words_prompt`, `end_probability` and
  `policy_reading` here): its probability that the user's words end where the transcript does (LiveKit's idea:
  the chat template's end-of-message token after the transcript; here also a sentence's end), and whether they
  ask something. It knows that "If it stops raining" goes on; it cannot hear a question trail off.
* `TurnOptions.required_silence_ms` turns both into how much silence ends the turn: short after a complete
  utterance, long after an unfinished one, the old 700 ms rule when they disagree or do not know.
  `utils.vad.PauseDetector` asks it at every silent frame and stays the one place that decides.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from omni.audio import SAMPLE_RATE
from omni.models import ModelError
from omni.speech_model import WordsEnd

if TYPE_CHECKING:
    from llama_cpp import Llama

WINDOW = 8 * SAMPLE_RATE  # smart-turn hears the last 8 s of the turn, zero-padded in front
N_MELS = 80
HOP = SAMPLE_RATE // 100  # Whisper's 10 ms feature frames: 800 of them in the window
NORMALIZE_EPS = 1e-7  # the waveform is normalized to zero mean, unit variance before the spectrogram (as trained)


class SmartTurn:
    """smart-turn v3.2 on 16 kHz mono audio: `SmartTurn().load()(audio)` -> P(the utterance is complete).

    The onnx session runs on one thread (45-75 ms per call here when the machine is quiet) and holds no state
    between calls, so one loaded model may serve every detector (onnxruntime sessions may be run from several
    threads). Features are Whisper's log-mel spectrogram from faster-whisper's `FeatureExtractor` (numpy): the
    values smart-turn was trained on to ~1e-5 (checked against pipecat's own extractor on our recordings, same
    verdicts to 0.01).
    """

    _shared: SmartTurn | None = None
    _shared_lock = threading.Lock()

    def __init__(self) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        self._session = None
        self._mel = FeatureExtractor(feature_size=N_MELS, chunk_length=WINDOW // SAMPLE_RATE)

    @classmethod
    def shared(cls) -> SmartTurn:
        """The default model, loaded once for every detector that was not given one of its own."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls().load()
            return cls._shared

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self, path: Path | str | None = None) -> SmartTurn:
        """Load the onnx model (by default the one `omni.models.resolve("smart-turn")` names). Returns self."""
        if path is None:
            from omni.models import resolve

            path = resolve("smart-turn")
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"smart-turn model not found: {path} (./setup.sh puts it in .cache/models/)")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the cores belong to ASR and the LLM; one call is ~75 ms on one
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - a damaged file is a model problem, said in one line
            raise ModelError(f"{path} is not a usable onnx model: {e}") from None
        inputs = session.get_inputs()
        if [i.name for i in inputs] != ["input_features"] or list(inputs[0].shape[1:]) != [N_MELS, WINDOW // HOP]:
            raise ModelError(f"{path} is not a smart-turn v3 model (inputs {[(i.name, i.shape) for i in inputs]})")
        self._session = session
        return self

    def features(self, audio: np.ndarray) -> np.ndarray:
        """(80, 800) log-mel features of the last 8 s of AUDIO (16 kHz mono float32), zero-padded in front."""
        x = np.asarray(audio, dtype=np.float32)[-WINDOW:]
        x = np.pad(x, (WINDOW - len(x), 0))
        x = (x - x.mean()) / np.sqrt(x.var() + NORMALIZE_EPS)
        return self._mel(x, padding=0)

    def __call__(self, audio: np.ndarray) -> float:
        """P(complete) for the turn in AUDIO: from a little before the first word to now, trailing silence included."""
        if self._session is None:
            self.load()
        (probability,) = self._session.run(None, {"input_features": self.features(audio)[None]})
        return float(np.asarray(probability).reshape(-1)[0])  # the graph ends in a sigmoid


# --- the language model's view ---------------------------------------------------------------------------

# Whisper writes a full stop, "..." or "-" after whatever it heard, finished or not, and the model reads them: with
# the mark left on, P(<|im_end|>) after "Sunday is the best part of the..." was 0.80 and after "If it stops
# raining." 0.66 (Qwen2.5 1.5B). So the marks are taken off, and the model says itself whether one comes next.
_FINAL_MARKS = re.compile(r"[\s.?!\u2026-]+$")
_SENTENCE_ENDS = (".", "?", "!")
_SENTINEL = "\x00user text\x00"
# Words that end a hesitation, not a turn. Whisper mostly leaves them out, but writes "So. Um." as a sentence, which
# the model read as finished (0.28).
_FILLER_END = re.compile(r"\b(um+|uh+|erm|er|hmm+|mm+)[\s.,?!\u2026-]*$", re.IGNORECASE)
_QUESTION_END = re.compile(r"\?[\s\"')\u201d]*$")


OPENER_WORDS = 2  # "Hello," "Well, so": finished as sentences, but as often the start of one
UNSURE = 0.05  # a reading between TurnOptions' text_incomplete and text_complete: the 700 ms rule decides


def policy_reading(words: str, probability: float) -> WordsEnd:
    """The model's P(the words end here), as the end-of-turn policy should take it, and whether they ask something
    (Whisper ends a question with "?").

    Words that end on a filler ("um", "uh") are a speaker thinking: 0. One or two words read finished (the model
    gave "Hello." >= 0.1) but people pause after them and go on ("Hello, | my name is Anna" lost its second half
    to a 0.34 s comma pause): at most unsure, so they end after 700 ms, not 256."""
    asks = bool(_QUESTION_END.search(words))
    if _FILLER_END.search(words):
        return WordsEnd(0.0, asks)
    if len(_FINAL_MARKS.sub("", words).split()) <= OPENER_WORDS:
        return WordsEnd(min(probability, UNSURE), asks)
    return WordsEnd(probability, asks)


@cache
def _formatter(template: str, eos: str, bos: str):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)


def words_prompt(llm: Llama, messages: Sequence[Mapping[str, str]]) -> tuple[list[int], list[int]]:
    """The chat prompt for MESSAGES up to the end of the user's words (the last message; final marks removed), as
    tokens, and the tokens that may come next if the words end there: the template's end-of-message token (Qwen's
    `<|im_end|>`) and the sentence-ending marks (. ? !).

    Measured with Qwen2.5 1.5B, Whisper base transcripts of tests/data/turns and the app's system prompt, P(one of
    them next): every pause that was not an end 0.0000-0.018, and 0.033 for a noisy "Love you, show me!" (misheard
    "Could you show me"); finished turns 0.105-0.84, and 0.007-0.03 for three misheard ones and "A thin stripe runs
    down the middle." Summing P(end | words m) over the marks (three more one-token evaluations, ~100 ms here)
    separated them no better, and moved 10x with the wording of the system prompt."""
    messages = [dict(m) for m in messages]
    words = _FINAL_MARKS.sub("", messages[-1]["content"])
    messages[-1]["content"] = _SENTINEL
    token_text = llm._model.token_get_text
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise ValueError("the model has no chat template: its end-of-message token is unknown")
    formatted = _formatter(template, token_text(llm.token_eos()), token_text(llm.token_bos()))(messages=messages)
    prompt = formatted.prompt
    at = prompt.index(_SENTINEL)
    ends = [llm.tokenize(prompt[at + len(_SENTINEL) :].encode(), add_bos=False, special=True)[0]]
    ends += [llm.tokenize(mark.encode(), add_bos=False, special=False)[0] for mark in _SENTENCE_ENDS]
    tokens = llm.tokenize((prompt[:at] + words).encode(), add_bos=not formatted.added_special, special=True)
    return tokens, ends


def end_probability(llm: Llama, ends: Sequence[int]) -> float:
    """P(one of ENDS comes next), from the logits of the last token llama.cpp evaluated."""
    logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).astype(np.float64)
    top = logits.max()
    return float(np.exp(logits[list(ends)] - top).sum() / np.exp(logits - top).sum())


# --- the policy ------------------------------------------------------------------------------------------


@dataclass
class TurnOptions:
    """How much silence ends a turn, from what smart-turn heard and what the language model read.

    The PauseDetector asks smart-turn once per pause, at the frame where the silence reaches `check_ms`, on the
    audio since the turn's last phrase began (from `context_ms` before it) up to that frame, so the same audio
    gives the same verdict however it is chunked. The text's probability is read at every silent frame after
    that and may be unknown (None) for a while: the app has it once the words up to the pause are transcribed,
    a chunk later.

    Measured on tests/data/turns (bench/turn.py; smart-turn 192 ms into each pause, Qwen2.5 1.5B reading Whisper
    base): smart-turn said >= 0.9 in 6 of the 22 pauses that were not an end ("Unless the weather gets a lot
    better," ...), so by ear alone 32 of 108 runs ended early (the 700 ms rule: 52); the text read <= 0.033 in
    all of them, and >= 0.105 in the finished turns that Whisper heard right. Hence: with a language model a turn
    ends fast only when the text says finished and the ear does not object, and the text's "unfinished"
    outweighs the ear's "finished". Heard from the last phrase on (not from speech_start), smart-turn called 18
    of the 20 finished turns that had a pause inside finished (from speech_start: 11).
    """

    check_ms: float = 192.0  # = pause_ms in frames: the verdict is there when speculation starts
    # 8 frames of silence by Silero, which reports silence ~70 ms after the last sound (median on our set): ~1/3 s.
    complete_ms: float = 256.0
    # Finished words that ask nothing: people add to a statement after a breath ("I have two cats. | And one dog.",
    # "I'm going to Lisbon. | What should I see?"). At 256 ms, 0.45 s breaths after such a clause ended 3 turns of
    # bench.quality; a question wants its answer now. 15 frames: a 0.45 s breath (Silero: ~0.4 s) stays inside.
    statement_ms: float = 480.0
    incomplete_ms: float = 3000.0  # pipecat's stop_secs: a thinking pause after "and" or "um" may be long
    audio_complete: float = 0.5  # smart-turn's own threshold; used alone when there is no text to read
    audio_incomplete: float = 0.1  # below: unfinished by ear (a fast end needs the ear not to object)
    text_complete: float = 0.1
    # Below: unfinished by the text. Pauses that were not an end read <= 0.018 (0.035 once, misheard in noise);
    # finished turns that Whisper misheard, or statements the model expects more of, read 0.017-0.031: at 0.05 they
    # waited 3 s (bench.turn --app), at 0.02 most of them wait the 700 ms of the unsure case.
    text_incomplete: float = 0.02
    context_ms: float = 500.0  # audio before the phrase that smart-turn hears (pipecat's pre_speech_ms)
    # Without a language model reading the words, may the ear alone end a turn fast (pipecat's way)? Not by
    # default: by ear alone 32 of 108 pause runs ended early ("Hello, | my name is Anna" lost its second half in
    # the app). Without it the ear only keeps a turn open longer (unfinished by ear: `incomplete_ms`).
    ear_alone_ends_fast: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.check_ms <= self.complete_ms <= self.statement_ms <= self.incomplete_ms:
            raise ValueError("need 0 <= check_ms <= complete_ms <= statement_ms <= incomplete_ms")
        if not 0 <= self.audio_incomplete <= self.audio_complete <= 1:
            raise ValueError("need 0 <= audio_incomplete <= audio_complete <= 1")
        if not 0 <= self.text_incomplete <= self.text_complete <= 1:
            raise ValueError("need 0 <= text_incomplete <= text_complete <= 1")

    def required_silence_ms(self, audio: float, text: WordsEnd | None, fallback_ms: float, reading: bool) -> float:
        """Silence that ends the turn, from smart-turn's P(complete) (AUDIO) and the language model's reading of the
        words (TEXT: None while not known). READING: a reading is to come at all (a language model is wired in).

        With a text: finished by the text and the ear does not object -> `complete_ms` for a question,
        `statement_ms` for words that ask nothing; unfinished by the text,
        or unsure text and unfinished by ear -> `incomplete_ms`; else FALLBACK_MS. Without one (pipecat's way):
        finished by ear -> `complete_ms` (with `ear_alone_ends_fast`), unfinished -> `incomplete_ms`, else
        FALLBACK_MS. While the text is still to come: FALLBACK_MS if the ear hears "finished", else the turn waits
        for the words, up to `incomplete_ms` (in the app they are read ~0.3-0.5 s into a pause; ending at FALLBACK_MS
        before then cut "Sunday is the best part of | the week", which smart-turn heard as unsure, 0.36). The ear
        alone never ends a turn fast.
        """
        unfinished_by_ear = audio < self.audio_incomplete
        if text is None:
            if reading:  # the words are being read: wait for them, unless the ear is sure enough for the old rule
                return fallback_ms if audio >= self.audio_complete else self.incomplete_ms
            if self.ear_alone_ends_fast and audio >= self.audio_complete:
                return self.complete_ms
            return self.incomplete_ms if unfinished_by_ear else fallback_ms
        p = text.probability
        if p < self.text_incomplete or (p < self.text_complete and unfinished_by_ear):
            return self.incomplete_ms
        if p >= self.text_complete and not unfinished_by_ear:
            return self.complete_ms if text.asks else self.statement_ms
        return fallback_ms
