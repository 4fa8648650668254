"""Semantic end of turn (utils.turn + utils.vad) on the real recordings of tests/data/turns, real models, no mocks.

The recordings come with the sample where the speaker really stopped and the pauses that were not an end
(index.tsv, made by tests/data/turns/make.py); bench.turn pads them with room tone, as a microphone hears it.
"""

from __future__ import annotations

import io
import time
import zipfile
from functools import cache

import numpy as np
import pytest

from bench.turn import CHUNK, Recording, load_set, phases, read_in_time
from omni import models
from omni.audio import FRAME, SAMPLE_RATE
from omni.conversation import Conversation
from omni.models import ModelError
from omni.speech_model import WordsEnd
from utils.turn import SmartTurn, TurnOptions
from utils.vad import PauseDetector, PauseDetectorOptions, SileroVad, VadEvent

MS = SAMPLE_RATE // 1000
OPTIONS = TurnOptions()


@cache
def recordings() -> dict[str, Recording]:
    return {rec.name: rec for rec in load_set()}


@pytest.fixture(scope="module")
def vad() -> SileroVad:
    return SileroVad().load()


@pytest.fixture(scope="module")
def smart_turn() -> SmartTurn:
    return SmartTurn.shared()


def feed(detector: PauseDetector, audio: np.ndarray, chunk: int = CHUNK) -> list[VadEvent]:
    return [e for i in range(0, len(audio), chunk) for e in detector.feed(audio[i : i + chunk], SAMPLE_RATE)]


def end_of_turn(events: list[VadEvent]) -> VadEvent | None:
    return next((e for e in events if e.kind == "end_of_turn"), None)


# --- the model ---------------------------------------------------------------------------------------------


def test_model_comes_from_the_pipecat_wheel_verified():
    path = models.resolve("smart-turn")
    spec = models.REGISTRY["smart-turn"]
    assert path.name == "smart-turn-v3.2-cpu.onnx" and path.stat().st_size == 8_679_182
    assert path.with_name(path.name + ".sha256").read_text().split()[-1] == spec.sha256
    assert models.missing_wheels() == []  # setup.sh has nothing left to download


