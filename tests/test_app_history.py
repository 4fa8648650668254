"""Conversations that last, through the app's handlers (a loudness VAD, a scripted model, SQLite in tmp_path):
every turn written when it ends, restored on load and after a restart, only ever for its owner, deleted with its
files, and a damaged or locked database that leaves the conversation talking with history off.

test_browser.py restarts the real app between two turns in Chromium; test_store.py runs the store on PostgreSQL.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import statistics
import threading
import time
import zipfile
from datetime import timedelta
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from app import REPLIED_MS, AppState, VoiceChat
from omni import Settings
from omni.history import EXPORT, History
from omni.media import COOKIE, MediaStore, OwnerCookie
from omni.store import Store, StoreOptions, conversations, utcnow
from tests.fakes import LoudnessVad, ScriptedModel, silence, speech
from tests.test_app_handlers import BROWSER_RATE, speak, turn
from utils.vad import PauseDetectorOptions

ANNA, BOB = "anna-browser-cookie-id", "bob-browser-cookie-id"
REPLY = "Hello there. How are you?"


def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'omni.db'}"


def start_app(tmp_path: Path, model: ScriptedModel | None = None, history: History | None = None) -> VoiceChat:
    """The app's handlers as `python app.py` sets them up, on files under TMP_PATH (call again: a restart)."""
    media = MediaStore(tmp_path / "recordings")
    history = history or History.open(media.root, database(tmp_path))
    options = PauseDetectorOptions(turn=None)  # the 700 ms rule: these tests are about the handlers
    settings = Settings(max_sessions=5)
    return VoiceChat(model or ScriptedModel(), options, media, settings, vad=LoudnessVad(), history=history)


def visit(chat: VoiceChat, owner: str) -> tuple[AppState, list, gr.Radio, str]:
    """A browser carrying OWNER's cookie loads the page: (its state, the chat, the list, the export link)."""
    state = AppState(duplex=False)
    state, shown, listed, link = chat.load(state, gr.Request(headers={"cookie": f"{COOKIE}={owner}"}))
    return state, shown, listed, link


def test_each_turn_is_written_when_it_ends(tmp_path):
    chat = start_app(tmp_path)
    state, shown, listed, link = visit(chat, ANNA)
    assert shown == [] and listed.choices == [("New conversation", state.conversation_id)] and link == ""
    turn(chat, state, 1.0)
    turn(chat, state, 2.0)

    store = chat.history.store
    (record,) = store.conversations(ANNA)
    assert record.id == state.conversation_id and record.title == "1.0 s of speech" and record.turn_count == 2
    first, second = store.turns(record.id, ANNA)
    assert (first.index, first.transcript, first.reply_text, first.interrupted) == (0, "1.0 s of speech", REPLY, False)
    assert second.transcript == "2.0 s of speech"
    folder = chat.media.root / Path(first.user_audio).parent
    assert folder.name == state.conversation_id  # the conversation's recordings folder is named after it
    assert [Path(t.user_audio).name for t in (first, second)] == ["turn-001-user.wav", "turn-002-user.wav"]
    assert all((chat.media.root / path).is_file() for t in (first, second) for path in (t.user_audio, t.reply_audio))
    assert first.timings["first_audio_ms"] == 0.0 and first.timings[REPLIED_MS] >= 0

    listed, link = chat.listing(state)
    assert [c[1] for c in listed.choices] == [record.id] and listed.value == record.id
    assert listed.choices[0][0].startswith("1.0 s of speech · 2 turns · ")
    assert f'href="{EXPORT}/{record.id}"' in link


