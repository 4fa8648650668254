"""Pause detection for hands-free turn taking: Silero VAD (onnx, run by onnxruntime) + a small state machine.

Two pieces, one concern each:

* `SileroVad` runs the Silero v5/v6 onnx model on one 32 ms frame (512 samples at 16 kHz) at a time and
  returns the speech probability. It carries the model's recurrent state and the 64-sample context the
  model expects in front of every frame. No torch: onnxruntime on one thread, so the VAD never competes
  with ASR and the LLM for the CPU cores (one frame costs well under a millisecond).
* `PauseDetector` takes audio chunks as they come from the browser (any rate, channel count, dtype or
  size), turns them into a 16 kHz mono stream, runs the VAD once per new frame and reports `VadEvent`s:

      speech_start -> pause -> (resume -> pause ->)* end_of_turn

  `pause` is a hint (the user may be done: start speculative work), `resume` cancels it, `end_of_turn`
  is final: after it the detector is silent until `reset()`.

How much silence ends the turn depends on what was said (`utils.turn`): at the frame where a silence reaches
`TurnOptions.check_ms`, smart-turn hears the turn's last phrase up to that frame; with the language model's
reading of the words up to there (a callable, `text_end`), `TurnOptions.required_silence_ms` says how long to
wait: ~1/4 s after a finished question, ~1/2 s after a finished statement, 3 s after an unfinished one, the old
700 ms (`end_of_turn_ms`) if unsure.

Sample accounting. Every event carries `sample`, an index into the 16 kHz stream fed since `reset()`
(`PauseDetector.audio`), and `detected_at`, the stream position at which the event was decided (the end
of the frame that triggered it). The VAD works on whole frames, so `sample` values are multiples of 512
and `detected_at - sample` is the silence (or speech) that was needed to decide. Decisions depend only on
the frame sequence, never on how the input was chunked: the same audio gives the same events at the same
samples whether it arrives in one piece or in 10 ms pieces.

Input that is already 16 kHz bypasses the resampler, so its sample indices are exact. Other rates go
through `soxr.ResampleStream`, which keeps the timeline aligned (output sample k is input time k/16000)
but holds back its filter's look-ahead (a few ms; `RESAMPLER_QUALITY` "HQ") until later input arrives.
So for resampled input the indices are still the input's timeline up to the resampler's interpolation,
and events are decided that few ms of input later than for 16 kHz input; the last few ms of the stream
only reach `audio` once more input arrives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soxr

from omni.audio import FRAME, SAMPLE_RATE, AudioError, to_mono_float32
from omni.speech_model import WordsEnd
from utils.turn import SmartTurn, TurnOptions

CONTEXT = 64  # samples of the previous frame that Silero v5/v6 wants in front of each 16 kHz frame
STATE_SHAPE = (2, 1, 128)  # Silero v5/v6 recurrent state
RESAMPLER_QUALITY = "HQ"  # soxr quality for non-16 kHz input (the ASR hears this audio too)

EventKind = Literal["speech_start", "pause", "resume", "end_of_turn"]


class SileroVad:
    """Silero VAD v5/v6 on 16 kHz audio, one 512-sample frame per call, through onnxruntime.

    Usage: ``vad = SileroVad().load(); p = vad(frame)``. `reset()` forgets the audio heard so far (recurrent
    state and context) and keeps the loaded model. `fork()` gives an independent stream that shares the
    loaded onnx session (onnxruntime sessions may be run from several threads), so many detectors cost one
    model load.
    """

    def __init__(self) -> None:
        self._session = None
        self._input_names: tuple[str, str, str] = ("input", "state", "sr")
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self, path: Path | str | None = None) -> SileroVad:
        """Load the onnx model (by default the one `omni.models.resolve("vad")` names). Returns self."""
        if path is None:
            from omni.models import resolve  # lazy: the model registry is only needed here

            path = resolve("vad")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Silero VAD model not found: {path}")
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread: a 32 ms frame takes a fraction of a millisecond, and the cores belong to ASR and LLM.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        if names != {"input", "state", "sr"} or len(session.get_outputs()) != 2:
            raise ValueError(
                f"{path} is not a Silero VAD v5/v6 model (inputs {sorted(names)}, "
                f"{len(session.get_outputs())} outputs; expected input, state, sr -> prob, state)"
            )
        self._session = session
        self.reset()
        return self

    def fork(self) -> SileroVad:
        """A new, reset `SileroVad` sharing this one's loaded session (load this one first)."""
        if self._session is None:
            raise RuntimeError("SileroVad.fork() needs a loaded model: call load() first")
        other = SileroVad()
        other._session = self._session
        return other

    def reset(self) -> None:
        """Forget the stream (recurrent state and context); the loaded model stays."""
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)

    def __call__(self, frame: np.ndarray) -> float:
        """Speech probability in [0, 1] of the next 512-sample frame of a 16 kHz mono float32 stream."""
        if self._session is None:
            self.load()
        frame = np.asarray(frame, dtype=np.float32).reshape(-1)
        if frame.shape[0] != FRAME:
            raise ValueError(f"SileroVad wants frames of {FRAME} samples at {SAMPLE_RATE} Hz, got {frame.shape[0]}")
        x = np.concatenate((self._context, frame))[None, :]
        prob, state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._state = state
        self._context = frame[-CONTEXT:].copy()
        return float(np.asarray(prob).reshape(-1)[0])