def test_missing_or_damaged_model_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "CACHE", tmp_path / "models")
    monkeypatch.setattr(models, "WHEELS", tmp_path / "wheels")
    monkeypatch.delenv("OMNI_SMART_TURN_PATH", raising=False)
    monkeypatch.delenv("OMNI_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(ModelError, match=r"pip download --no-deps pipecat-ai==1\.14\.0") as missing:
        models.resolve("smart-turn")
    assert "OMNI_SMART_TURN_PATH" in str(missing.value)
    assert models.missing_wheels() == ["pipecat-ai==1.14.0"]

    # A wheel whose model is not the one we know: refused, nothing left in the cache.
    spec = models.REGISTRY["smart-turn"]
    spec.wheel_file.parent.mkdir(parents=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr(spec.package_files[0], b"not the model")
    spec.wheel_file.write_bytes(buffer.getvalue())
    with pytest.raises(ModelError, match="sha256 .* expected .* Download it again"):
        models.resolve("smart-turn")
    assert not (tmp_path / "models" / spec.checkpoint).exists()

    with pytest.raises(ModelError, match="not found"):
        SmartTurn().load(tmp_path / "nowhere.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a usable onnx model"):
        SmartTurn().load(tmp_path / "junk.onnx")


def test_features_are_whisper_log_mel_of_the_last_8_s(smart_turn):
    x = np.random.default_rng(0).standard_normal(10 * SAMPLE_RATE).astype(np.float32) * 0.1
    features = smart_turn.features(x)
    assert features.shape == (80, 800) and features.dtype == np.float32
    assert np.array_equal(features, smart_turn.features(x[-8 * SAMPLE_RATE :]))  # only the last 8 s count
    short = smart_turn.features(x[:SAMPLE_RATE])  # zero-padded in front: the audio is at the end
    assert np.ptp(short[:, -100:]) > np.ptp(short[:, :600])


def test_verdicts_on_real_speech(smart_turn):
    """Finished utterances with 192 ms of silence after them score high; a sentence stopped on "the" scores low."""
    sets = recordings()
    for name in ("example1", "pi_mountain", "es_austen", "spk1_snt5"):
        rec = sets[name]
        assert smart_turn(rec.audio[: rec.end + 192 * MS]) > 0.9, name  # 0.93-0.99
    canoe = sets["hu_canoe"]  # "The birch canoe slid on the | smooth planks."
    pause_start = canoe.pauses[0][0]
    assert smart_turn(canoe.audio[: pause_start + 192 * MS]) < OPTIONS.audio_incomplete


# --- the policy ----------------------------------------------------------------------------------------------


def test_policy_table():
    o, fallback = OPTIONS, 700.0
    done, unsure, open_ = 0.99, 0.3, 0.02  # by ear
    asked, told = WordsEnd(0.5), WordsEnd(0.5, asks=False)  # a finished question, a finished statement
    # With a language model: both must agree for a fast end; the text's "unfinished" wins.
    assert o.required_silence_ms(done, asked, fallback, reading=True) == o.complete_ms
    assert o.required_silence_ms(unsure, asked, fallback, reading=True) == o.complete_ms
    assert o.required_silence_ms(open_, asked, fallback, reading=True) == fallback
    assert o.required_silence_ms(done, WordsEnd(0.001), fallback, reading=True) == o.incomplete_ms
    assert o.required_silence_ms(done, WordsEnd(0.03), fallback, reading=True) == fallback
    assert o.required_silence_ms(open_, WordsEnd(0.03), fallback, reading=True) == o.incomplete_ms
    # A statement may be the preamble to a question: a breath longer ("I have two cats. | And one dog.").
    assert o.complete_ms < o.required_silence_ms(done, told, fallback, reading=True) == o.statement_ms < fallback
    assert o.required_silence_ms(done, WordsEnd(0.001, asks=False), fallback, reading=True) == o.incomplete_ms
    # ... and while the words are not read yet, the old rule if the ear is sure, else it waits for them.
    assert o.required_silence_ms(done, None, fallback, reading=True) == fallback
    assert o.required_silence_ms(unsure, None, fallback, reading=True) == o.incomplete_ms
    assert o.required_silence_ms(open_, None, fallback, reading=True) == o.incomplete_ms
    # Without one, the ear decides (pipecat's way).
    assert o.required_silence_ms(done, None, fallback, reading=False) == fallback  # the ear alone: never fast...
    assert o.required_silence_ms(open_, None, fallback, reading=False) == o.incomplete_ms  # ...but keeps it open
    ear = TurnOptions(ear_alone_ends_fast=True)  # pipecat's way
    assert ear.required_silence_ms(done, None, fallback, reading=False) == ear.complete_ms
    assert ear.required_silence_ms(unsure, None, fallback, reading=False) == fallback
    assert ear.required_silence_ms(open_, None, fallback, reading=False) == ear.incomplete_ms
    with pytest.raises(ValueError):
        TurnOptions(complete_ms=100)  # a turn cannot end before smart-turn has heard the pause


# --- the detector on real recordings -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pi_mountain", "es_austen", "example1", "spk1_snt5"])
def test_a_complete_utterance_ends_fast(vad, smart_turn, name):
    rec = recordings()[name]
    by_ear = PauseDetectorOptions(turn=TurnOptions(ear_alone_ends_fast=True))
    detector = PauseDetector(by_ear, vad.fork(), smart_turn=smart_turn)
    end = end_of_turn(feed(detector, rec.audio))
    assert end is not None and end.reason == "silence"
    assert abs(end.sample - rec.end) <= 200 * MS  # where the speaker stopped (Silero hears it ~70 ms late)
    # Decided after complete_ms of silence by Silero: < 600 ms after the last sound, where the 700 ms rule needs 770+.
    assert end.detected_at - end.sample == np.ceil(OPTIONS.complete_ms * MS / FRAME) * FRAME
    assert end.detected_at - rec.end < 600 * MS
    # A language model that agrees changes nothing; one that is still reading holds the fast end back.
    agreeing = PauseDetector(PauseDetectorOptions(), vad.fork(), smart_turn=smart_turn, text_end=lambda s: WordsEnd(0.5))
    assert feed(agreeing, rec.audio) == feed(PauseDetector(by_ear, vad.fork()), rec.audio)
    reading = PauseDetector(PauseDetectorOptions(), vad.fork(), smart_turn=smart_turn, text_end=lambda s: None)
    slow = end_of_turn(feed(reading, rec.audio))
    assert slow.sample == end.sample and slow.detected_at - slow.sample >= 700 * MS


@pytest.mark.parametrize("name", ["hu_canoe", "hu_when", "es_um_table", "pi_so_um"])
def test_a_pause_inside_a_sentence_is_not_cut(vad, smart_turn, name):
    """1 s after "on the", 0.8 s after "when" (human), 1.2 s after "for, um," and 1 s after "So, um," (synthetic)."""
    rec = recordings()[name]
    (pause,) = rec.pauses
    assert pause[1] - pause[0] >= 700 * MS  # the 700 ms rule cuts every one of these
    old = end_of_turn(feed(PauseDetector(PauseDetectorOptions(turn=None), vad.fork()), rec.audio))
    assert old.sample < rec.end - 200 * MS
    detector = PauseDetector(PauseDetectorOptions(), vad.fork(), smart_turn=smart_turn)
    events = feed(detector, rec.audio)
    assert [e.kind for e in events][:4] == ["speech_start", "pause", "resume", "pause"]
    end = end_of_turn(events)
    assert end is not None and end.sample >= rec.end - 200 * MS, detector.verdict


def test_text_that_goes_on_keeps_a_finished_sounding_clause_open(vad, smart_turn):
    """ "Unless the weather gets a lot better, | we should stay at home.": by ear the clause is finished (0.9)."""
    rec = recordings()["pi_unless"]
    (pause,) = rec.pauses
    ear_alone = PauseDetectorOptions(turn=TurnOptions(ear_alone_ends_fast=True))
    by_ear = feed(PauseDetector(ear_alone, vad.fork(), smart_turn=smart_turn), rec.audio)
    assert end_of_turn(by_ear).sample < pause[1]  # cut in the pause (hence the ear alone never ends a turn fast)
    by_default = end_of_turn(feed(PauseDetector(PauseDetectorOptions(), vad.fork(), smart_turn=smart_turn), rec.audio))
    assert by_default.detected_at - by_default.sample >= 700 * MS  # without the words: no sooner than the old rule
    # The words are read a chunk after the pause began; "Unless the weather gets a lot better" goes on (0.003).
    asked = []

    def text_end(silence_start: int) -> WordsEnd | None:
        asked.append(silence_start)
        if detector.samples_fed < silence_start + CHUNK:
            return None
        return WordsEnd(0.003, asks=False) if silence_start < pause[1] else WordsEnd(0.54, asks=False)

    detector = PauseDetector(PauseDetectorOptions(), vad.fork(), smart_turn=smart_turn, text_end=text_end)
    events = feed(detector, rec.audio)
    end = end_of_turn(events)
    assert end.sample >= rec.end - 200 * MS and detector.verdict[1] == WordsEnd(0.54, asks=False)
    assert {e.sample for e in events if e.kind == "pause"} == set(asked)  # asked about each pause, by its start


@pytest.mark.parametrize("name", ["no_knocks", "no_fan_keys"])
def test_noise_ends_nothing(vad, smart_turn, name):
    rec = recordings()[name]
    detector = PauseDetector(PauseDetectorOptions(), vad.fork(), smart_turn=smart_turn)
    assert feed(detector, rec.audio) == []
    assert not detector.started_talking and detector.verdict == (None, None)


def test_speech_in_noise_ends_where_the_speaker_stopped(vad, smart_turn):
    """Pink noise 15 dB under the voice, before and after it: the noise neither holds the turn nor ends it."""
    rec = recordings()["es_weather_noisy"]
    events = feed(PauseDetector(PauseDetectorOptions(), vad.fork(), smart_turn=smart_turn), rec.audio)
    assert [e.kind for e in events] == ["speech_start", "pause", "end_of_turn"]
    assert abs(end_of_turn(events).sample - rec.end) <= 200 * MS


@pytest.mark.parametrize("name", ["hu_canoe", "pi_unless"])
def test_same_events_whatever_the_chunking(vad, smart_turn, name):
    """smart-turn hears the pause at the very frame its silence reaches check_ms, whatever the chunk size."""
    audio = recordings()[name].audio
    rng = np.random.default_rng(3)
    cuts = np.cumsum(rng.integers(0, 3 * FRAME, len(audio) // FRAME))
    chunkings = {"whole": [audio], "0.5 s": [audio[i : i + CHUNK] for i in range(0, len(audio), CHUNK)]}
    chunkings["20 ms"] = [audio[i : i + 20 * MS] for i in range(0, len(audio), 20 * MS)]
    chunkings["random"] = np.split(audio, cuts[cuts < len(audio)])  # includes empty chunks
    results = {}
    for label, chunks in chunkings.items():
        detector = PauseDetector(PauseDetectorOptions(), vad.fork(), smart_turn=smart_turn)
        results[label] = ([e for c in chunks for e in detector.feed(c, SAMPLE_RATE)], detector.verdict)
    reference = results["whole"]
    assert end_of_turn(reference[0]) is not None and reference[1][0] is not None
    for label, result in results.items():
        assert result == reference, label


# --- the language model ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat():
    from omni.llm import ChatModel

    return ChatModel("qwen2.5-1.5b")


@pytest.mark.slow
def test_read_steps(chat):
    def read(history: list, words: str) -> WordsEnd:
        return [*chat.read_steps(history, words)][-1]

    def p(words: str) -> float:
        return read([], words).probability

    finished = ["What is the capital of France?", "Can you set a timer for 10 minutes?", "Do you know any good jokes?"]
    unfinished = [
        "What is the capital of",
        "At that high level,",
        "I need to buy eggs, milk and...",
        "Sunday is the best part of the...",
        "If it stops raining.",
        "So, um...",
    ]
    assert all(p(words) >= OPTIONS.text_complete for words in finished), [p(w) for w in finished]
    assert all(p(words) < OPTIONS.text_incomplete for words in unfinished), [p(w) for w in unfinished]
    # The KV cache now holds the prompt up to the words (no final marks), ready for the reply's prefix.
    words = chat.prompt([], "So, um")
    formatted = chat.llm.tokenize(chat._formatter(messages=words).prompt.encode(), add_bos=False, special=True)
    held = chat.llm.n_tokens
    assert chat.llm._input_ids.tolist() == formatted[:held] and len(formatted) - held <= 6  # the template's tail
    assert p("So, um...") == pytest.approx(p("So, um..."), rel=0.1)  # again: one token evaluated, same answer
    history = [{"role": "user", "content": "Hello, my name is Anna."}, {"role": "assistant", "content": "Hi Anna!"}]
    reading = read(history, "What is my name?")
    assert reading.probability > 0.1 and reading.asks


# --- the whole decision in the app's path: Conversation on the real cascade -------------------------------------


def converse(cascade, vad, smart_turn, rec: Recording) -> tuple[list[VadEvent], Conversation]:
    """Feed REC to a Conversation in 0.5 s chunks, waiting after each for the model's background work (listening
    ahead, the reading at a pause): the outcome as on a machine fast enough to read each chunk before the next."""
    talk = Conversation(cascade, PauseDetectorOptions(), vad=vad.fork(), smart_turn=smart_turn)
    events = []
    for i in range(0, len(rec.audio), CHUNK):
        new = talk.hear(rec.audio[i : i + CHUNK], SAMPLE_RATE)
        events += new
        if talk.turn_ended:
            break
        if talk._listening:
            talk._listening.join()
        # The answer started at a pause, or in a chunk that ended in a silence, reads the words first.
        if talk.detector.paused or talk._speculation:
            deadline = time.monotonic() + 30
            while talk._words_end(talk.detector.speech_end) is None and time.monotonic() < deadline:
                time.sleep(0.01)
    return events, talk


@pytest.mark.parametrize("name", ["pi_mountain", "es_timer", "spk1_snt5"])
def test_the_app_ends_a_finished_question_after_a_quarter_second(cascade, vad, smart_turn, name):
    rec = recordings()[name]
    events, talk = converse(cascade, vad, smart_turn, rec)
    try:
        end = end_of_turn(events)
        heard, read = talk.ended.verdict
        assert read is not None and read.probability >= OPTIONS.text_complete, (heard, read)
        wait_ms = OPTIONS.complete_ms if read.asks else OPTIONS.statement_ms
        assert end.detected_at - end.sample == np.ceil(wait_ms * MS / FRAME) * FRAME
        assert abs(end.sample - rec.end) <= 200 * MS
    finally:
        talk.close()


@pytest.mark.parametrize("name", ["hu_canoe", "pi_unless", "es_if_rain"])
def test_the_app_does_not_cut_a_sentence_at_its_pause(cascade, vad, smart_turn, name):
    """ "The birch canoe slid on the | ...", "Unless the weather gets a lot better, | ...", "If it stops raining | ...":
    the words read unfinished keep the turn open through the pause, whatever the ear says."""
    rec = recordings()[name]
    events, talk = converse(cascade, vad, smart_turn, rec)
    try:
        end = end_of_turn(events)
        assert end is not None and end.sample >= rec.end - 200 * MS, talk.ended.verdict if talk.ended else None
    finally:
        talk.close()


def test_the_policy_takes_fillers_as_unfinished_and_openers_as_unsure():
    from utils.turn import policy_reading

    def p(words: str, probability: float) -> float:
        return policy_reading(words, probability).probability

    assert p("So. Um.", 0.28) == 0.0 and p("I was thinking that, uh...", 0.4) == 0.0
    assert p("I like rum.", 0.4) == 0.4  # a word that ends like a filler is not one
    unsure = (OPTIONS.text_incomplete, OPTIONS.text_complete)
    assert unsure[0] <= p("Hello.", 0.6) < unsure[1]  # "Hello, | my name is Anna"
    assert unsure[0] <= p("Well, so", 0.3) < unsure[1]
    assert p("Hello, my name is Anna.", 0.6) == 0.6
    assert p("Hello.", 0.001) == 0.001  # unfinished stays unfinished


def test_the_policy_knows_a_question_from_a_statement():
    from utils.turn import policy_reading

    assert policy_reading("What is the capital of France?", 0.6).asks
    assert policy_reading('Did he say "why?"', 0.6).asks
    assert not policy_reading("My name is Tom.", 0.6).asks
    assert not policy_reading("Turn off the lights, please.", 0.6).asks


def test_the_benchmark_reads_the_words_when_the_app_would_have_them():
    """bench.turn --lm: a silence that began in a chunk is read from the first chunk that arrives READ_S after that
    one (with 0.5 s chunks, the next); a reader that takes no time has the words in that very chunk."""
    bounds = [0, *range(8000, 40001, 8000)]  # 0.5 s chunks
    assert phases(CHUNK) == (0, 2000, 4000, 6000)
    assert not read_in_time(5000, bounds, 8000, 0.3)
    assert read_in_time(5000, bounds, 16000, 0.3)
    assert read_in_time(5000, bounds, 8000, 0.0)
    assert not read_in_time(8000, bounds, 8000, 0.0)  # began at the boundary: shown by the next chunk
    tenths = [0, *range(1600, 40001, 1600)]  # 0.1 s chunks: a 0.3 s reading is there three chunks on
    assert [read_in_time(1000, tenths, end, 0.3) for end in (3200, 4800, 6400)] == [False, False, True]