def test_a_reload_and_a_restart_restore_the_chat_and_the_memory(tmp_path):
    chat = start_app(tmp_path)
    before, *_ = visit(chat, ANNA)
    turn(chat, before, 1.0)
    turn(chat, before, 2.0)
    chat.history.store.close()

    model = ScriptedModel()
    restarted = start_app(tmp_path, model)  # a new process: nothing in memory, the same files
    after, shown, listed, link = visit(restarted, ANNA)
    assert after.session != before.session and after.conversation_id == before.conversation_id
    assert shown == before.chat  # every turn, with its recordings and notes, as the chat showed it
    assert after.conversation.history == before.conversation.history  # what the model remembers
    assert listed.value == before.conversation_id and link

    turn(restarted, after, 1.5)
    assert model.histories[-1] == before.conversation.history  # the next answer knows the earlier turns
    names = sorted(p.name for p in (restarted.media.root).rglob("*-user.wav"))
    assert names == ["turn-001-user.wav", "turn-002-user.wav", "turn-003-user.wav"]  # numbering goes on
    assert len(restarted.history.store.turns(after.conversation_id, ANNA)) == 3


def test_only_the_owner_ever_sees_a_conversation(tmp_path):
    chat = start_app(tmp_path)
    anna, *_ = visit(chat, ANNA)
    turn(chat, anna)
    bob, shown, listed, link = visit(chat, BOB)
    assert shown == [] and [c[0] for c in listed.choices] == ["New conversation"] and link == ""
    with pytest.warns(UserWarning, match="That conversation is gone"):
        chat.open(anna.conversation_id, bob)  # even knowing the id
    assert bob.chat == [] and bob.conversation_id != anna.conversation_id

    app = FastAPI()
    app.add_middleware(OwnerCookie)
    chat.history.add_routes(app)
    url = f"{EXPORT}/{anna.conversation_id}"
    assert TestClient(app, cookies={COOKIE: BOB}).get(url).status_code == 404
    assert TestClient(app).get(url).status_code == 404  # no cookie: a new stranger
    exported = TestClient(app, cookies={COOKIE: ANNA}).get(url)
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(exported.content))
    assert sorted(archive.namelist()) == ["audio/000-reply.mp3", "audio/000-user.wav", "transcript.json"]
    assert json.loads(archive.read("transcript.json"))["turns"][0]["reply_text"] == REPLY


def test_new_open_and_rename(tmp_path):
    model = ScriptedModel()
    chat = start_app(tmp_path, model)
    state, *_ = visit(chat, ANNA)
    turn(chat, state)
    first = state.conversation_id
    first_chat = list(state.chat)

    state, shown, listed, link = chat.new(state)
    assert shown == [] and state.conversation.history == [] and state.conversation_id != first and link == ""
    assert listed.choices[0][0] == "New conversation" and first in [c[1] for c in listed.choices]
    turn(chat, state, 2.0)
    assert model.histories[-1] == []  # a new conversation remembers nothing of the other
    second = state.conversation_id

    state, shown, listed, _ = chat.open(first, state)
    assert state.conversation_id == first and shown == first_chat
    assert [m["content"] for m in state.conversation.history] == ["1.0 s of speech", REPLY]
    assert [c[1] for c in listed.choices] == [second, first]  # most recently used first

    box, listed = chat.rename("  Anna's   questions ", state)
    assert box == "" and listed.choices[0][0].startswith("Anna's questions · 1 turn · ")  # used: on top
    state, *_ = chat.new(state)
    chat.rename("Named before a word was said", state)  # kept from now on, under its name
    assert chat.history.store.conversation(state.conversation_id, ANNA).title == "Named before a word was said"


