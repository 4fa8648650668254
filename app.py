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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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

from omni import NoSpeechError, SpeechModel, add_model_arguments, load_speech_model, use_model_arguments
from omni.audio import SAMPLE_RATE, to_int16
from omni.conversation import Conversation, ConversationOptions
from omni.live import LiveReplies, LiveReply
from omni.media import MediaStore, OwnerCookie, new_id, owner_of
from omni.models import ModelError
from omni.wav import write_wav
from utils.vad import PauseDetectorOptions, SileroVad
from web import page
from web.page import HOLD, INTERRUPT, MIC, PLAYED, REPLY, RESUME

log = logging.getLogger("app")
RECORDINGS = DATA / "recordings"  # every turn's audio, one folder per browser and session (omni/media.py)
RETENTION_DAYS = float(os.environ.get("OMNI_RETENTION_DAYS", "7"))
# Conversations served at once. On 2 cores two people talking get a first clause within ~2.5 s (bench.load);
# a third would wait longer than a conversation can bear, so it is told to come back instead.
MAX_SESSIONS = int(os.environ.get("OMNI_MAX_SESSIONS", "2"))
ACTIVE_S = 30.0  # a session that sent microphone audio this recently counts as talking
BUSY_NOTE = "<sub>(answering someone else: you are next)</sub>"
CHUNK_S = 0.5  # the microphone's stream_every
HEARTBEAT_S = 0.25  # how often a reply that waits for the model checks whether to show "you are next"
HOLD_S = 3.0  # a held reply goes on by itself after this (the browser resumes it after 2 s)
DUPLEX = os.environ.get("OMNI_DUPLEX", "1") != "0"



@dataclass
class AppState:
    """One browser session. Gradio deep-copies the empty default for every new session."""

    conversation: Conversation | None = None
    duplex: bool = DUPLEX  # listen while the reply plays, and let the user interrupt it
    stopped: bool = False  # "Stop conversation" was pressed: nothing re-arms the microphone
    chat: list[dict] = field(default_factory=list)  # what the Chatbot shows
    turns: int = 0
    turn_ended_at: float = 0.0  # time.time() at the end of the latest user turn
    interrupted: dict | None = None  # the Chatbot message of a reply cut off by the user
    replying: dict | None = None  # the Chatbot message of the reply being written (Stop marks it interrupted)
    last_reply: dict | None = None  # the latest finished reply's message (a barge-in during its playback marks it)
    # Set by the session's first microphone chunk (Gradio deep-copies one default AppState for every session, so
    # an id made here would be the same for all): the recordings folder's name, and the browser's id (its cookie).
    session: str = ""
    owner: str = ""
    origin: str = ""  # the app's public address, for the URLs of recordings (behind a proxy: as the browser sees it)
    live: LiveReply | None = None  # the stream of the reply to the turn that just ended, opened with its end


