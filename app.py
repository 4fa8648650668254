"""Hands-free voice chat in the browser: talk, pause, and the local speech model answers out loud.

The shape of Gradio's "conversational chatbot with mini omni" guide: the microphone streams 0.5 s chunks into a
per-session `AppState`; the Silero pause detector ends the turn by itself; the speech model's reply streams into
an autoplaying audio output while the Chatbot keeps the audio and text of every turn.

By default it is full duplex: the microphone stays on while the reply plays, and talking over the assistant stops
it (the "Let me interrupt" box, or OMNI_DUPLEX=0, gives the guide's half duplex).

    python app.py            # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are honoured)
    OMNI_MODEL=mini-omni python app.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import numpy as np

ROOT = Path(__file__).resolve().parent
DATA = ROOT / ".cache"
# Gradio's own files (uploads, streamed segments) stay inside the project's data folder too.
os.environ.setdefault("GRADIO_TEMP_DIR", str(DATA / "gradio"))

# Imported after GRADIO_TEMP_DIR is set (above).
import gradio as gr
import uvicorn
from fastapi import FastAPI
from gradio.route_utils import get_root_url

from omni import (
    Audio,
    Finished,
    Heartbeat,
    NoSpeechError,
    Settings,
    SpeechModel,
    TextDelta,
    Transcript,
    add_model_arguments,
    load_speech_model,
)
from omni.audio import SAMPLE_RATE, to_int16
from omni.conversation import INTERRUPTED, Conversation, ConversationOptions
from omni.history import EXPORT, History
from omni.live import LiveReplies, LiveReply
from omni.media import MediaStore, OwnerCookie, new_id, owner_of
from omni.models import ModelError
from omni.speech_model import Message
from omni.store import ConversationRecord, NotFound, Store, StoreError, TurnRecord, utcnow
from omni.wav import write_wav
from utils.vad import PauseDetectorOptions, SileroVad
from web import page
from web.page import CONVERSATION_BUTTONS, CONVERSATIONS, FORGET, HOLD, INTERRUPT, MIC, PLAYED, REPLY, RESUME

log = logging.getLogger("app")
T = TypeVar("T")
RECORDINGS = DATA / "recordings"  # every turn's audio, one folder per browser and conversation (omni/media.py)
ACTIVE_S = 30.0  # a session that sent microphone audio this recently counts as talking
BUSY_NOTE = "<sub>(answering someone else: you are next)</sub>"
CHUNK_S = 0.5  # the microphone's stream_every
HEARTBEAT_S = 0.25  # how often a reply that waits for the model checks whether to show "you are next"
HOLD_S = 3.0  # a held reply goes on by itself after this (the browser resumes it after 2 s)
REPLIED_MS = "first_audio_after_turn_ms"  # a stored turn's timing that the chat shows as "replied in"
TITLE_CHARS = 80


@dataclass
class AppState:
    """One browser session. Gradio deep-copies the empty default for every new session."""

    conversation: Conversation | None = None
    duplex: bool = True  # listen while the reply plays, and let the user interrupt it (the page: Settings.duplex)
    stopped: bool = False  # "Stop conversation" was pressed: nothing re-arms the microphone
    chat: list[dict] = field(default_factory=list)  # what the Chatbot shows
    turns: int = 0
    turn_ended_at: float = 0.0  # time.time() at the end of the latest user turn
    interrupted: dict | None = None  # the Chatbot message of a reply cut off by the user
    replying: dict | None = None  # the Chatbot message of the reply being written (Stop marks it interrupted)
    last_reply: dict | None = None  # the latest finished reply's message (a barge-in during its playback marks it)
    # Set when the page loads, or by the session's first microphone chunk (Gradio deep-copies one default AppState
    # for every session, so an id made here would be the same for all): the session's id, and the browser's id
    # (its cookie), which owns its recordings and stored conversations.
    session: str = ""
    owner: str = ""
    # Gradio's id of the page: when the page is closed or reloaded, `VoiceChat.leave` gets it at once (the state
    # itself is only deleted an hour later), and the session's place among those talking is free again.
    page: str = ""
    origin: str = ""  # the app's public address, for the URLs of recordings (behind a proxy: as the browser sees it)
    live: LiveReply | None = None  # the stream of the reply to the turn that just ended, opened with its end
    # The open conversation: its id in the store and the name of its recordings folder.
    conversation_id: str = ""
    # `turns` only ever grows (it is the signal that starts a reply); the open conversation's files are numbered
    # from where it left off: session turn N is its turn N - numbered_from.
    numbered_from: int = 0
    last_turn: int | None = None  # the store's index of `last_reply`'s turn (None: not stored)
    interrupted_turn: int | None = None  # ... and of `interrupted`'s


@dataclass(frozen=True)
class TurnFiles:
    """Where one turn's audio goes: the folder of the conversation it belongs to, named by its number there."""

    conversation_id: str
    user: Path
    reply: Path