def test_clear_history_deletes_the_conversation_and_all_its_files(tmp_path):
    chat = start_app(tmp_path)
    state, *_ = visit(chat, ANNA)
    turn(chat, state)
    # Loud enough for the VAD, too quiet for the scripted model's words: a turn without words, never stored.
    speak(chat, state, np.concatenate([np.full(8000, 0.1, np.float32), silence(1.2)]))
    list(chat.respond(state))
    kept = chat.new(state)[0].conversation_id
    turn(chat, state)
    chat.open(next(c.id for c in chat.history.store.conversations(ANNA) if c.id != kept), state)
    folder = chat.media.root / Path(chat.history.store.turns(state.conversation_id, ANNA)[0].user_audio).parent
    assert len(list(folder.iterdir())) == 3  # the turn's two files and the unanswered turn's recording

    gone = state.conversation_id
    state, shown, listed, _ = chat.clear(state)
    assert not folder.exists() and shown == [] and state.conversation.history == []
    assert [c.id for c in chat.history.store.conversations(ANNA)] == [kept]  # only the open one went
    assert state.conversation_id not in (gone, kept) and gone not in [c[1] for c in listed.choices]


def test_an_interrupted_reply_is_kept_as_far_as_it_was_heard(tmp_path):
    chat = start_app(tmp_path, ScriptedModel(reply="One. Two. Three. Four.", delay_s=0.05))
    state, *_ = visit(chat, ANNA)
    chat.set_duplex(True, state)
    speak(chat, state, np.concatenate([speech(1.0), silence(1.2)]))
    replies = chat.respond(state)
    for _ in replies:
        if state.conversation.spoken.first_audio_at is not None:
            break
    speak(chat, state, speech(1.0))  # talking over it while it is written
    list(replies)
    chat.on_heard(0.3, state)  # the player heard "One." (0.2 s) and half of "Two."
    (cut,) = chat.history.store.turns(state.conversation_id, ANNA)
    assert cut.interrupted and cut.reply_text == state.conversation.spoken.heard
    assert state.conversation.history[-1]["content"] == f"{cut.reply_text}…"

    visit_again, shown, *_ = visit(chat, ANNA)
    assert "(interrupted)" in shown[-1]["content"][0] and "replied in" not in str(shown[-1]["content"])
    assert visit_again.conversation.history == state.conversation.history


def test_a_reply_cut_while_it_played_is_corrected_in_the_store(tmp_path):
    chat = start_app(tmp_path, ScriptedModel(reply="One. Two. Three. Four."))
    state, *_ = visit(chat, ANNA)
    chat.set_duplex(True, state)
    turn(chat, state)
    assert not chat.history.store.turns(state.conversation_id, ANNA)[0].interrupted
    speak(chat, state, speech(1.0))  # barge-in during playback, after the turn was written
    chat.on_heard(0.3, state)
    (cut,) = chat.history.store.turns(state.conversation_id, ANNA)
    assert cut.interrupted and cut.reply_text == "One."


def test_a_damaged_database_leaves_history_off_and_the_app_talking(tmp_path):
    path = tmp_path / "data" / "omni.db"
    path.parent.mkdir()
    path.write_bytes(b"this is not SQLite, just some bytes " * 200)
    chat = start_app(tmp_path)
    assert chat.history.store is None and "is damaged" in chat.history.off_because
    with pytest.warns(UserWarning, match="History is off, nothing you say is kept: .* is damaged"):
        state, shown, listed, link = visit(chat, ANNA)
    assert shown == [] and [c[0] for c in listed.choices] == ["New conversation"] and link == ""
    turn(chat, state)
    assert state.chat[-1]["content"][0] == REPLY and "replied in" in state.chat[-1]["content"][-1]
    turn(chat, state)
    assert len(state.conversation.history) == 4  # it remembers, in memory


def test_a_locked_database_loses_only_the_turns_it_could_not_take(tmp_path):
    media = MediaStore(tmp_path / "recordings")
    store = Store.open(database(tmp_path), media.root, StoreOptions(busy_timeout_s=0.2))
    chat = start_app(tmp_path, history=History(store))
    state, *_ = visit(chat, ANNA)
    other_program = sqlite3.connect(tmp_path / "data" / "omni.db", isolation_level=None)
    other_program.execute("BEGIN EXCLUSIVE")  # holds the write lock
    try:
        with pytest.warns(UserWarning, match="This turn was not saved: .* is locked"):
            turn(chat, state)
        assert state.chat[-1]["content"][0] == REPLY  # answered all the same
    finally:
        other_program.rollback()
        other_program.close()
    turn(chat, state, 2.0)
    assert [t.transcript for t in store.turns(state.conversation_id, ANNA)] == ["2.0 s of speech"]