@dataclass
class PauseDetectorOptions:
    """When the user has started talking, paused, and finished. Times are rounded up to whole 32 ms frames.

    speech_threshold: VAD probability at which a frame counts as speech (Silero's own default, 0.5).
    silence_threshold: probability below which a frame counts as silence. Between the two thresholds a
        frame keeps the current state (hysteresis, like Silero's `neg_threshold` = threshold - 0.15), so
        a soft syllable does not break speech and a breath does not end a silence.
    min_speech_ms: speech needed before the user counts as having started talking (250 ms: a click, a
        cough or a door does not start a turn; a short "yes" does).
    pause_ms: silence after speech that marks a possible end of turn (190 ms, i.e. 6 frames = 192 ms: the gap
        between sentences is often longer, so this fires often; later code starts speculative ASR/LLM work
        here and throws it away on `resume`). At most end_of_turn_ms minus the app's 0.5 s chunk (704 - 500 =
        204 ms), so that a pause is reported one chunk before a 700 ms end of turn: the speculative answer then
        has a head start (at 200 ms = 224 ms, a silence of 204-224 ms at a chunk's end gave none). A turn that
        `turn` ends fast (256 ms) often ends in the pause's own chunk: its answer starts at the end of turn.
    end_of_turn_ms: silence after speech that ends the turn when nothing better is known (700 ms: long enough
        for a thinking pause mid-sentence, short enough to feel responsive): with `turn` None always, otherwise
        when smart-turn and the language model disagree or are unsure.
    turn: the end-of-turn policy that listens to what was said (`utils.turn.TurnOptions`); None: silence only.
    max_turn_s: a turn this long (from speech_start) ends regardless, reason "max_length" (30 s: Whisper
        hears 30 s windows, and a stuck VAD or a TV in the room must not hold the turn forever).
    barge_in_threshold, barge_in_min_ms: used for speech_start instead of speech_threshold and
        min_speech_ms when the detector is in barge-in mode (the user may interrupt the assistant while
        it talks: echo and noise leak into the microphone then, so the bar is higher: 0.8 and 300 ms).
    barge_in_min_dbfs: in barge-in mode the speech run must also average at least this level (-40 dBFS).
        Silero hears speech at any level, including the assistant's own voice leaking back past the
        browser's echo cancellation (~-46 dBFS for our voice 30 dB down); a person talking into the
        microphone is far louder (-28 to -33 dBFS on the quiet test recordings).
    """

    speech_threshold: float = 0.5
    silence_threshold: float = 0.35
    min_speech_ms: float = 250.0
    pause_ms: float = 190.0
    end_of_turn_ms: float = 700.0
    turn: TurnOptions | None = field(default_factory=TurnOptions)
    max_turn_s: float = 30.0
    barge_in_threshold: float = 0.8
    barge_in_min_ms: float = 300.0
    barge_in_min_dbfs: float = -40.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.silence_threshold <= self.speech_threshold <= 1.0:
            raise ValueError("need 0 <= silence_threshold <= speech_threshold <= 1")
        if not self.silence_threshold <= self.barge_in_threshold <= 1.0:
            raise ValueError("need silence_threshold <= barge_in_threshold <= 1")
        for name in ("min_speech_ms", "pause_ms", "end_of_turn_ms", "max_turn_s", "barge_in_min_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


@dataclass(frozen=True)
class VadEvent:
    """One turn-taking event.

    kind: "speech_start" | "pause" | "resume" | "end_of_turn".
    sample: 16 kHz sample index since reset: for speech_start the start of the first speech frame; for
        pause and end_of_turn the end of the last speech frame (where speech ended; for a max_length end
        while the user still talks, the end of the current frame); for resume the start of the first
        speech frame after the pause.
    detected_at: the 16 kHz stream position at which the event was decided (end of the frame that
        triggered it); `detected_at - sample` is the silence or speech it took to decide.
    reason: for end_of_turn "silence" or "max_length", otherwise None.
    """

    kind: EventKind
    sample: int
    detected_at: int
    reason: Literal["silence", "max_length"] | None = None

    @property
    def seconds(self) -> float:
        return self.sample / SAMPLE_RATE


def _frames(ms: float) -> int:
    """Whole 32 ms frames covering `ms` (at least 1): 200 ms -> 7 frames (224 ms), 700 ms -> 22 (704 ms)."""
    return max(1, math.ceil(ms * SAMPLE_RATE / 1000.0 / FRAME - 1e-9))


class PauseDetector:
    """Streaming turn detector: `feed()` audio chunks, get `VadEvent`s.

    Events of one turn always read ``speech_start (pause resume)* pause end_of_turn`` (reason "silence"; the
    last pause and the end_of_turn share their `sample`), or end with ``end_of_turn`` reason "max_length"
    at any point after speech_start. Nothing happens before speech_start: leading silence or noise is
    never a pause. After end_of_turn the VAD stops (audio is still kept in `audio`) until `reset()`.

    `barge_in=True` (also settable later as the `barge_in` attribute, e.g. while the assistant speaks)
    makes speech_start need `barge_in_threshold` / `barge_in_min_ms` instead of `speech_threshold` /
    `min_speech_ms`; everything after speech_start is the same. The flag is read when a speech_start is
    being decided, so flipping it mid-stream is fine.

    With `options.turn` (the default) the end of a turn depends on what was said, not only on the silence:
    `smart_turn` (default: `SmartTurn.shared()`, loaded here) hears each pause once, and `text_end`, if set, is
    asked at every silent frame after that for the language model's reading of the user's words up to the given
    sample (where this silence began): a `WordsEnd`, or None while it is not known. It must be quick (read
    a value computed elsewhere, e.g. while listening ahead) and answer only for a transcript that covers the
    audio up to that sample. Its answers may depend on timing; everything else depends only on the audio.

    Not thread-safe: one detector per audio stream (use `SileroVad.fork()` to share one loaded model).
    """

    def __init__(
        self,
        options: PauseDetectorOptions | None = None,
        vad: SileroVad | None = None,
        *,
        barge_in: bool = False,
        smart_turn: SmartTurn | None = None,
        text_end: Callable[[int], WordsEnd | None] | None = None,
    ) -> None:
        self.options = options if options is not None else PauseDetectorOptions()
        self.vad = vad if vad is not None else SileroVad()  # loads on the first frame if not loaded
        self.barge_in = barge_in
        if smart_turn is None and self.options.turn is not None:
            smart_turn = SmartTurn.shared()
        self.smart_turn = smart_turn
        self.text_end = text_end
        self.reset()

    # --- state ---------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new turn: forget audio, events and VAD state; keep the loaded model and options."""
        self.vad.reset()
        self._buf = np.zeros(0, dtype=np.float32)  # 16 kHz audio; capacity doubles, [: self._n] is valid
        self._n = 0
        self._pos = 0  # start of the next frame the VAD has not seen
        self._resampler: soxr.ResampleStream | None = None
        self._in_rate: int | None = None
        self._events: list[VadEvent] = []
        self._started = False
        self._ended = False
        self._paused = False  # a pause event is out and no resume yet
        self._run_start: int | None = None  # before speech_start: start of the candidate speech run
        self._run_frames = 0  # ... and its frames above the start threshold
        self._run_power = 0.0  # ... and their summed mean-square level (barge-in needs a loud run)
        self._speech_start: int | None = None
        self._phrase_start: int | None = None  # speech_start, or the last resume: what smart-turn hears
        self._silence_start: int | None = None  # after speech_start: where the current silence began
        self._speech_end: int | None = None
        self._heard: float | None = None  # smart-turn's P(complete) for the current silence
        self._read: WordsEnd | None = None  # the language model's reading of the words, as last read

    @property
    def started_talking(self) -> bool:
        return self._started

    @property
    def turn_ended(self) -> bool:
        return self._ended

    @property
    def paused(self) -> bool:
        """True between a pause event and the next resume (or end_of_turn)."""
        return self._paused

    @property
    def speech_start(self) -> int | None:
        """Sample index of the speech_start event, None before it."""
        return self._speech_start

    @property
    def speech_end(self) -> int | None:
        """Sample index where the current silence after speech began; None before speech or while talking."""
        return self._speech_end

    @property
    def verdict(self) -> tuple[float | None, WordsEnd | None]:
        """(smart-turn's P(complete), the language model's reading) for the current or last silence; None: not
        asked or not known (yet)."""
        return self._heard, self._read

    @property
    def phrase_breaks(self) -> list[int]:
        """Where the speaker paused and went on in this turn: the middle of each such silence (sample indices).

        The words before a break are finished (a pause of at least `pause_ms`, then new speech), so a
        transcriber may take each phrase once instead of the whole turn again and again; the middle leaves
        half the silence (>= 96 ms) on each side for soft endings and onsets."""
        breaks, paused_at = [], None
        for event in self._events:
            if event.kind == "pause":
                paused_at = event.sample
            elif event.kind == "resume" and paused_at is not None:
                breaks.append((paused_at + event.sample) // 2)
        return breaks

    @property
    def events(self) -> list[VadEvent]:
        """All events since reset, in order."""
        return list(self._events)

    @property
    def samples_fed(self) -> int:
        """16 kHz samples in `audio` (for resampled input, minus the few the resampler still holds)."""
        return self._n

    @property
    def position(self) -> int:
        """16 kHz samples the VAD has judged (whole frames): the end of the frame being decided, while deciding."""
        return self._pos

    @property
    def audio(self) -> np.ndarray:
        """All audio fed since reset, 16 kHz mono float32 (a read-only view; no copy)."""
        view = self._buf[: self._n]
        view.flags.writeable = False
        return view

    # --- input ---------------------------------------------------------------------------------------

    def feed(self, audio: np.ndarray, sample_rate: int) -> list[VadEvent]:
        """Add a chunk (any rate, mono/stereo, int/float, any length, NaN/inf = silence); return new events."""
        sample_rate = int(sample_rate)
        if sample_rate <= 0:
            raise AudioError(f"invalid sample rate {sample_rate}")
        mono = to_mono_float32(audio)
        if sample_rate == SAMPLE_RATE:
            if self._resampler is not None:  # the rate changed back to 16 kHz: drain the old stream
                self._append(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
                self._resampler, self._in_rate = None, None
            self._append(mono)
        else:
            if self._in_rate != sample_rate:
                if self._resampler is not None:
                    self._append(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
                self._resampler = soxr.ResampleStream(
                    sample_rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLER_QUALITY
                )
                self._in_rate = sample_rate
            if mono.size:
                self._append(self._resampler.resample_chunk(np.ascontiguousarray(mono)))
        return self._run()

    def _append(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        need = self._n + x.size
        if need > self._buf.size:
            # Amortised O(total): double the capacity. Old views (from `audio`) keep their own buffer.
            grown = np.empty(max(need, 2 * self._buf.size, 16 * FRAME), dtype=np.float32)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n : need] = x
        self._n = need

    # --- the state machine, one frame at a time ------------------------------------------------------

    def _run(self) -> list[VadEvent]:
        new: list[VadEvent] = []
        while not self._ended and self._n - self._pos >= FRAME:
            start = self._pos
            frame = self._buf[start : start + FRAME]
            prob = self.vad(frame)
            self._pos += FRAME
            self._step(prob, start, new, float(np.mean(frame.astype(np.float64) ** 2)))
        self._events.extend(new)
        return new

    def _step(self, prob: float, start: int, out: list[VadEvent], power: float = 0.0) -> None:
        o = self.options
        end = start + FRAME
        if not self._started:
            # Waiting for the user: a run of frames at or above the start threshold, none below the
            # silence threshold, with enough frames above the start threshold, starts the turn.
            threshold = o.barge_in_threshold if self.barge_in else o.speech_threshold
            needed = _frames(o.barge_in_min_ms if self.barge_in else o.min_speech_ms)
            if prob >= threshold:
                if self._run_start is None:
                    self._run_start, self._run_power = start, 0.0
                self._run_frames += 1
                self._run_power += power
                # In barge-in mode the run must also be loud on average: the assistant's own voice leaking
                # back into the microphone is speech too, but far quieter than someone talking into it.
                loud = not self.barge_in or 10 * math.log10(self._run_power / self._run_frames + 1e-12) >= o.barge_in_min_dbfs
                if self._run_frames >= needed and loud:
                    self._started = True
                    self._speech_start = self._phrase_start = self._run_start
                    out.append(VadEvent("speech_start", self._run_start, end))
            elif prob < o.silence_threshold or self._run_start is None:
                self._run_start, self._run_frames = None, 0
            # Leading silence is never a pause: nothing else happens before speech_start.
            if not self._started:
                return
            # The start frame itself is speech; fall through only for the max_length check.
        elif self._silence_start is None:
            if prob < o.silence_threshold:  # speech -> silence
                self._silence_start = start
                self._speech_end = start
                self._heard = self._read = None
        elif prob >= o.speech_threshold:  # silence -> speech
            self._silence_start = None
            self._speech_end = None
            if self._paused:
                self._paused = False
                out.append(VadEvent("resume", start, end))
                self._phrase_start = start

        if self._silence_start is not None:
            silent = end - self._silence_start
            if not self._paused and silent >= _frames(o.pause_ms) * FRAME:
                self._paused = True
                out.append(VadEvent("pause", self._silence_start, end))
            if silent >= self._silence_to_end(silent, end):
                self._finish(self._silence_start, end, "silence", out)
                return
        if end - self._speech_start >= round(o.max_turn_s * SAMPLE_RATE):
            if self._silence_start is None:
                self._speech_end = end  # still talking: the turn is cut here
            self._finish(self._speech_end, end, "max_length", out)

    def _silence_to_end(self, silent: int, end: int) -> int:
        """Samples of silence that end the turn, as far as is known at the frame ending at END."""
        o, turn = self.options, self.options.turn
        if turn is None:
            return _frames(o.end_of_turn_ms) * FRAME
        check = _frames(turn.check_ms) * FRAME
        if silent < check:
            return check  # nothing ends before smart-turn has heard the pause
        if silent == check:  # the same frame whatever the chunking: the same audio, the same verdict
            context = round(turn.context_ms * SAMPLE_RATE / 1000)
            self._heard = self.smart_turn(self._buf[max(0, self._phrase_start - context) : end])
        self._read = self.text_end(self._silence_start) if self.text_end is not None else None
        required = turn.required_silence_ms(self._heard, self._read, o.end_of_turn_ms, self.text_end is not None)
        return _frames(required) * FRAME

    def _finish(self, sample: int, end: int, reason: Literal["silence", "max_length"], out: list[VadEvent]) -> None:
        if not self._paused and reason == "silence":
            out.append(VadEvent("pause", sample, end))  # a pause always comes before a silence end
        self._paused = False
        self._ended = True
        out.append(VadEvent("end_of_turn", sample, end, reason))
