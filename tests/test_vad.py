"""utils.vad on real recordings with the real Silero model (no mocks).

Signals are the recordings in tests/data joined with digital silence or low noise, so the true speech
boundaries are known (from an energy envelope) and the detector's answers can be checked in samples.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import wave
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from omni.audio import FRAME, SAMPLE_RATE
from utils.turn import TurnOptions
from utils.vad import PauseDetector, PauseDetectorOptions, SileroVad, VadEvent

DATA = Path(__file__).parent / "data"
SR = SAMPLE_RATE
# The onnx file inside the silero-vad package, found without importing the package (it imports torch).
MODEL = Path(importlib.util.find_spec("silero_vad").origin).parent / "data" / "silero_vad.onnx"
MS = SR // 1000  # samples per millisecond
TOL = 100 * MS  # 100 ms
# Silence after speech long enough for any end of turn: the longest wait is for speech that sounds unfinished (in
# spk1_snt1.wav the recording cuts off the last word), plus a chunk.
LONGEST_WAIT_MS = TurnOptions().incomplete_ms + 500


# --- helpers ---------------------------------------------------------------------------------------


@cache
def recording(name: str) -> np.ndarray:
    """A test recording as 16 kHz mono float32 (read-only)."""
    with wave.open(str(DATA / name)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SR, 1, 2)
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
    x.flags.writeable = False
    return x


def speech_bounds(x: np.ndarray, floor_db: float = 35.0) -> tuple[int, int]:
    """(first, last) sample of speech by energy: 10 ms frames within `floor_db` of the loudest one."""
    hop = 10 * MS
    n = len(x) // hop
    rms_db = 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(rms_db > rms_db.max() - floor_db)
    return int(loud[0] * hop), int(min(len(x), (loud[-1] + 1) * hop))


def trimmed(name: str) -> np.ndarray:
    a, b = speech_bounds(recording(name))
    return recording(name)[a:b]


def silence(ms: float) -> np.ndarray:
    return np.zeros(int(ms * MS), dtype=np.float32)


def noise(ms: float, dbfs: float, seed: int = 0) -> np.ndarray:
    """White noise with RMS `dbfs` (dB re full scale)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(ms * MS)) * 10 ** (dbfs / 20)).astype(np.float32)


def join(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate(parts).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> SileroVad:
    return SileroVad().load(MODEL)


def detector(model: SileroVad, barge_in: bool = False, **options) -> PauseDetector:
    return PauseDetector(PauseDetectorOptions(**options), model.fork(), barge_in=barge_in)


def feed_chunks(det: PauseDetector, audio: np.ndarray, sizes, sample_rate: int = SR) -> list[tuple[VadEvent, int]]:
    """Feed `audio` in chunks of the given sizes (cycled, rest in the last chunk); (event, samples_fed) pairs."""
    out, i, k = [], 0, 0
    sizes = list(sizes)
    while i < len(audio):
        n = sizes[k % len(sizes)] if sizes else len(audio)
        k += 1
        out += [(e, det.samples_fed) for e in det.feed(audio[i : i + n], sample_rate)]
        i += n
    return out


def events(
    det: PauseDetector, audio: np.ndarray, chunk_ms: float | None = 100, sample_rate: int = SR
) -> list[VadEvent]:
    n = len(audio) if chunk_ms is None else max(1, int(chunk_ms * sample_rate / 1000))
    return [e for e, _ in feed_chunks(det, audio, [n], sample_rate)]


def kinds(evs: list[VadEvent]) -> str:
    return " ".join(e.kind for e in evs)


# One turn: speech_start, any number of pause/resume pairs, then pause and end_of_turn.
ONE_TURN = re.compile(r"^speech_start( pause resume)* pause end_of_turn$")


def two_sentences(gap_ms: float, tail_ms: float = 1500) -> tuple[np.ndarray, int, int]:
    """(audio, start of sentence 2, end of sentence 2) for lead silence + s1 + gap + s2 + tail."""
    a, b = trimmed("spk1_snt3.wav"), trimmed("spk1_snt4.wav")
    lead = silence(500)
    audio = join(lead, a, silence(gap_ms), b, silence(tail_ms))
    s2 = len(lead) + len(a) + int(gap_ms * MS)
    return audio, s2, s2 + len(b)


# --- the model -------------------------------------------------------------------------------------


def test_model_file_and_interface(model):
    assert MODEL.is_file()
    import onnxruntime as ort

    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} == {"input", "state", "sr"}
    assert [o.name for o in session.get_outputs()] == ["output", "stateN"]

    vad = model.fork()
    assert vad(np.zeros(FRAME, np.float32)) < 0.1
    speech = trimmed("example1.wav")
    probs = [vad(speech[i : i + FRAME]) for i in range(0, len(speech) - FRAME + 1, FRAME)]
    assert np.mean(np.array(probs) > 0.5) > 0.8
    with pytest.raises(ValueError):
        vad(np.zeros(FRAME - 1, np.float32))