def interrupted_note(text: str) -> str:
    return f"{text} <sub>(interrupted)</sub>" if text else "<sub>(interrupted)</sub>"


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
        max_sessions: int = MAX_SESSIONS,
        vad: SileroVad | None = None,
    ):
        self.model = model
        self.vad_options = vad_options or PauseDetectorOptions()
        self.vad = vad or SileroVad().load()  # loaded once; every session gets its own stream state (fork)
        self.media = media or MediaStore(RECORDINGS, RETENTION_DAYS)
        self.live = LiveReplies()
        self.max_sessions = max_sessions
        self._active: dict[str, float] = {}  # session -> when it last sent microphone audio
        self._admission = threading.Lock()

    def conversation(self, state: AppState) -> Conversation:
        if state.conversation is None:
            options = ConversationOptions(barge_in=state.duplex)
            state.conversation = Conversation(self.model, self.vad_options, options, vad=self.vad.fork())
        return state.conversation

    def admit(self, state: AppState) -> bool:
        """Whether this session may talk now: it is already talking, or fewer than `max_sessions` are."""
        now = time.monotonic()
        with self._admission:
            self._active = {s: t for s, t in self._active.items() if now - t < ACTIVE_S}
            if state.session not in self._active and len(self._active) >= self.max_sessions:
                return False
            self._active[state.session] = now
            return True

    def forget(self, state: AppState) -> None:
        """The browser session is gone (Gradio deletes its state): free what its conversation held."""
        with self._admission:
            self._active.pop(state.session, None)
        if state.conversation is not None:
            state.conversation.close()

    # --- microphone ------------------------------------------------------------------------------------

    def on_chunk(self, chunk: tuple[int, np.ndarray] | None, state: AppState, request: gr.Request | None = None):
        """Each 0.5 s of microphone audio -> (state, turn ended, microphone off, barge-in, live reply URL): signals
        or skips. The reply's stream opens with the end of the turn, so the page starts listening for its first
        audio one Gradio round trip (140-360 ms here) sooner than if the reply handler opened it."""
        skip = gr.skip()
        if state.stopped or chunk is None:
            return state, skip, skip, skip, skip
        if not state.session:  # the session's first chunk: who is it, and where is the app?
            state.session = new_id()
            state.owner = (request and owner_of(request.headers.get("cookie"))) or new_id()
            if request and request.request:
                state.origin = get_root_url(request.request, "/gradio_api/queue/join", None)
        if not self.admit(state):
            gr.Warning(
                f"Sorry, I am already talking with {self.max_sessions} people and this machine cannot serve more "
                "at once. Please try again in a minute."
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
            state.interrupted = state.last_reply
        if any(e.kind == "end_of_turn" for e in events):
            state.turns += 1
            state.turn_ended_at = now
            log.info("turn %d: ended %s", state.turns, json.dumps({"timing": state.session, "end_of_turn": now * 1000}))
            state.live = self.live.open(state.owner, self.model.sample_rate)
            return state, state.turns, skip if state.duplex else now, barged_in, state.origin + state.live.url
        return state, skip, skip, barged_in, skip

    def on_heard(self, heard_s: float | None, state: AppState):
        """The player reports how much of the interrupted reply was heard: keep exactly that."""
        if state.conversation is None or state.interrupted is None or heard_s is None:
            return gr.skip(), state
        state.interrupted["content"][0] = interrupted_note(state.conversation.heard(float(heard_s)))
        state.interrupted = None
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
        folder = self.media.folder(state.owner, state.session)
        user_wav = folder / f"turn-{turn:03d}-user.wav"
        write_wav(user_wav, to_int16(conversation.turn_audio()), SAMPLE_RATE)
        user = {"role": "user", "content": [audio_message(state.origin + self.media.url(user_wav), "audio/wav")]}
        assistant = {"role": "assistant", "content": ["…"]}
        state.chat += [user, assistant]
        state.replying = assistant
        yield state.chat, state, gr.skip()
        try:
            yield from self._reply(state, conversation, turn, user, assistant, live, folder)
        finally:
            live.close()  # finished, failed or cancelled (Stop): the page's stream ends
            state.replying = None

    def _reply(self, state, conversation, turn, user, assistant, live, folder) -> Iterator[tuple]:
        text, spoken = "", False
        understood = False  # the user's words came back from the model
        first_audio_s = None
        interruptions = conversation.interruptions
        try:
            for chunk in conversation.reply(heartbeat_s=HEARTBEAT_S):
                if chunk.empty:
                    if not text and getattr(conversation.model, "waiting", 0) and assistant["content"] != [BUSY_NOTE]:
                        assistant["content"] = [BUSY_NOTE]  # someone else's reply has the model: say so
                        yield state.chat, state, gr.skip()
                elif chunk.turn is not None:
                    timings = {k: round(v) for k, v in chunk.turn.timings.items()}
                    log.info("turn %d: %s %s", turn, timings, json.dumps({"timing": state.session}))
                elif chunk.transcript is not None:
                    user["content"].append(chunk.transcript)
                    understood = True
                    yield state.chat, state, gr.skip()
                elif chunk.text is not None:
                    text += chunk.text
                    assistant["content"] = [text]
                    yield state.chat, state, gr.skip()
                elif chunk.audio is not None:
                    if first_audio_s is None:
                        first_audio_s = time.time() - state.turn_ended_at
                        # Wall-clock times (ms since the epoch), for bench.browser to line up with the page's clock.
                        timing = {"end_of_turn": state.turn_ended_at * 1000, "first_audio": time.time() * 1000}
                        log.info(
                            "turn %d: first reply audio %.0f ms after the end of the turn %s",
                            turn, first_audio_s * 1000, json.dumps({"timing": state.session, **timing}),
                        )
                    live.write(chunk.audio)
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
            reply_mp3 = folder / f"turn-{turn:03d}-reply.mp3"
            reply_mp3.write_bytes(live.data)  # the very bytes the page played
            content.append(audio_message(state.origin + self.media.url(reply_mp3), "audio/mpeg"))
        if conversation.interruptions > interruptions:
            # Cut off by the user: show what the history keeps until the player says how much it played.
            content[0] = interrupted_note(conversation.spoken.heard or "")
            state.interrupted = assistant
        elif first_audio_s is not None:
            content.append(f"<sub>replied in {first_audio_s:.2f} s</sub>")  # end of the user's turn -> first audio
        assistant["content"] = content
        state.last_reply = assistant
        yield state.chat, state, gr.skip()

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

    def clear(self, state: AppState):
        """Forget the conversation and delete its recordings."""
        if state.conversation:
            state.conversation.clear()
        self.media.delete(state.owner, state.session)
        state.chat = []
        state.interrupted = state.replying = state.last_reply = None
        return state, []


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
        state = gr.State(AppState(), delete_callback=chat.forget)  # deep-copied for every browser session
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
        with gr.Row():
            with gr.Column(scale=1):
                mic = gr.Audio(sources=["microphone"], type="numpy", label="Your microphone", elem_id=MIC)
                gr.HTML("<b>Reply</b>", elem_id=REPLY)  # web/player.js puts the live reply's player here
                duplex = gr.Checkbox(
                    value=DUPLEX, label="Let me interrupt (keep listening while it speaks)", elem_id=INTERRUPT
                )
                with gr.Row():
                    stop = gr.Button("Stop conversation", variant="stop")
                    start = gr.Button("Start again")
                    clear = gr.Button("Clear history")
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
            chat.respond, [state], [chatbot, state, listen_again], concurrency_limit=chat.max_sessions
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
        clear.click(chat.clear, [state], [state, chatbot])
    return demo


def serve(chat: VoiceChat) -> FastAPI:
    """The app's web server: the Gradio page, and the media route that serves each browser only its own files."""
    app = FastAPI()
    app.add_middleware(OwnerCookie)
    chat.media.add_routes(app)
    chat.live.add_routes(app)
    demo = build_demo(chat)
    demo.queue(default_concurrency_limit=chat.max_sessions)
    return gr.mount_gradio_app(app, demo, path="", head=page.head())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Hands-free voice chat in the browser")
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    use_model_arguments(args)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log.info("loading the speech model (once, at start-up)...")
    try:
        model = load_speech_model(args.model)
    except ModelError as e:
        raise SystemExit(f"error: {e}") from None
    chat = VoiceChat(model)
    chat.media.sweep_every(3600)
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    log.info("open http://%s:%d", host, port)
    uvicorn.run(serve(chat), host=host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
