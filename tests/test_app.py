"""The app's handlers in-process, fed the way the browser feeds them: 0.5 s chunks of 48 kHz int16 audio."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soxr

from app import AppState, VoiceChat, build_demo
from omni import Settings
from omni.audio import SAMPLE_RATE, load_audio
from omni.conversation import INTERRUPTED
from omni.live import ROUTE as LIVE
from omni.media import ROUTE, MediaStore
from tests.conftest import collect  # noqa: F401 - shared fixtures live in conftest
from utils.turn import TurnOptions

BROWSER_RATE = 48_000


# Long enough for the longest end-of-turn wait: chunks come faster than real time here, so the words are often
# still being read when the silence runs out (the detector then waits up to TurnOptions.incomplete_ms).
TRAILING_SILENCE_S = TurnOptions().incomplete_ms / 1000 + 0.5


def browser_chunks(audio: np.ndarray, trailing_silence_s: float = TRAILING_SILENCE_S):
    """What Gradio hands the stream handler: (48000, int16 array) every 0.5 s."""
    audio = np.concatenate([audio, np.zeros(int(trailing_silence_s * SAMPLE_RATE), np.float32)])
    pcm = (soxr.resample(audio, SAMPLE_RATE, BROWSER_RATE) * 32767).astype(np.int16)
    step = BROWSER_RATE // 2
    for i in range(0, pcm.size, step):
        yield BROWSER_RATE, pcm[i : i + step]


def speak_turn(chat: VoiceChat, state: AppState, audio: np.ndarray) -> int | None:
    """Stream a turn; returns the turn number the handler signalled, if it ended."""
    for chunk in browser_chunks(audio):
        state, ended, *_ = chat.on_chunk(chunk, state)
        if isinstance(ended, int):
            return ended
    return None


def run_reply(chat: VoiceChat, state: AppState) -> dict:
    """Run the reply handler; "audio" is the mp3 its live stream sent to the page."""
    out = {"audio": b"", "signals": [], "url": state.live.url if state.live else None}  # opened by the end of turn
    for chat_messages, _state, listen_again in chat.respond(state):
        out["chat"] = chat_messages
        if isinstance(listen_again, float):
            out["signals"].append(listen_again)
    out["audio"] = chat.live.get(out["url"]).data
    return out


def media_file(chat: VoiceChat, message: dict) -> Path:
    """The file behind a Chatbot audio message: a URL of the app's media route, never a path Gradio would serve."""
    url = message["file"]["url"]
    assert url == message["file"]["path"] and url.startswith(ROUTE + "/"), url
    return chat.media.root / url.removeprefix(ROUTE + "/")


@pytest.fixture(scope="module")
def chat(cascade, tmp_path_factory):
    media = MediaStore(tmp_path_factory.mktemp("recordings"))
    return VoiceChat(cascade, media=media, settings=Settings(max_sessions=50))


def test_a_turn_streams_an_answer_into_the_chat(chat, say, tmp_path):
    state = AppState(duplex=False)
    assert speak_turn(chat, state, say("What is the capital of France?")) == 1
    reply = run_reply(chat, state)
    assert reply["url"].startswith(LIVE + "/")
    (tmp_path / "streamed.mp3").write_bytes(reply["audio"])
    streamed = load_audio(tmp_path / "streamed.mp3")  # one continuous mp3, as the page played it
    assert streamed.size / SAMPLE_RATE > 0.5
    user, assistant = reply["chat"]
    assert media_file(chat, user["content"][0]).exists() and "france" in user["content"][1].lower()
    text, audio_file, note = assistant["content"]
    assert "paris" in text.lower()
    assert media_file(chat, audio_file).suffix == ".mp3" and media_file(chat, audio_file).read_bytes() == reply["audio"]
    assert note.startswith("<sub>replied in ")


def test_memory_across_turns_and_separate_sessions(chat, say):
    anna, bob = AppState(duplex=False), AppState(duplex=False)
    speak_turn(chat, anna, say("Hello, my name is Anna."))
    run_reply(chat, anna)
    speak_turn(chat, bob, say("What is my name?"))
    assert "anna" not in run_reply(chat, bob)["chat"][-1]["content"][0].lower()
    speak_turn(chat, anna, say("What is my name?"))
    assert "anna" in run_reply(chat, anna)["chat"][-1]["content"][0].lower()
    assert len(anna.conversation.history) == 4 and len(bob.conversation.history) == 2