def test_reset_and_fork_are_independent_streams(model):
    x = trimmed("spk1_snt1.wav")[: 20 * FRAME]
    a, b = model.fork(), model.fork()
    pa = [a(x[i : i + FRAME]) for i in range(0, len(x), FRAME)]
    b(np.ones(FRAME, np.float32) * 0.5)  # b has heard something else first
    b.reset()
    pb = [b(x[i : i + FRAME]) for i in range(0, len(x), FRAME)]
    assert pa == pb


def test_options_are_validated():
    with pytest.raises(ValueError):
        PauseDetectorOptions(speech_threshold=0.3, silence_threshold=0.5)
    with pytest.raises(ValueError):
        PauseDetectorOptions(pause_ms=-1)


# --- turn taking -----------------------------------------------------------------------------------


def test_short_gap_between_sentences_is_one_turn(model):
    audio, s2, end2 = two_sentences(gap_ms=300)
    det = detector(model, end_of_turn_ms=700)
    evs = events(det, audio)
    assert ONE_TURN.match(kinds(evs)), kinds(evs)
    start, end = evs[0], evs[-1]
    assert abs(start.sample - 500 * MS) <= TOL
    assert end.reason == "silence" and end.sample > s2  # the turn did not end in the 300 ms gap
    assert abs(end.sample - end2) <= TOL
    assert all(a.sample <= b.sample and a.detected_at <= b.detected_at for a, b in itertools.pairwise(evs))
    assert det.started_talking and det.turn_ended
    assert (det.speech_start, det.speech_end) == (start.sample, end.sample)


@pytest.mark.parametrize("end_ms", [500, 800])
def test_end_of_turn_after_trailing_silence(model, end_ms):
    speech = trimmed("example1.wav")
    audio = join(silence(400), speech, silence(2000))
    det = detector(model, end_of_turn_ms=end_ms, turn=None)  # the silence rule alone (utils.turn's fallback)
    fed = feed_chunks(det, audio, [20 * MS])  # 20 ms chunks, like a browser
    end, fed_at_end = fed[-1]
    assert end.kind == "end_of_turn" and end.reason == "silence"
    # Decided end_of_turn_ms (rounded up to a frame) after speech ended, and returned by that very feed.
    assert abs((end.detected_at - det.speech_end) - end_ms * MS) <= TOL
    assert abs((fed_at_end - det.speech_end) - end_ms * MS) <= TOL
    assert end.sample == det.speech_end
    # ... and speech_end is where the recording's speech really ends.
    assert abs(det.speech_end - (400 * MS + len(speech))) <= TOL


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.wav")))
def test_speech_end_matches_the_recording(model, name):
    """Whole recordings (with their own lead-in, tail and noise floor), end found by energy."""
    x = recording(name)
    lead = 300 * MS
    first, last = speech_bounds(x)
    det = detector(model)
    evs = events(det, join(silence(300), x, silence(LONGEST_WAIT_MS)))
    assert ONE_TURN.match(kinds(evs)), kinds(evs)
    assert abs(det.speech_end - (lead + last)) <= TOL, (det.speech_end - lead - last) / MS
    assert abs(det.speech_start - (lead + first)) <= 2 * TOL