def test_two_sessions_answered_at_once_write_every_turn(tmp_path):
    chat = start_app(tmp_path, ScriptedModel(delay_s=0.005))
    per_session = 6
    states = {owner: visit(chat, owner)[0] for owner in (ANNA, BOB)}
    start = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def talk(state: AppState) -> None:
        try:
            start.wait()
            for number in range(per_session):
                turn(chat, state, 1.0 + number / 10)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=talk, args=(state,)) for state in states.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for owner, state in states.items():
        (record,) = chat.history.store.conversations(owner)
        assert record.id == state.conversation_id
        written = chat.history.store.turns(record.id, owner)
        assert [t.transcript for t in written] == [f"{1.0 + n / 10:.1f} s of speech" for n in range(per_session)]


def test_one_retention_rule_for_conversations_and_recordings(tmp_path):
    chat = start_app(tmp_path)
    store, media = chat.history.store, chat.media
    state, *_ = visit(chat, ANNA)
    ids = {}
    for name in ("old", "renamed", "fresh"):
        chat.new(state)
        turn(chat, state)
        ids[name] = state.conversation_id
    week_ago = time.time() - 8 * 86400
    for name in ("old", "renamed"):  # their last turn was more than a week ago
        for path in media.root.rglob(f"{ids[name]}/*"):
            os.utime(path, (week_ago, week_ago))
    with store.engine.begin() as conn:
        last_turn = utcnow() - timedelta(days=8)
        conn.execute(update(conversations).where(conversations.c.id == ids["old"]).values(updated_at=last_turn))
    stray = media.folder(ANNA, "history-was-off")  # recordings no stored conversation names (history was off)
    (stray / "turn-001-user.wav").write_bytes(b"x")
    os.utime(stray / "turn-001-user.wav", (week_ago, week_ago))

    assert chat.history.sweep(media) == (1, 1)
    assert {c.id for c in store.conversations(ANNA)} == {ids["renamed"], ids["fresh"]}
    folders = {p.name for p in media.root.glob("*/*")}
    assert folders == {ids["renamed"], ids["fresh"]}  # used within the week (renamed): kept with its recordings


def test_writing_a_turn_adds_little_to_the_turn(tmp_path):
    """Forty turns written by the reply handler, and the time it took (printed, not asserted: a test on a busy
    machine is no benchmark; the app logs "saved in ... ms" for every turn, and the README has the figures)."""
    chat = start_app(tmp_path)
    state, *_ = visit(chat, ANNA)
    times: list[float] = []
    save = chat._save

    def timed(*args):
        started = time.perf_counter()
        try:
            return save(*args)
        finally:
            times.append((time.perf_counter() - started) * 1000)

    chat._save = timed
    for _ in range(40):
        turn(chat, state)
    median, p90 = statistics.median(times), statistics.quantiles(times, n=10)[-1]
    print(f"\nturn written by the reply handler: median {median:.2f} ms, p90 {p90:.2f} ms, first {times[0]:.2f} ms")
    assert len(chat.history.store.turns(state.conversation_id, ANNA)) == 40


def test_a_chunk_before_the_page_loaded_still_finds_its_owner(tmp_path):
    """The page's load and the first microphone chunk may come in either order: the same identity either way."""
    chat = start_app(tmp_path)
    state = AppState(duplex=False)
    request = gr.Request(headers={"cookie": f"{COOKIE}={ANNA}"})
    chat.on_chunk((BROWSER_RATE, np.zeros(BROWSER_RATE // 2, np.int16)), state, request)
    session = state.session
    chat.load(state, request)
    assert state.session == session and state.owner == ANNA
