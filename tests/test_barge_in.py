"""Full duplex: the user talks over the reply, the reply stops at once and is remembered as far as it was heard."""

from __future__ import annotations

import threading
import time

import jiwer
import numpy as np
import pytest

from omni import Audio, Finished
from omni.audio import SAMPLE_RATE, prepare
from omni.conversation import INTERRUPTED, Conversation, ConversationOptions, SpokenReply
from omni.scheduler import URGENT
from tests.conftest import collect
from tests.test_conversation import CHUNK, stream


@pytest.fixture
def duplex(cascade):
    return Conversation(cascade, options=ConversationOptions(barge_in=True))


class Listener(threading.Thread):
    """Plays the reply like a browser would: reads its chunks as they come and notes when audio arrives."""

    def __init__(self, conversation: Conversation):
        super().__init__(daemon=True)
        self.conversation = conversation
        self.chunks = []
        self.first_audio = threading.Event()

    def run(self) -> None:
        for chunk in self.conversation.reply():
            self.chunks.append(chunk)
            if isinstance(chunk, Audio):
                self.first_audio.set()


def start_story(conversation: Conversation, say) -> tuple[Listener, object]:
    """Ask for a long story and wait until it is being spoken; returns the listener and the reply in progress."""
    stream(conversation, say("Tell me a long story about a dragon."))
    listener = Listener(conversation)
    listener.start()
    assert listener.first_audio.wait(30)
    return listener, conversation._reply


def talk_over(conversation: Conversation, audio: np.ndarray) -> tuple[list, float | None]:
    """Feed AUDIO in real-time 0.5 s chunks; return the events and when a speech_start came back."""
    events, started_at = [], None
    for i in range(0, audio.size, CHUNK):
        time.sleep(CHUNK / SAMPLE_RATE)
        new = conversation.hear(audio[i : i + CHUNK], SAMPLE_RATE)
        if started_at is None and any(e.kind == "speech_start" for e in new):
            started_at = time.perf_counter()
        events += new
    return events, started_at


def test_barge_in_stops_the_reply_and_keeps_what_was_heard(duplex, cascade, say, recordings):
    listener, story = start_story(duplex, say)
    time.sleep(1.0)  # the user hears a second of the story, then talks over it

    interruption, text = recordings["spk1_snt1.wav"]
    _events, detected_at = talk_over(duplex, np.concatenate([interruption, np.zeros(SAMPLE_RATE, np.float32)]))
    assert detected_at is not None and duplex.interruptions == 1
    assert story.join(timeout=0.1), "the language model kept generating a dead reply"
    listener.join(timeout=0.1)
    assert not listener.is_alive()

    # The history holds what was said out loud up to the interruption, not the whole story.
    assert duplex.history[-2]["content"] == duplex.spoken.transcript
    said = duplex.history[-1]["content"]
    assert said.endswith(INTERRUPTED)
    heard_words = said.removesuffix(INTERRUPTED).strip(" .").split()
    assert len(heard_words) < len(duplex.spoken.text.split())
    # The new turn was recorded from where the user began: no first words lost.
    heard = cascade.asr.transcribe(duplex.turn_audio())
    assert jiwer.wer(text.lower().strip("."), heard.lower().strip(".")) <= 0.2, heard


def test_cancel_latency_from_barge_in_detection(duplex, cascade, say, recordings):
    """The reply stops within 300 ms of the chunk in which the barge-in speech is detected."""
    _, story = start_story(duplex, say)
    interruption, _ = recordings["spk1_snt3.wav"]
    for i in range(0, interruption.size, CHUNK):
        time.sleep(CHUNK / SAMPLE_RATE)
        if any(e.kind == "speech_start" for e in duplex.hear(interruption[i : i + CHUNK], SAMPLE_RATE)):
            detected_at = time.perf_counter()
            break
    else:
        pytest.fail("the barge-in was not detected")
    assert story.join(timeout=1.0)
    stopped_in = time.perf_counter() - detected_at
    assert stopped_in <= 0.3, f"generation stopped {stopped_in * 1000:.0f} ms after the barge-in"
    asked = time.perf_counter()
    with cascade.queue.step(object(), URGENT):  # the model is free for the next turn (the dead reply holds nothing)
        assert time.perf_counter() - asked < 0.5


def test_a_held_reply_makes_nothing_until_it_is_resumed(duplex, say):
    """The browser holds playback on a loud sound: generation pauses at once and carries on when released."""
    listener, story = start_story(duplex, say)
    duplex.hold(seconds=5.0)
    time.sleep(0.2)  # at most one token was under way
    made = len(listener.chunks)
    time.sleep(1.0)
    assert len(listener.chunks) <= made + 1 and story.join(timeout=0) is False  # paused, not finished
    duplex.resume()
    time.sleep(1.0)
    assert len(listener.chunks) > made + 1  # going again
    duplex.hold(seconds=0.5)  # never released (the browser went away): it goes on by itself
    made = len(listener.chunks)
    time.sleep(1.5)
    finished = any(isinstance(chunk, Finished) for chunk in listener.chunks)  # greedy replies are short: it may have ended
    assert len(listener.chunks) > made + 1 or finished
    duplex.cancel()
    assert story.join(timeout=1.0)


def test_cough_and_own_echo_do_not_interrupt(duplex, say):
    stream(duplex, say("Tell me three interesting facts about the moon."))
    reply = collect(duplex.reply())
    assert duplex.speaking  # still playing, as far as the conversation knows
    echo = prepare(np.concatenate(reply["audio"]), 22050) * 10 ** (-30 / 20)  # its own voice, 30 dB down
    rng = np.random.default_rng(7)
    cough = rng.normal(0, 0.4, int(0.15 * SAMPLE_RATE)).astype(np.float32)
    for noise in (echo, np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), cough, np.zeros(SAMPLE_RATE, np.float32)])):
        talk_over_fast(duplex, noise)
        assert duplex.interruptions == 0
    assert duplex.history[-1]["content"] == reply["turn"].reply_text
    duplex.played()
    assert not duplex.speaking


def talk_over_fast(conversation: Conversation, audio: np.ndarray) -> None:
    for i in range(0, audio.size, CHUNK):
        conversation.hear(audio[i : i + CHUNK], SAMPLE_RATE)


def test_half_duplex_never_interrupts(cascade, say, recordings):
    conversation = Conversation(cascade)  # the guide's half duplex
    stream(conversation, say("How are you today?"))
    reply = collect(conversation.reply())
    talk_over_fast(conversation, recordings["spk1_snt1.wav"][0])
    assert conversation.interruptions == 0
    assert conversation.history[-1]["content"] == reply["turn"].reply_text


def test_heard_text_follows_the_audio():
    spoken = SpokenReply(transcript="q", text="One two three. Four five six seven.")
    spoken.add_audio(1.0, "One two three.")
    spoken.add_audio(0.5, "")  # more audio of the same sentence
    spoken.add_audio(2.0, "Four five six seven.")
    assert spoken.heard_text(0.2) == ""
    assert spoken.heard_text(1.5) == "One two three."
    assert spoken.heard_text(2.5) == "One two three. Four five"
    assert spoken.heard_text(10) == "One two three. Four five six seven."
    unlabelled = SpokenReply(text="a b c d")
    unlabelled.add_audio(2.0, None)
    assert unlabelled.heard_text(1.0) == "a b"