@pytest.mark.parametrize(
    "audio",
    [silence(5000), noise(5000, -30), noise(5000, -20, seed=1), join(noise(2500, -40), silence(2500))],
    ids=["silence", "noise-30dBFS", "noise-20dBFS", "faint-noise-then-silence"],
)
def test_nothing_in_silence_or_steady_noise(model, audio):
    det = detector(model)
    assert events(det, audio) == []
    assert not det.started_talking and not det.turn_ended
    assert det.speech_start is None and det.speech_end is None
    assert det.samples_fed == len(audio)


def test_leading_silence_is_never_a_pause(model):
    speech = trimmed("spk1_snt2.wav")
    det = detector(model, pause_ms=100, end_of_turn_ms=300)
    assert events(det, silence(3000)) == []
    evs = events(det, join(speech, silence(1000)))
    assert evs[0].kind == "speech_start" and abs(evs[0].sample - 3000 * MS) <= TOL


def test_pause_then_resume_then_end(model):
    audio, s2, end2 = two_sentences(gap_ms=450)
    det = detector(model, pause_ms=200, end_of_turn_ms=700)
    seen = []
    for i in range(0, len(audio), 10 * MS):
        for e in det.feed(audio[i : i + 10 * MS], SR):
            seen.append(e)
            if e.kind == "pause":
                assert det.paused and det.speech_end == e.sample and not det.turn_ended
            elif e.kind == "resume":
                assert not det.paused and det.speech_end is None
    assert ONE_TURN.match(kinds(seen)), kinds(seen)
    resume = next(e for e in seen if e.kind == "resume" and e.sample > s2 - TOL)
    pause = seen[seen.index(resume) - 1]
    assert pause.kind == "pause"
    # The pause came ~pause_ms into the gap, the resume where sentence 2 starts, the end after it.
    assert abs(pause.detected_at - pause.sample - 200 * MS) <= TOL
    assert abs(resume.sample - s2) <= TOL
    assert seen[-2].kind == "pause" and seen[-2].sample == seen[-1].sample  # pause before end_of_turn
    assert abs(seen[-1].sample - end2) <= TOL
    # The phrase break sits in the middle of the gap: sentence 1 is on one side of it, sentence 2 on the other.
    (phrase_break,) = det.phrase_breaks
    assert phrase_break == (pause.sample + resume.sample) // 2
    assert s2 - 450 * MS < phrase_break < s2


def test_events_stop_after_end_of_turn_until_reset(model):
    audio, _, _ = two_sentences(gap_ms=1000)  # the gap is longer than end_of_turn_ms
    det = detector(model, end_of_turn_ms=700)
    first = events(det, audio, chunk_ms=None)
    assert kinds(first) == "speech_start pause end_of_turn"  # sentence 2 is not heard
    assert det.feed(audio, SR) == []  # nor anything else
    assert det.samples_fed == 2 * len(audio)  # the audio is still kept
    det.reset()
    assert det.samples_fed == 0 and det.audio.size == 0 and not det.started_talking
    assert events(det, audio, chunk_ms=None) == first  # same model, fresh state, same answer


# --- robustness ------------------------------------------------------------------------------------


def test_same_events_whatever_the_chunking(model):
    audio, _, _ = two_sentences(gap_ms=400, tail_ms=1000)
    rng = np.random.default_rng(7)
    chunkings = {
        "one chunk": [len(audio)],
        "0.5 s": [8000],
        "0.1 s": [1600],
        "random": list(rng.integers(0, 3000, 400)),  # includes empty chunks and single samples
        "one sample, then frames-1": [1, FRAME - 1, FRAME + 1, 3],
    }
    results = {}
    for name, sizes in chunkings.items():
        det = detector(model, pause_ms=200)
        results[name] = ([e for e, _ in feed_chunks(det, audio, sizes)], det.audio.copy())
    reference, ref_audio = results["one chunk"]
    assert ONE_TURN.match(kinds(reference)) and "resume" in kinds(reference)
    for name, (evs, audio_out) in results.items():
        assert evs == reference, name
        assert np.array_equal(audio_out, ref_audio), name
    assert np.array_equal(ref_audio, audio)  # 16 kHz input is kept bit for bit


