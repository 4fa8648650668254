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
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
DATA = ROOT / ".cache"
# Gradio's own files (uploads, streamed segments) stay inside the project's data folder too.
os.environ.setdefault("GRADIO_TEMP_DIR", str(DATA / "gradio"))

import gradio as gr  # noqa: E402 - after GRADIO_TEMP_DIR is set
import gradio.audio_stream_encoder as _aac  # noqa: E402

# Gradio 6 waits only 0.1 s for its ffmpeg AAC encoder to emit the first frames; with the language model busy on
# both cores ffmpeg often takes longer, the browser then finds an empty playlist and its HLS player retries a
# second later. Waiting up to 0.5 s (it returns as soon as frames exist) lets the first fetch find audio.
_aac.STARTUP_WAIT = max(_aac.STARTUP_WAIT, 0.5)

from omni import NoSpeechError, SpeechModel, add_model_arguments, load_speech_model, use_model_arguments  # noqa: E402
from omni.audio import SAMPLE_RATE, to_int16  # noqa: E402
from omni.conversation import Conversation, ConversationOptions  # noqa: E402
from omni.models import ModelError  # noqa: E402
from omni.mp3 import encode_stream  # noqa: E402
from omni.wav import wav_bytes, write_wav  # noqa: E402
from utils.vad import PauseDetectorOptions, SileroVad  # noqa: E402

log = logging.getLogger("app")
RECORDINGS = DATA / "recordings"  # every turn's audio, one folder per browser session
CHUNK_S = 0.5  # the microphone's stream_every
# Gradio 6 re-encodes streamed audio to AAC in an ffmpeg process and only collects the frames ready when the
# next chunk arrives; an empty chunk after NUDGE_S of quiet collects the rest, so a clause is never held back
# until the next one is written.
NUDGE_S = 0.08
MIC, REPLY, INTERRUPT = "mic", "reply", "duplex"  # elem_ids the browser-side scripts find the components by
HOLD, RESUME = "omni-hold", "omni-resume"  # hidden buttons web/barge_in.js presses
HOLD_S = 3.0  # a held reply goes on by itself after this (the browser resumes it after 2 s)
DUPLEX = os.environ.get("OMNI_DUPLEX", "1") != "0"

# Gradio 6 ignores gr.Audio(recording=...) sent from the server, so the server flips a hidden number and these
# scripts press the microphone's own buttons or pause the player.
PRESS_STOP = f"() => {{ document.querySelector('#{MIC} .stop-button')?.click(); }}"
PRESS_RECORD = f"() => {{ document.querySelector('#{MIC} .record-button')?.click(); }}"
SILENCE_REPLY = f"() => {{ window.omniDropHold?.(); document.querySelectorAll('#{REPLY} audio').forEach(a => a.pause()); }}"
# On a barge-in the server confirmed: stop playback and tell the server how much of the reply was heard.
# web/barge_in.js (loaded into the page) holds playback even sooner, and knows where it held it.
CUT_REPLY = f"""() => {{
  if (window.omniCutReply) return window.omniCutReply();
  let heard = 0;
  document.querySelectorAll('#{REPLY} audio').forEach(a => {{ heard = Math.max(heard, a.currentTime); a.pause(); }});
  return heard;
}}"""
BARGE_IN_SCRIPT = f"<script>{(ROOT / 'web' / 'barge_in.js').read_text()}</script>"


@dataclass
class AppState:
    """One browser session. Gradio deep-copies the empty default for every new session."""

    conversation: Conversation | None = None
    duplex: bool = DUPLEX  # listen while the reply plays, and let the user interrupt it
    stopped: bool = False  # "Stop conversation" was pressed: nothing re-arms the microphone
    chat: list[dict] = field(default_factory=list)  # what the Chatbot shows
    turns: int = 0
    turn_ended_at: float = 0.0  # perf_counter() at the end of the latest user turn
    interrupted: dict | None = None  # the Chatbot message of a reply cut off by the user
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


def interrupted_note(text: str) -> str:
    return f"{text} <sub>(interrupted)</sub>" if text else "<sub>(interrupted)</sub>"


