"""The app's handlers with a loudness VAD and a scripted model: sessions, privacy, admission, what the chat shows.

Fast and deterministic; test_app.py runs the same handlers with the real models, test_browser.py in Chromium.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest

from app import BUSY_NOTE, AppState, VoiceChat
from omni import Settings
from omni.media import MediaStore
from tests.fakes import LoudnessVad, ScriptedModel, silence, speech
from utils.vad import PauseDetectorOptions

BROWSER_RATE = 48_000


def make_chat(tmp_path, model: ScriptedModel | None = None, **kwargs) -> VoiceChat:
    options = PauseDetectorOptions(turn=None)  # the 700 ms rule: these tests are about the handlers
    media = MediaStore(tmp_path / "recordings")
    return VoiceChat(model or ScriptedModel(), options, media, vad=LoudnessVad(), **kwargs)


def speak(chat: VoiceChat, state: AppState, audio: np.ndarray) -> list[tuple]:
    """Stream AUDIO as the browser does (48 kHz int16, 0.5 s chunks); the handler's outputs."""
    pcm = (np.repeat(audio, 3) * 32767).astype(np.int16)  # 16 -> 48 kHz is enough for a loudness VAD
    step = BROWSER_RATE // 2
    return [chat.on_chunk((BROWSER_RATE, pcm[i : i + step]), state) for i in range(0, pcm.size, step)]


def turn(chat: VoiceChat, state: AppState, seconds: float = 1.0) -> list[tuple]:
    """One spoken turn, then the reply handler run to its end; its outputs."""
    outputs = speak(chat, state, np.concatenate([speech(seconds), silence(1.2)]))
    assert any(isinstance(ended, int) for _, ended, *_ in outputs), "the turn did not end"
    return list(chat.respond(state))


def test_each_session_gets_its_own_id_and_folder(tmp_path):
    chat = make_chat(tmp_path, settings=Settings(max_sessions=5))
    anna, bob = AppState(duplex=False), AppState(duplex=False)
    turn(chat, anna)
    turn(chat, bob)
    assert anna.session and bob.session and anna.session != bob.session
    assert anna.owner != bob.owner  # no cookie here: each is its own stranger
    files = sorted(p.relative_to(chat.media.root).parts[1] for p in chat.media.root.rglob("*.wav"))
    assert files == sorted([anna.conversation_id, bob.conversation_id])  # each conversation's own folder


def test_recordings_in_the_chat_are_served_by_the_apps_route_only(tmp_path):
    chat = make_chat(tmp_path)
    state = AppState(duplex=False)
    turn(chat, state)
    user, assistant = state.chat
    for message in (user["content"][0], assistant["content"][1]):
        url = message["file"]["url"]
        assert url.startswith("/omni/media/") and state.owner not in url
        assert (chat.media.root / url.removeprefix("/omni/media/")).is_file()


def test_a_third_session_is_told_to_come_back_later(tmp_path):
    chat = make_chat(tmp_path, settings=Settings(max_sessions=2))
    first, second, third = AppState(), AppState(), AppState()
    speak(chat, first, speech(0.5))
    speak(chat, second, speech(0.5))
    with pytest.warns(UserWarning, match="try again in a minute"):
        _, _ended, mic_off, _, _ = chat.on_chunk((BROWSER_RATE, np.zeros(24000, np.int16)), third)
    assert isinstance(mic_off, float) and third.conversation is None  # the microphone goes off, nothing heard
    chat.forget(first)  # the first one's state was deleted: room again
    _, _, mic_off, _, _ = chat.on_chunk((BROWSER_RATE, np.zeros(24000, np.int16)), third)
    assert mic_off == gr.skip() and third.conversation is not None


def test_a_closed_or_reloaded_page_gives_its_place_back_at_once(tmp_path):
    """Gradio deletes a closed page's state an hour later; its unload event comes at once. Counted as talking until
    ACTIVE_S had passed, a page reloaded while someone else talked was turned away (the browser tests met it)."""
    chat = make_chat(tmp_path, settings=Settings(max_sessions=2))
    first, second, reloaded = AppState(), AppState(), AppState()
    speak(chat, first, speech(0.5))
    speak(chat, second, speech(0.5))
    chat.leave(SimpleNamespace(session_hash=second.page))  # demo.unload: the second page was reloaded
    _, _, mic_off, _, _ = chat.on_chunk((BROWSER_RATE, np.zeros(24000, np.int16)), reloaded)
    assert mic_off == gr.skip() and reloaded.conversation is not None