def test_same_events_whatever_the_chunking_when_resampled(model):
    audio, _, _ = two_sentences(gap_ms=400, tail_ms=1000)
    x48 = np.repeat(audio, 3)  # crude 48 kHz version; soxr band-limits it
    ref = events(detector(model), x48, chunk_ms=None, sample_rate=48_000)
    assert ONE_TURN.match(kinds(ref))
    for chunk_ms in (500, 20, 7.3):
        assert events(detector(model), x48, chunk_ms=chunk_ms, sample_rate=48_000) == ref


def _as_format(x: np.ndarray, fmt: str) -> tuple[np.ndarray, int]:
    import soxr

    if fmt == "48k-stereo-int16":
        y = soxr.resample(x, SR, 48_000)
        return (np.stack([y, 0.5 * y], axis=1) * 32767).astype(np.int16), 48_000
    if fmt == "44.1k-float32":
        return soxr.resample(x, SR, 44_100).astype(np.float32), 44_100
    if fmt == "8k-int16":
        return (soxr.resample(x, SR, 8_000) * 32767).astype(np.int16), 8_000
    if fmt == "16k-int32":
        return (x.astype(np.float64) * 2**31).clip(-(2**31), 2**31 - 1).astype(np.int32), SR
    if fmt == "16k-float64":
        return x.astype(np.float64), SR
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["48k-stereo-int16", "44.1k-float32", "8k-int16", "16k-int32", "16k-float64"])
def test_input_formats(model, fmt):
    speech = trimmed("example1.wav")
    x = join(silence(600), speech, silence(1500))
    audio, rate = _as_format(x, fmt)
    det = detector(model)
    evs = events(det, audio, chunk_ms=40, sample_rate=rate)
    assert ONE_TURN.match(kinds(evs)), kinds(evs)
    assert abs(det.speech_start - 600 * MS) <= 2 * TOL
    assert abs(det.speech_end - (600 * MS + len(speech))) <= TOL
    assert det.audio.dtype == np.float32 and det.audio.ndim == 1
    # Resampled input: minus what the resampler holds back (soxr HQ: ~20 ms at 48 kHz, up to ~90 ms at 8 kHz).
    assert 0 <= len(x) - det.samples_fed <= 100 * MS


def test_nan_inf_and_empty_chunks(model):
    speech = trimmed("spk1_snt5.wav")
    clean = join(silence(640), speech, silence(1500))
    ref = events(detector(model), clean, chunk_ms=None)
    assert ONE_TURN.match(kinds(ref))

    det = detector(model)
    broken = np.full(640 * MS, np.nan, dtype=np.float32)
    broken[::7] = np.inf
    got = det.feed(broken, SR)  # NaN/inf = silence
    got += det.feed(np.zeros(0, np.int16), SR)
    got += det.feed(np.zeros((0, 2), np.float32), 48_000)  # empty, at another rate: nothing changes
    got += det.feed(clean[640 * MS :], SR)
    got += det.feed(np.array([], dtype=np.float64), SR)
    assert got == ref
    assert np.array_equal(det.audio, clean)