def interrupted_note(text: str) -> str:
    return f"{text} <sub>(interrupted)</sub>" if text else "<sub>(interrupted)</sub>"


def replied_note(seconds: float) -> str:
    return f"<sub>replied in {seconds:.2f} s</sub>"  # end of the user's turn -> first audio


def remembered(turns: list[TurnRecord]) -> list[Message]:
    """What the model remembers of stored turns: the same messages the conversation kept when they were said."""
    history: list[Message] = []
    for turn in turns:
        reply = f"{turn.reply_text}{INTERRUPTED}" if turn.interrupted else turn.reply_text
        history += [{"role": "user", "content": turn.transcript}, {"role": "assistant", "content": reply}]
    return history


def ago(moment: datetime, now: datetime) -> str:
    minutes = (now - moment).total_seconds() / 60
    for unit, size in (("d", 1440), ("h", 60), ("min", 1)):
        if minutes >= size:
            return f"{minutes // size:.0f} {unit} ago"
    return "just now"


def conversation_label(record: ConversationRecord, now: datetime) -> str:
    turns = f"{record.turn_count} turn{'' if record.turn_count == 1 else 's'}"
    return f"{record.title or 'Untitled'} · {turns} · {ago(record.updated_at, now)}"


def audio_message(url: str, mime_type: str) -> dict:
    """A Chatbot file at URL (the app's own media route, for its owner only), not a copy in Gradio's file cache,
    which serves any file to anyone who has its URL."""
    return {"type": "file", "file": {"path": url, "url": url, "mime_type": mime_type, "orig_name": url.rsplit("/")[-1]}}