def test_bad_chunks_are_survived(chat, say):
    state = AppState(duplex=False)
    for bad in [(48000, np.zeros(0, np.int16)), (48000, np.full(24000, np.nan, np.float32)), None, (0, np.zeros(10))]:
        state, ended, *_ = chat.on_chunk(bad, state)
        assert not isinstance(ended, int)
    stereo = say("How are you today?")
    assert speak_turn(chat, state, stereo) == 1
    assert run_reply(chat, state)["audio"]


def test_noise_turn_gives_a_message_and_listens_again(chat, recordings):
    state = AppState(duplex=False)
    audio, _ = recordings["spk1_snt1.wav"]
    backwards = audio[::-1].copy()  # speech to the pause detector, no words to Whisper
    assert speak_turn(chat, state, backwards) == 1
    reply = run_reply(chat, state)
    assert reply["chat"] == [] and reply["audio"] == b""
    assert reply["signals"], "the microphone was not re-armed after a turn with no words"


def test_stop_start_and_clear(chat, say):
    state = AppState(duplex=False)
    speak_turn(chat, state, say("How are you today?"))
    run_reply(chat, state)
    state, _, _ = chat.stop(state)
    assert state.stopped
    assert chat.on_chunk(next(browser_chunks(say("What is my name?"))), state)[1:] == (gr.skip(),) * 4
    assert list(chat.respond(state)) == []
    assert len(state.chat) == 2  # the history stays visible
    state, signal = chat.start(state)
    assert not state.stopped and isinstance(signal, float)
    state, cleared, *_ = chat.clear(state)  # a new conversation: (state, chat, list, export link)
    assert cleared == [] and state.conversation.history == []


def test_full_duplex_barge_in_marks_the_reply(chat, say, recordings):
    state = AppState(duplex=True)
    speak_turn(chat, state, say("Tell me a long story about a dragon."))
    replies = chat.respond(state)
    for _ in replies:
        if state.conversation.spoken.first_audio_at is not None:  # the story is being spoken
            break
    interruption, _ = recordings["spk1_snt1.wav"]
    barged = None
    for chunk in browser_chunks(interruption, trailing_silence_s=0):
        state, _, mic_off, barged_in, _ = chat.on_chunk(chunk, state)
        assert mic_off == gr.skip()  # full duplex: the microphone stays on
        barged = barged if barged is not None else (barged_in if isinstance(barged_in, float) else None)
    assert barged is not None
    rest = list(replies)
    assistant = rest[-1][0][-1]
    assert assistant["content"][0].endswith("<sub>(interrupted)</sub>")
    chat_messages, state = chat.on_heard(1.0, state)
    assert "(interrupted)" in chat_messages[-1]["content"][0]
    assert state.conversation.history[-1]["content"].endswith(INTERRUPTED)


def test_demo_builds(chat):
    assert build_demo(chat) is not None


def test_mini_omni_output_is_accepted(tmp_path, recordings):
    """The app runs a mini-omni turn (tiny random checkpoint in the released format) end to end."""
    from omni.mini_omni import GenerationSettings, load
    from tests.mini_omni_tiny import build_tiny_checkpoint

    model = load(build_tiny_checkpoint(tmp_path / "mini-omni"), "cpu")
    model.settings = GenerationSettings(max_new_tokens=24, max_transcript_tokens=4)
    tiny_chat = VoiceChat(model)
    state = AppState(duplex=False)
    audio, _ = recordings["spk1_snt1.wav"]
    # It stops inside its last word: smart-turn hears it unfinished, so the turn stays open up to 3 s.
    assert speak_turn(tiny_chat, state, np.concatenate([audio, np.zeros(2 * SAMPLE_RATE, np.float32)])) == 1
    reply = run_reply(tiny_chat, state)
    assert reply["chat"][0]["role"] == "user"