def test_the_chat_says_so_while_another_conversation_has_the_model(tmp_path):
    model = ScriptedModel(wait_s=0.6)  # a while before the first words: someone else's reply has the model
    chat = make_chat(tmp_path, model)
    state = AppState(duplex=False)
    speak(chat, state, np.concatenate([speech(1.0), silence(1.2)]))
    model.waiting = 1  # the model says this conversation is next in line
    outputs = chat.respond(state)
    shown = []
    for messages, *_ in outputs:
        shown.append(messages[-1]["content"][0])
        if BUSY_NOTE in shown:
            model.waiting = 0
    assert BUSY_NOTE in shown and shown[-1] == "Hello there. How are you?"


def test_internal_markers_never_reach_the_chat(tmp_path):
    chat = make_chat(tmp_path, ScriptedModel(reply="One. Two. Three. Four.", delay_s=0.05))
    state = AppState(duplex=True)
    speak(chat, state, np.concatenate([speech(1.0), silence(1.2)]))
    replies = chat.respond(state)
    for _ in replies:
        if state.conversation.spoken.first_audio_at is not None:
            break
    speak(chat, state, speech(1.0))  # talking over it
    list(replies)
    chat.on_heard(0.1, state)
    texts = [c for m in state.chat for c in m["content"] if isinstance(c, str)]
    assert any("(interrupted)" in t for t in texts)
    assert not any("[" in t or "interrupted by" in t for t in texts), texts


def test_a_reply_cut_off_after_it_was_written_is_marked_when_heard(tmp_path):
    """The reply was all written (respond returned) but still playing when the user talked over it."""
    chat = make_chat(tmp_path)
    state = AppState(duplex=True)
    turn(chat, state)
    assert "replied in" in str(state.chat[-1]["content"])
    speak(chat, state, speech(1.0))  # barge-in during playback
    messages, state = chat.on_heard(0.1, state)
    assert "(interrupted)" in messages[1]["content"][0]


def test_stop_marks_a_reply_cut_off_mid_way(tmp_path):
    chat = make_chat(tmp_path, ScriptedModel(reply="One. Two. Three. Four.", delay_s=0.05))
    state = AppState(duplex=False)
    speak(chat, state, np.concatenate([speech(1.0), silence(1.2)]))
    replies = chat.respond(state)
    for messages, *_ in replies:
        if messages[-1]["content"][0].startswith("One."):
            break
    state, _, messages = chat.stop(state)
    replies.close()  # Gradio cancels the handler
    assert messages[-1]["content"][0].endswith("<sub>(interrupted)</sub>")


def test_a_reply_without_audio_re_arms_the_microphone(tmp_path):
    chat = make_chat(tmp_path, ScriptedModel(reply="Hmm"))
    state = AppState(duplex=False)
    outputs = turn(chat, state)
    assert any(isinstance(signal, float) for *_, signal in outputs)
    assert not state.conversation.speaking


def test_a_reply_names_its_files_after_its_own_turn(tmp_path):
    """In full duplex the next turn may end while a reply is written: the reply keeps its own turn number."""
    chat = make_chat(tmp_path, ScriptedModel(delay_s=0.02))
    state = AppState(duplex=True)
    speak(chat, state, np.concatenate([speech(1.0), silence(1.2)]))
    replies = chat.respond(state)
    next(replies)
    state.turns += 1  # the next turn ended meanwhile
    list(replies)
    assert state.chat[1]["content"][1]["file"]["url"].endswith("turn-001-reply.mp3")


def test_clear_history_deletes_the_recordings(tmp_path):
    chat = make_chat(tmp_path)
    state = AppState(duplex=False)
    turn(chat, state)
    assert list(chat.media.root.rglob("*.wav"))
    state, cleared, *_ = chat.clear(state)
    assert cleared == [] and not list(chat.media.root.rglob("*.*"))


def test_a_live_reply_streams_its_audio_to_its_owner(tmp_path):
    chat = make_chat(tmp_path)
    state = AppState(duplex=False)
    spoken = speak(chat, state, np.concatenate([speech(1.0), silence(1.2)]))
    (url,) = [live_url for *_, live_url in spoken if isinstance(live_url, str)]  # sent with the end of the turn
    list(chat.respond(state))
    live = chat.live.get(url)
    assert live.owner == state.owner and live.data  # one mp3, and the chat's file is the same bytes
    kept = chat.media.root / state.chat[1]["content"][1]["file"]["url"].removeprefix("/omni/media/")
    assert kept.read_bytes() == live.data


def test_bad_chunks_are_survived(tmp_path):
    chat = make_chat(tmp_path)
    state = AppState(duplex=False)
    for bad in [(48000, np.zeros(0, np.int16)), (48000, np.full(24000, np.nan, np.float32)), None, (0, np.zeros(10))]:
        state, ended, *_ = chat.on_chunk(bad, state)
        assert not isinstance(ended, int)
    assert turn(chat, state)