class VoiceChat:
    """The app's event handlers around one shared speech model."""

    def __init__(
        self,
        model: SpeechModel,
        vad_options: PauseDetectorOptions | None = None,
        media: MediaStore | None = None,
        settings: Settings | None = None,
        vad: SileroVad | None = None,
        history: History | None = None,
    ):
        self.model = model
        self.settings = settings or Settings()  # `main` makes them from the environment and the flags
        self.vad_options = vad_options or PauseDetectorOptions()
        self.vad = vad or SileroVad().load()  # loaded once; every session gets its own stream state (fork)
        self.media = media or MediaStore(RECORDINGS, self.settings.retention_days)
        self.history = history or History()  # off unless given: `main` opens the store
        self.live = LiveReplies()
        self._active: dict[str, float] = {}  # session -> when it last sent microphone audio
        self._admission = threading.Lock()

    def conversation(self, state: AppState) -> Conversation:
        if state.conversation is None:
            options = ConversationOptions(barge_in=state.duplex)
            state.conversation = Conversation(self.model, self.vad_options, options, vad=self.vad.fork())
        return state.conversation

    def admit(self, state: AppState) -> bool:
        """Whether this session may talk now: it is already talking, or fewer than `settings.max_sessions` are."""
        now = time.monotonic()
        with self._admission:
            self._active = {s: t for s, t in self._active.items() if now - t < ACTIVE_S}
            if state.page not in self._active and len(self._active) >= self.settings.max_sessions:
                return False
            self._active[state.page] = now
            return True

    def _free(self, page: str) -> None:
        with self._admission:
            self._active.pop(page, None)

    def leave(self, request: gr.Request) -> None:
        """The page was closed or reloaded (`demo.unload`): its place among those talking is free at once. Kept for
        ACTIVE_S, a reload while someone else talked was turned away for up to half a minute."""
        self._free(request.session_hash)

    def forget(self, state: AppState) -> None:
        """The browser session is gone (Gradio deletes its state): free what its conversation held."""
        self._free(state.page)
        if state.conversation is not None:
            state.conversation.close()

    def identify(self, state: AppState, request: gr.Request | None) -> None:
        """Who is it, and where is the app? Once per browser session: when the page loads, or at its first chunk."""
        if state.session:
            return
        state.session = new_id()
        state.page = (request and request.session_hash) or state.session
        state.owner = (request and owner_of(request.headers.get("cookie"))) or new_id()
        if request and request.request:
            state.origin = get_root_url(request.request, "/gradio_api/queue/join", None)
        state.conversation_id = new_id()  # a new conversation, until the page opens a stored one

    # --- microphone ------------------------------------------------------------------------------------

    def on_chunk(self, chunk: tuple[int, np.ndarray] | None, state: AppState, request: gr.Request | None = None):
        """Each 0.5 s of microphone audio -> (state, turn ended, microphone off, barge-in, live reply URL): signals
        or skips. The reply's stream opens with the end of the turn, so the page starts listening for its first
        audio one Gradio round trip (140-360 ms here) sooner than if the reply handler opened it."""
        skip = gr.skip()
        if state.stopped or chunk is None:
            return state, skip, skip, skip, skip
        self.identify(state, request)
        if not self.admit(state):
            gr.Warning(
                f"Sorry, I am already talking with {self.settings.max_sessions} people and this machine cannot "
                "serve more at once. Please try again in a minute."
            )
            return state, skip, time.time(), skip, skip  # the microphone goes off
        sample_rate, audio = chunk
        conversation = self.conversation(state)
        interruptions = conversation.interruptions
        try:
            events = conversation.hear(audio, sample_rate)
        except Exception as e:  # noqa: BLE001 - one bad chunk must not end the conversation
            log.warning("dropped a microphone chunk: %s", e)
            return state, skip, skip, skip, skip
        now = time.time()
        barged_in = now if conversation.interruptions > interruptions else skip
        if conversation.interruptions > interruptions and state.interrupted is None and state.replying is None:
            # The reply was all written but was still playing: the player will say how much was heard.
            state.interrupted, state.interrupted_turn = state.last_reply, state.last_turn
        if any(e.kind == "end_of_turn" for e in events):
            state.turns += 1
            state.turn_ended_at = now
            log.info("turn %d: ended %s", state.turns, json.dumps({"timing": state.session, "end_of_turn": now * 1000}))
            state.live = self.live.open(state.owner, self.model.sample_rate)
            return state, state.turns, skip if state.duplex else now, barged_in, state.origin + state.live.url
        return state, skip, skip, barged_in, skip

    def on_heard(self, heard_s: float | None, state: AppState):
        """The player reports how much of the interrupted reply was heard: keep exactly that, in the chat, the
        model's memory and the store."""
        if state.conversation is None or state.interrupted is None or heard_s is None:
            return gr.skip(), state
        heard = state.conversation.heard(float(heard_s))
        state.interrupted["content"][0] = interrupted_note(heard)
        if (index := state.interrupted_turn) is not None:
            conversation_id, owner = state.conversation_id, state.owner

            def cut(store: Store) -> None:
                with suppress(NotFound):  # deleted meanwhile: nothing to correct
                    store.cut_turn(conversation_id, owner, index, heard)

            self._stored("The interruption was not saved", cut, None)
        state.interrupted = state.interrupted_turn = None
        return state.chat, state

    def on_hold(self, state: AppState) -> None:
        """The browser paused the reply on a loud sound: stop generating until it is confirmed or released."""
        if state.conversation is not None:
            log.info("turn %d: reply held (a loud sound while it played)", state.turns)
            state.conversation.hold(HOLD_S)

    def on_resume(self, state: AppState) -> None:
        if state.conversation is not None:
            log.info("turn %d: reply resumed", state.turns)
            state.conversation.resume()

    # --- the reply ---------------------------------------------------------------------------------------

    def respond(self, state: AppState, request: gr.Request | None = None) -> Iterator[tuple]:
        """Answer the turn that just ended: (chat, state, re-arm signal) as the reply grows. Its audio streams to the
        page through the reply's own URL (omni/live.py), opened at the end of the turn (`on_chunk`)."""
        conversation = state.conversation
        if state.stopped or conversation is None:
            return
        turn = state.turns  # read once: in full duplex the next turn may end while this one is answered
        live, state.live = state.live or self.live.open(state.owner, self.model.sample_rate), None
        folder = self.media.folder(state.owner, state.conversation_id)
        name = f"turn-{turn - state.numbered_from:03d}"  # its number in the open conversation
        files = TurnFiles(state.conversation_id, folder / f"{name}-user.wav", folder / f"{name}-reply.mp3")
        write_wav(files.user, to_int16(conversation.turn_audio()), SAMPLE_RATE)
        user = {"role": "user", "content": [audio_message(state.origin + self.media.url(files.user), "audio/wav")]}
        assistant = {"role": "assistant", "content": ["…"]}
        state.chat += [user, assistant]
        state.replying = assistant
        yield state.chat, state, gr.skip()
        try:
            yield from self._reply(state, conversation, turn, user, assistant, live, files)
        finally:
            live.close()  # finished, failed or cancelled (Stop): the page's stream ends
            state.replying = None

    def _reply(self, state, conversation, turn, user, assistant, live, files: TurnFiles) -> Iterator[tuple]:
        text, spoken = "", False
        understood = False  # the user's words came back from the model
        first_audio_s = None
        finished = None  # the model's finished exchange: what the conversation's history keeps
        interruptions = conversation.interruptions
        try:
            for chunk in conversation.reply(heartbeat_s=HEARTBEAT_S):
                match chunk:
                    case Heartbeat():
                        waiting = getattr(conversation.model, "waiting", 0)
                        if not text and waiting and assistant["content"] != [BUSY_NOTE]:
                            assistant["content"] = [BUSY_NOTE]  # someone else's reply has the model: say so
                            yield state.chat, state, gr.skip()
                    case Finished(finished):
                        timings = {k: round(v) for k, v in finished.timings.items()}
                        log.info("turn %d: %s %s", turn, timings, json.dumps({"timing": state.session}))
                    case Transcript(transcript):
                        user["content"].append(transcript)
                        understood = True
                        yield state.chat, state, gr.skip()
                    case TextDelta(delta):
                        text += delta
                        assistant["content"] = [text]
                        yield state.chat, state, gr.skip()
                    case Audio(pcm):
                        if first_audio_s is None:
                            first_audio_s = time.time() - state.turn_ended_at
                            # Wall-clock times (ms since the epoch), for bench.browser to line up with the page's clock.
                            timing = {"end_of_turn": state.turn_ended_at * 1000, "first_audio": time.time() * 1000}
                            log.info(
                                "turn %d: first reply audio %.0f ms after the end of the turn %s",
                                turn, first_audio_s * 1000, json.dumps({"timing": state.session, **timing}),
                            )
                        live.write(pcm)
                        spoken = True
        except NoSpeechError:
            state.chat = [m for m in state.chat if m is not user and m is not assistant]
            gr.Info("No words heard. I'm still listening.")
            yield state.chat, state, self.listen_again(state)  # nothing will play
            return
        except Exception as e:  # a failed turn is reported; the conversation goes on
            log.exception("the reply failed")
            gr.Warning(f"The reply failed: {e}")
            if not spoken:
                state.chat.remove(assistant)
            yield state.chat, state, self.listen_again(state)
            return
        if not understood:  # stopped before the user's words were understood
            state.chat.remove(assistant)
            yield state.chat, state, gr.skip()
            return
        if not spoken:  # nothing to play (the reply had no speakable words): listen again now
            yield state.chat, state, self.listen_again(state)
        content: list = [text.strip()]
        if spoken:
            live.close()
            files.reply.write_bytes(live.data)  # the very bytes the page played
            content.append(audio_message(state.origin + self.media.url(files.reply), "audio/mpeg"))
        cut = conversation.interruptions > interruptions
        if cut:
            # Cut off by the user: show what the history keeps until the player says how much it played.
            content[0] = interrupted_note(conversation.spoken.heard or "")
        elif first_audio_s is not None:
            content.append(replied_note(first_audio_s))
        assistant["content"] = content
        index = None
        if finished is not None or cut:  # in the model's memory: kept in the store as well, as one transaction
            timings = dict(finished.timings) if finished else {}
            if first_audio_s is not None:
                timings[REPLIED_MS] = first_audio_s * 1000
            record = TurnRecord(
                transcript=finished.transcript if finished else conversation.spoken.transcript,
                reply_text=(conversation.spoken.heard or "") if cut else finished.reply_text,
                user_audio=self._relative(files.user),
                reply_audio=self._relative(files.reply) if spoken else None,
                timings=timings,
                interrupted=cut,
            )
            index = self._save(state, files.conversation_id, record, turn)
        if cut:
            state.interrupted, state.interrupted_turn = assistant, index
        state.last_reply, state.last_turn = assistant, index
        yield state.chat, state, gr.skip()

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.media.root).as_posix()

    def _save(self, state: AppState, conversation_id: str, record: TurnRecord, turn: int) -> int | None:
        """Write one finished turn; its index in the store, or None if it was not written."""
        if state.conversation_id != conversation_id:
            return None  # the user left this conversation while it was answered (deleted it, or opened another)
        owner = state.owner

        def write(store: Store) -> TurnRecord:
            try:
                return store.add_turn(conversation_id, owner, record)
            except NotFound:  # its first turn (or it was deleted elsewhere meanwhile): it begins now
                return store.add_turn(conversation_id, owner, record, create=True)

        started = time.perf_counter()
        saved = self._stored("This turn was not saved", write, None)
        if saved is not None:
            log.info("turn %d: saved in %.1f ms", turn, (time.perf_counter() - started) * 1000)
        return None if saved is None else saved.index

    def _stored(self, failed: str, call: Callable[[Store], T], default: T) -> T:
        """CALL(the store); DEFAULT when history is off, or when the database fails now: then the user is told
        (FAILED: why) and the conversation goes on."""
        store = self.history.store
        if store is None:
            return default
        try:
            return call(store)
        except StoreError as error:
            log.warning("%s: %s", failed, error)
            gr.Warning(f"{failed}: {error}. You can keep talking.")
            return default

    def listen_again(self, state: AppState):
        """The reply has played (or will not play): a signal that re-arms the microphone, unless the user
        stopped the conversation (half duplex only: in full duplex it never went off)."""
        if state.conversation:
            state.conversation.played()
        return gr.skip() if state.stopped or state.duplex else time.time()

    # --- controls ----------------------------------------------------------------------------------------

    def set_duplex(self, duplex: bool, state: AppState):
        state.duplex = bool(duplex)
        if state.conversation:
            state.conversation.options.barge_in = state.duplex
        return state

    def stop(self, state: AppState):
        state.stopped = True
        if state.conversation:
            state.conversation.cancel()
        if state.replying is not None:  # cut off mid-reply: say so, as for a barge-in
            text = state.replying["content"][0]
            state.replying["content"] = [interrupted_note(text if text not in ("…", BUSY_NOTE) else "")]
            state.replying = None
        return state, time.time(), state.chat

    def start(self, state: AppState):
        state.stopped = False
        if state.conversation:
            state.conversation.cancel()  # forget any half-heard turn
        return state, time.time()

    # --- conversations that last -----------------------------------------------------------------------
    # Each of these answers (state, chat, the list of conversations, the export link).

    def load(self, state: AppState, request: gr.Request | None = None):
        """The page (re)loaded: show the browser's latest conversation as it was, and the model remembers it."""
        self.identify(state, request)
        if self.history.store is None and self.history.off_because:
            gr.Warning(f"History is off, nothing you say is kept: {self.history.off_because}. You can still talk.")
        owner = state.owner

        def latest(store: Store) -> tuple[str, list[TurnRecord]] | None:
            for record in store.conversations(owner)[:1]:
                with suppress(NotFound):  # deleted this very moment (another tab): begin a new one instead
                    return record.id, store.turns(record.id, owner)
            return None

        if opened := self._stored("Your conversations could not be loaded", latest, None):
            self._open(state, *opened)
        return self._shown(state)

    def open(self, conversation_id: str | None, state: AppState):
        """Open one of the browser's conversations from the list."""
        if not conversation_id or conversation_id == state.conversation_id:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        owner = state.owner

        def read(store: Store) -> list[TurnRecord] | None:
            try:
                return store.turns(conversation_id, owner)
            except NotFound:
                gr.Warning("That conversation is gone (deleted in another tab, or past its retention).")
                return None

        if (turns := self._stored("The conversation could not be opened", read, None)) is not None:
            self._open(state, conversation_id, turns)
        return self._shown(state)

    def new(self, state: AppState):
        """Begin a new conversation; the one left stays in the list."""
        self._open(state, new_id(), [])
        return self._shown(state)

    def clear(self, state: AppState):
        """Clear history: delete the open conversation (its turns and recordings), and begin a new one."""
        if state.conversation_id:
            conversation_id, owner = state.conversation_id, state.owner

            def delete(store: Store) -> None:
                with suppress(NotFound):  # never stored (no turn yet), or already deleted
                    store.delete(conversation_id, owner)

            self._stored("The conversation could not be deleted from the database", delete, None)
            self.media.delete(owner, conversation_id)  # with the files no stored turn names (unanswered turns)
        self._open(state, new_id(), [])
        return self._shown(state)

    def rename(self, title: str, state: AppState):
        """Rename the open conversation: (the emptied title box, the list)."""
        title = " ".join(title.split())[:TITLE_CHARS]
        if not title:
            return gr.skip(), gr.skip()
        conversation_id, owner = state.conversation_id, state.owner

        def rename(store: Store) -> None:
            try:
                store.rename(conversation_id, owner, title)
            except NotFound:  # nothing said yet: it is kept from now on, under its name
                store.create_conversation(owner, title, conversation_id)

        self._stored("The conversation could not be renamed", rename, None)
        return "", self.listing(state)[0]

    def _open(self, state: AppState, conversation_id: str, turns: list[TurnRecord]) -> None:
        """Make CONVERSATION_ID the open conversation: the chat shows TURNS, the model remembers them, and
        whatever was under way (a turn, a reply) is dropped with the conversation left behind."""
        conversation = self.conversation(state)
        conversation.clear()
        conversation.history.extend(remembered(turns))
        state.conversation_id = conversation_id
        state.numbered_from = state.turns - self.media.last_turn(state.owner, conversation_id)
        state.chat = [message for turn in turns for message in self._messages(state, turn)]
        state.interrupted = state.replying = state.last_reply = None
        state.interrupted_turn = state.last_turn = None

    def _messages(self, state: AppState, turn: TurnRecord) -> list[dict]:
        """A stored turn as the chat showed it when it was said."""
        user = [*self._audio(state, turn.user_audio, "audio/wav"), turn.transcript]
        reply = [interrupted_note(turn.reply_text) if turn.interrupted else turn.reply_text]
        reply += self._audio(state, turn.reply_audio, "audio/mpeg")
        if not turn.interrupted and REPLIED_MS in turn.timings:
            reply.append(replied_note(turn.timings[REPLIED_MS] / 1000))
        return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]

    def _audio(self, state: AppState, relative: str | None, mime_type: str) -> list[dict]:
        path = self.media.root / relative if relative else None
        if path is None or not path.is_file():  # none, or gone (deleted by hand)
            return []
        return [audio_message(state.origin + self.media.url(path), mime_type)]

    def _shown(self, state: AppState):
        return state, state.chat, *self.listing(state)

    def listing(self, state: AppState):
        """(the owner's conversations with the open one chosen, the link that exports it), also brought up to date
        after each turn (a new conversation appears, counts and titles change)."""
        owner = state.owner
        stored = self._stored("Your conversations could not be listed", lambda store: store.conversations(owner), [])
        now = utcnow()
        choices = [(conversation_label(record, now), record.id) for record in stored]
        saved = any(record.id == state.conversation_id for record in stored)
        if not saved:
            choices.insert(0, ("New conversation", state.conversation_id))
        url = f"{state.origin}{EXPORT}/{state.conversation_id}"
        link = f'<a class="omni-export" href="{url}" download>Export (zip)</a>' if saved else ""
        off = self.history.off_because and "History is off: nothing is kept when you leave"
        return gr.Radio(choices=choices, value=state.conversation_id, info=off or None), link