class VoiceChat:
    """The app's event handlers around one shared speech model."""

    def __init__(self, model: SpeechModel, vad_options: PauseDetectorOptions | None = None):
        self.model = model
        self.vad_options = vad_options or PauseDetectorOptions()
        self.vad = SileroVad().load()  # loaded once; every session gets its own stream state (fork)

    def conversation(self, state: AppState) -> Conversation:
        if state.conversation is None:
            options = ConversationOptions(barge_in=state.duplex)
            state.conversation = Conversation(self.model, self.vad_options, options, vad=self.vad.fork())
        return state.conversation

    # --- microphone ------------------------------------------------------------------------------------

    def on_chunk(self, chunk: tuple[int, np.ndarray] | None, state: AppState):
        """Each 0.5 s of microphone audio -> (state, turn ended, microphone off, barge-in), signals or skips."""
        if state.stopped or chunk is None:
            return state, gr.skip(), gr.skip(), gr.skip()
        sample_rate, audio = chunk
        conversation = self.conversation(state)
        interruptions = conversation.interruptions
        try:
            events = conversation.hear(audio, sample_rate)
        except Exception as e:  # noqa: BLE001 - one bad chunk must not end the conversation
            log.warning("dropped a microphone chunk: %s", e)
            return state, gr.skip(), gr.skip(), gr.skip()
        now = time.time()
        barged_in = now if conversation.interruptions > interruptions else gr.skip()
        if any(e.kind == "end_of_turn" for e in events):
            state.turns += 1
            state.turn_ended_at = time.perf_counter()
            return state, state.turns, gr.skip() if state.duplex else now, barged_in
        return state, gr.skip(), gr.skip(), barged_in

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

    def respond(self, state: AppState) -> Iterator[tuple]:
        """Stream the answer to the turn that just ended: (reply audio chunk, chat, state, re-arm signal)."""
        conversation = state.conversation
        if state.stopped or conversation is None:
            return
        folder = RECORDINGS / state.session
        folder.mkdir(parents=True, exist_ok=True)
        user_wav = folder / f"turn-{state.turns:03d}-user.wav"
        write_wav(user_wav, to_int16(conversation.turn_audio()), SAMPLE_RATE)
        user = {"role": "user", "content": [{"path": str(user_wav), "mime_type": "audio/wav"}]}
        state.chat.append(user)
        yield gr.skip(), state.chat, state, gr.skip()

        assistant: dict | None = None
        text, pcm = "", []
        first_audio_s = None
        held = False  # audio yielded that Gradio's AAC encoder may still hold back
        interruptions = conversation.interruptions
        try:
            for chunk in conversation.reply(heartbeat_s=NUDGE_S):
                if chunk.empty:
                    if held:  # the model is busy: have Gradio pass on the frames it encoded from the last chunk
                        held = False
                        yield wav_bytes(np.zeros(0, np.int16), self.model.sample_rate), state.chat, state, gr.skip()
                elif chunk.turn is not None:
                    log.info("turn %d: %s", state.turns, {k: round(v) for k, v in chunk.turn.timings.items()})
                elif chunk.transcript is not None:
                    user["content"].append(chunk.transcript)
                    assistant = {"role": "assistant", "content": ["…"]}
                    state.chat.append(assistant)
                    yield gr.skip(), state.chat, state, gr.skip()
                elif chunk.text is not None and assistant is not None:
                    text += chunk.text
                    assistant["content"] = [text]
                    yield gr.skip(), state.chat, state, gr.skip()
                elif chunk.audio is not None:
                    if first_audio_s is None:
                        first_audio_s = time.perf_counter() - state.turn_ended_at
                        log.info("turn %d: first reply audio %.0f ms after the end of the turn", state.turns, first_audio_s * 1000)
                    pcm.append(chunk.audio)
                    held = True
                    yield wav_bytes(chunk.audio, self.model.sample_rate), state.chat, state, gr.skip()
        except NoSpeechError:
            state.chat.remove(user)
            gr.Info("No words heard. I'm still listening.")
            yield gr.skip(), state.chat, state, self.listen_again(state)  # nothing will play
            return
        except Exception as e:  # noqa: BLE001 - a failed turn is reported; the conversation goes on
            log.exception("the reply failed")
            gr.Warning(f"The reply failed: {e}")
            if assistant is not None and not pcm:
                state.chat.remove(assistant)
            yield gr.skip(), state.chat, state, self.listen_again(state)
            return
        if assistant is None:
            return  # stopped before the user's words were understood
        content: list = [text.strip()]
        if pcm:
            reply_mp3 = folder / f"turn-{state.turns:03d}-reply.mp3"
            reply_mp3.write_bytes(b"".join(encode_stream(pcm, self.model.sample_rate)))
            content.append({"path": str(reply_mp3), "mime_type": "audio/mpeg"})
        if conversation.interruptions > interruptions:
            # Cut off by the user: show what the history keeps until the player says how much it played.
            content[0] = interrupted_note(conversation.spoken.heard or "")
            state.interrupted = assistant
        elif first_audio_s is not None:
            content.append(f"<sub>replied in {first_audio_s:.2f} s</sub>")  # end of the user's turn -> first audio
        assistant["content"] = content
        yield gr.skip(), state.chat, state, gr.skip()

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
        return state, time.time()

    def start(self, state: AppState):
        state.stopped = False
        if state.conversation:
            state.conversation.cancel()  # forget any half-heard turn
        return state, time.time()

    def clear(self, state: AppState):
        if state.conversation:
            state.conversation.clear()
        state.chat = []
        state.interrupted = None
        return state, []


