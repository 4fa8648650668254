"""Reply on pause with the real models: chunks in, end of turn, speculative answer, memory."""

from __future__ import annotations

import time

import numpy as np
import pytest

from omni import Audio, Transcript
from omni.audio import SAMPLE_RATE
from omni.conversation import Conversation
from omni.speech_model import NoSpeechError
from tests.conftest import collect
from utils.vad import PauseDetectorOptions

CHUNK = SAMPLE_RATE // 2  # the browser's 0.5 s


def stream(conversation: Conversation, audio: np.ndarray, realtime: bool = False) -> list:
    """Feed AUDIO + trailing silence in 0.5 s chunks until the turn ends; return all events. The silence is long
    enough for words that read unfinished (TurnOptions.incomplete_ms)."""
    audio = np.concatenate([audio, np.zeros(SAMPLE_RATE * 7 // 2, np.float32)])
    events = []
    for i in range(0, audio.size, CHUNK):
        if realtime:
            time.sleep(CHUNK / SAMPLE_RATE)
        events += conversation.hear(audio[i : i + CHUNK], SAMPLE_RATE)
        if conversation.turn_ended:
            break
    return events


@pytest.fixture
def conversation(cascade):
    return Conversation(cascade)


def test_a_turn_ends_by_itself_and_is_answered(conversation, say):
    events = stream(conversation, say("What is the capital of France?"), realtime=True)
    assert [e.kind for e in events][-1] == "end_of_turn"
    reply = collect(conversation.reply())
    assert "paris" in reply["text"].lower()
    assert reply["audio"]
    assert conversation.history[-2]["content"] == reply["transcript"]
    assert conversation.history[-1]["content"] == reply["turn"].reply_text
    assert reply["turn"].timings["total_ms"] > 0


def test_speculation_is_used_when_the_user_stays_quiet(cascade, say):
    """On the 700 ms rule: with the words read while the user speaks, the pause and the end of the turn often come
    in one chunk, and the answer simply starts then."""
    conversation = Conversation(cascade, PauseDetectorOptions(turn=None))
    stream(conversation, say("How many legs does a spider have?"), realtime=True)
    eot_at = time.perf_counter()
    chunks = conversation.reply()
    first = next(chunks)
    assert conversation.reply_started_at < eot_at
    rest = collect(chunks)
    assert "eight" in (rest["text"]).lower() or "8" in rest["text"]
    assert isinstance(first, Transcript) and first.text


def test_the_model_listens_while_the_user_speaks(conversation, say, monkeypatch):
    """In real time, the words so far go to `SpeechModel.listen` chunk after chunk, until the pause."""
    heard: list[float] = []
    drafts: list[str] = []
    model = conversation.model
    listen = model.listen

    def counting_listen(audio, sample_rate, history, breaks=()):
        heard.append(audio.size / sample_rate)
        listen(audio, sample_rate, history, breaks)
        drafts.append(" ".join(phrase.transcript for phrase in model.phrases))

    monkeypatch.setattr(model, "listen", counting_listen)
    stream(conversation, say("Tell me three interesting facts about the moon."), realtime=True)
    assert len(heard) >= 3 and heard == sorted(heard)  # ever longer audio, one call at a time
    reply = collect(conversation.reply())
    assert "moon" in reply["transcript"].lower()
    # The last draft heard the question as far as it had gone: the final transcript starts the same way.
    draft = drafts[-1].lower().split()[:4]
    assert len(draft) >= 3 and reply["transcript"].lower().split()[: len(draft)] == draft


def test_resuming_after_a_pause_discards_the_early_answer(cascade, say):
    """A 0.45 s pause starts a speculative answer; speaking again throws it away; one turn, both sentences. (On the
    700 ms rule: the words before the pause are a finished sentence, which the semantic end of turn ends on.)"""
    conversation = Conversation(cascade, PauseDetectorOptions(turn=None))
    first, second = say("My favourite colour is green."), say("What is yours?")
    gap = np.zeros(int(0.45 * SAMPLE_RATE), np.float32)
    events = stream(conversation, np.concatenate([first, gap, second]), realtime=True)
    kinds = [e.kind for e in events]
    assert "pause" in kinds and "resume" in kinds and kinds[-1] == "end_of_turn"
    # The model is told where the user paused: the first sentence ends before it, the second starts after it.
    (phrase_break,) = conversation.phrase_breaks()
    pre_roll = conversation.turn_audio().size - (first.size + gap.size + second.size)
    assert first.size < phrase_break - pre_roll < first.size + gap.size + SAMPLE_RATE // 10
    reply = collect(conversation.reply())
    assert "green" in reply["transcript"].lower() and "yours" in reply["transcript"].lower()


def test_memory_across_turns(conversation, say):
    stream(conversation, say("Hello, my name is Anna."))
    collect(conversation.reply())
    stream(conversation, say("What is my name?"))
    assert "anna" in collect(conversation.reply())["text"].lower()
    assert len(conversation.history) == 4


def test_noise_only_turn_is_reported_and_the_conversation_survives(conversation, say):
    rng = np.random.default_rng(3)
    # A loud cough-like burst long enough to look like speech to the VAD, but with no words in it.
    burst = rng.normal(0, 0.3, int(0.6 * SAMPLE_RATE)).astype(np.float32)
    events = stream(conversation, burst)
    if conversation.turn_ended:
        with pytest.raises(NoSpeechError):
            collect(conversation.reply())
    else:
        assert not [e for e in events if e.kind == "end_of_turn"]
        conversation.cancel()
    assert conversation.history == []
    stream(conversation, say("How are you today?"))
    assert collect(conversation.reply())["text"]


def test_cancel_stops_the_reply_and_keeps_history(conversation, say):
    stream(conversation, say("Hello, my name is Anna."))
    collect(conversation.reply())
    stream(conversation, say("Tell me a long story about a dragon."))
    chunks = conversation.reply()
    for chunk in chunks:
        if isinstance(chunk, Audio):
            break
    conversation.cancel()
    assert collect(chunks)["turn"] is None
    assert len(conversation.history) == 2  # the cancelled exchange is not remembered