def build_demo(chat: VoiceChat) -> gr.Blocks:
    model = chat.model
    models = getattr(model, "description", model.name)
    # Gradio's own temporary files (microphone uploads, streamed segments) are deleted after an hour.
    with gr.Blocks(title="Omni voice chat", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "## Omni voice chat\n"
            "Press **Record** once and talk. Pause and it answers out loud, then listens again by itself; "
            "talk over it to interrupt. "
            f"<sub>Model: {models}, all local.</sub>"
        )
        # Deep-copied for every browser session.
        state = gr.State(AppState(duplex=chat.settings.duplex), delete_callback=chat.forget)
        # Hidden numbers: the server changes them, and their .change runs a script in the browser.
        turn_ended = gr.Number(value=0, visible=False)
        mic_off = gr.Number(value=0, visible=False)
        listen_again = gr.Number(value=0, visible=False)
        barged_in = gr.Number(value=0, visible=False)
        heard = gr.Number(value=0, visible=False)
        silence = gr.Number(value=0, visible=False)
        live_url = gr.Textbox(visible=False)  # the current reply's stream, played by web/player.js
        hold = gr.Button(visible="hidden", elem_id=HOLD)
        resume = gr.Button(visible="hidden", elem_id=RESUME)
        played = gr.Button(visible="hidden", elem_id=PLAYED)
        forget = gr.Button(visible="hidden", elem_id=FORGET)  # pressed once the user confirms a deletion
        with gr.Row():
            with gr.Column(scale=1):
                mic = gr.Audio(sources=["microphone"], type="numpy", label="Your microphone", elem_id=MIC)
                gr.HTML("<b>Reply</b>", elem_id=REPLY)  # web/player.js puts the live reply's player here
                duplex = gr.Checkbox(
                    value=chat.settings.duplex,
                    label="Let me interrupt (keep listening while it speaks)",
                    elem_id=INTERRUPT,
                )
                with gr.Row():
                    stop = gr.Button("Stop conversation", variant="stop")
                    start = gr.Button("Start again")
                    clear = gr.Button("Clear history")
                # Your conversations, kept between visits: open one by choosing it.
                conversations = gr.Radio(label="Your conversations", elem_id=CONVERSATIONS)
                with gr.Row(elem_classes=CONVERSATION_BUTTONS):
                    new = gr.Button("New conversation", size="sm")
                    export = gr.HTML()  # a link to the owner-only export route, once there is a turn
                    delete = gr.Button("Delete", size="sm")
                with gr.Row(equal_height=True):
                    title = gr.Textbox(placeholder="A new name for it", show_label=False, container=False, scale=2)
                    rename = gr.Button("Rename", size="sm", scale=1)
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Conversation", height=520)

        mic.stream(
            chat.on_chunk,
            [mic, state],
            [state, turn_ended, mic_off, barged_in, live_url],
            stream_every=CHUNK_S,
            time_limit=None,
            concurrency_limit=None,  # a chunk costs ~1 ms: never queue one behind another session's
        )
        mic_off.change(None, None, None, js=page.PRESS_STOP)
        # Every admitted session's reply may run at once: the model's compute queue takes turns between them.
        answering = turn_ended.change(
            chat.respond, [state], [chatbot, state, listen_again], concurrency_limit=chat.settings.max_sessions
        )
        live_url.change(None, [live_url], None, js=page.PLAY_REPLY)
        played.click(chat.listen_again, [state], [listen_again], concurrency_limit=None, api_visibility="private")
        listen_again.change(None, None, None, js=page.PRESS_RECORD)
        barged_in.change(None, None, [heard], js=page.CUT_REPLY)
        heard.change(chat.on_heard, [heard, state], [chatbot, state])
        hold.click(chat.on_hold, [state], None, concurrency_limit=None, api_visibility="private")
        resume.click(chat.on_resume, [state], None, concurrency_limit=None, api_visibility="private")
        duplex.change(chat.set_duplex, [duplex, state], [state])
        stop.click(chat.stop, [state], [state, silence, chatbot], cancels=[answering]).then(None, js=page.PRESS_STOP)
        silence.change(None, None, None, js=page.SILENCE_REPLY)
        start.click(chat.start, [state], [state, listen_again])

        # Conversations that last. Leaving the open conversation drops the reply under way and its playback.
        shown = [state, chatbot, conversations, export]
        demo.load(chat.load, [state], shown)
        demo.unload(chat.leave)
        answering.then(chat.listing, [state], [conversations, export])  # a turn was written: new count, title
        conversations.input(chat.open, [conversations, state], shown, cancels=[answering]).then(
            None, js=page.SILENCE_REPLY
        )
        new.click(chat.new, [state], shown, cancels=[answering]).then(None, js=page.SILENCE_REPLY)
        for deleting in (clear, delete):
            deleting.click(None, js=page.CONFIRM_FORGET)
        forget.click(chat.clear, [state], shown, cancels=[answering], api_visibility="private").then(
            None, js=page.SILENCE_REPLY
        )
        rename.click(chat.rename, [title, state], [title, conversations])
        title.submit(chat.rename, [title, state], [title, conversations])
    return demo


def serve(chat: VoiceChat) -> FastAPI:
    """The app's web server: the Gradio page, and the media route that serves each browser only its own files."""
    app = FastAPI()
    app.add_middleware(OwnerCookie)
    chat.media.add_routes(app)
    chat.live.add_routes(app)
    chat.history.add_routes(app)
    demo = build_demo(chat)
    demo.queue(default_concurrency_limit=chat.settings.max_sessions)
    return gr.mount_gradio_app(app, demo, path="", head=page.head(), css=page.CSS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Hands-free voice chat in the browser")
    add_model_arguments(parser)
    settings = Settings.from_env(os.environ).with_flags(parser.parse_args(argv))

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log.info("loading the speech model (once, at start-up)...")
    try:
        model = load_speech_model(settings)
    except ModelError as e:
        raise SystemExit(f"error: {e}") from None
    chat = VoiceChat(model, settings=settings, history=History.open(RECORDINGS))
    chat.history.sweep_every(chat.media, 3600)
    host, port = settings.server_name, settings.server_port
    log.info("open http://%s:%d", host, port)
    uvicorn.run(serve(chat), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