def build_demo(chat: VoiceChat) -> gr.Blocks:
    model = chat.model
    models = getattr(model, "description", model.name)
    with gr.Blocks(title="Omni voice chat") as demo:
        gr.Markdown(
            "## Omni voice chat\n"
            "Press **Record** once and talk. Pause and it answers out loud, then listens again by itself; "
            "talk over it to interrupt. "
            f"<sub>Model: {models}, all local.</sub>"
        )
        state = gr.State(AppState())
        # Hidden numbers: the server changes them, and their .change runs a script in the browser.
        turn_ended = gr.Number(value=0, visible=False)
        mic_off = gr.Number(value=0, visible=False)
        listen_again = gr.Number(value=0, visible=False)
        barged_in = gr.Number(value=0, visible=False)
        heard = gr.Number(value=0, visible=False)
        silence = gr.Number(value=0, visible=False)
        hold = gr.Button(visible="hidden", elem_id=HOLD)
        resume = gr.Button(visible="hidden", elem_id=RESUME)
        with gr.Row():
            with gr.Column(scale=1):
                mic = gr.Audio(sources=["microphone"], type="numpy", label="Your microphone", elem_id=MIC)
                reply = gr.Audio(label="Reply", streaming=True, autoplay=True, interactive=False, elem_id=REPLY)
                duplex = gr.Checkbox(value=DUPLEX, label="Let me interrupt (keep listening while it speaks)", elem_id=INTERRUPT)
                with gr.Row():
                    stop = gr.Button("Stop conversation", variant="stop")
                    start = gr.Button("Start again")
                    clear = gr.Button("Clear history")
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="Conversation", height=520)

        mic.stream(
            chat.on_chunk,
            [mic, state],
            [state, turn_ended, mic_off, barged_in],
            stream_every=CHUNK_S,
            time_limit=None,
            concurrency_limit=None,  # a chunk costs ~1 ms: never queue one behind another session's
        )
        mic_off.change(None, None, None, js=PRESS_STOP)
        answering = turn_ended.change(chat.respond, [state], [reply, chatbot, state, listen_again])
        played = reply.stop(chat.listen_again, [state], [listen_again])
        listen_again.change(None, None, None, js=PRESS_RECORD)
        barged_in.change(None, None, [heard], js=CUT_REPLY)
        heard.change(chat.on_heard, [heard, state], [chatbot, state])
        hold.click(chat.on_hold, [state], None, concurrency_limit=None, api_visibility="private")
        resume.click(chat.on_resume, [state], None, concurrency_limit=None, api_visibility="private")
        duplex.change(chat.set_duplex, [duplex, state], [state])
        stop.click(chat.stop, [state], [state, silence], cancels=[answering, played]).then(None, js=PRESS_STOP)
        silence.change(None, None, None, js=SILENCE_REPLY)
        start.click(chat.start, [state], [state, listen_again])
        clear.click(chat.clear, [state], [state, chatbot])
    return demo


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
    demo = build_demo(chat)
    demo.queue(default_concurrency_limit=4).launch(allowed_paths=[str(RECORDINGS)], head=BARGE_IN_SCRIPT)


if __name__ == "__main__":
    main()