def test_rate_change_mid_stream(model):
    speech = trimmed("example1.wav")
    det = detector(model)
    got = det.feed(silence(500), SR)
    got += det.feed(soxr_resample(join(speech[: len(speech) // 2]), 48_000), 48_000)
    got += det.feed(join(speech[len(speech) // 2 :], silence(1500)), SR)
    assert ONE_TURN.match(kinds(got)), kinds(got)
    assert abs(det.samples_fed - (500 * MS + len(speech) + 1500 * MS)) <= 2  # drained on the change
    assert abs(det.speech_end - (500 * MS + len(speech))) <= TOL


def soxr_resample(x: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(x, SR, rate).astype(np.float32)


def test_max_turn_length(model):
    names = sorted(p.name for p in DATA.glob("*.wav"))
    parts, total = [silence(300)], 0
    while total < 40 * SR:
        for name in names:
            parts += [trimmed(name), silence(120)]
            total += len(parts[-2]) + len(parts[-1])
    audio = join(*parts)
    det = detector(model, max_turn_s=30.0)
    evs = events(det, audio, chunk_ms=500)
    end = evs[-1]
    assert end.kind == "end_of_turn" and end.reason == "max_length", kinds(evs)
    assert kinds(evs).count("end_of_turn") == 1
    assert 30 * SR <= end.detected_at - det.speech_start < 30 * SR + FRAME
    assert det.speech_end == end.sample <= end.detected_at
    # The rest of the 40 s is kept but not analysed.
    assert det.samples_fed == len(audio)


# --- barge-in --------------------------------------------------------------------------------------


def cough(ms: float = 150, peak_dbfs: float = -6, seed: int = 3) -> np.ndarray:
    """A cough-like burst: loud noise band-limited to 300-3000 Hz, fast attack, exponential decay."""
    n = int(ms * MS)
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spectrum[(f < 300) | (f > 3000)] = 0
    y = np.fft.irfft(spectrum, n)
    t = np.arange(n) / SR
    y *= np.minimum(1.0, t / 0.01) * np.exp(-t / (ms / 1000 / 3))
    return (y / np.abs(y).max() * 10 ** (peak_dbfs / 20)).astype(np.float32)


def test_barge_in_ignores_a_cough_but_not_speech(model):
    coughs = join(silence(500), cough(), silence(800), cough(seed=4), silence(800))
    assert events(detector(model, barge_in=True), coughs) == []

    speech = trimmed("spk1_snt1.wav")
    det = detector(model, barge_in=True)
    evs = events(det, join(coughs, speech, silence(LONGEST_WAIT_MS)), chunk_ms=20)
    assert evs[0].kind == "speech_start" and ONE_TURN.match(kinds(evs)), kinds(evs)
    assert abs(evs[0].sample - len(coughs)) <= TOL
    # It takes at least barge_in_min_ms of speech to decide, and not much more.
    assert 300 * MS <= evs[0].detected_at - evs[0].sample <= 300 * MS + TOL


def test_barge_in_is_stricter_than_normal_start(model):
    speech = trimmed("spk1_snt1.wav")
    audio = join(silence(500), speech, silence(1500))
    normal = events(detector(model), audio)[0]
    barge = events(detector(model, barge_in=True), audio)[0]
    assert normal.kind == barge.kind == "speech_start"
    assert barge.detected_at - barge.sample >= 300 * MS > normal.detected_at - normal.sample
    # The flag can be flipped on a live detector (e.g. when the assistant starts speaking).
    det = detector(model)
    det.barge_in = True
    assert events(det, audio)[0] == barge


def test_audio_is_kept_without_copies(model):
    det = detector(model)
    chunks = [noise(20, -50, seed=i) for i in range(200)]
    views = []
    for c in chunks:
        det.feed(c, SR)
        views.append(det.audio)
    assert np.array_equal(det.audio, np.concatenate(chunks))
    assert all(np.array_equal(v, det.audio[: len(v)]) for v in views)  # earlier views stay valid
    assert not det.audio.flags.writeable


def test_stereo_int_pcm_is_scaled_and_mixed(model):
    x = join(silence(200), trimmed("spk1_snt4.wav"), silence(200))
    stereo = (np.stack([x, 0.5 * x], axis=1) * 32767).astype(np.int16)
    det = detector(model)
    det.feed(stereo, SR)
    assert np.allclose(det.audio, 0.75 * x, atol=1e-4)
    det32 = detector(model)
    det32.feed((np.stack([x, x], axis=1) * 2**30).astype(np.int32), SR)
    assert np.allclose(det32.audio, 0.5 * x, atol=1e-4)


def test_default_model_comes_from_the_registry():
    models = pytest.importorskip("omni.models")
    assert models.resolve("vad").is_file()
    det = PauseDetector()  # no model given: loaded through omni.models on the first frame
    evs = events(det, join(silence(300), trimmed("example1.wav"), silence(1000)))
    assert kinds(evs) == "speech_start pause end_of_turn"
    assert det.vad.loaded
