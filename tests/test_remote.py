"""The cascade on OpenAI-compatible engines: a real llama-cpp-python server (its own `llama_cpp.server`) on this
project's Qwen2.5 0.5B GGUF, with real Whisper and piper around it.

speaches and the like fetch their models from a hub, so the speech endpoints are tested against a small server this
file starts, which speaks the OpenAI audio protocol with the real Whisper and piper behind it (a third-party
transcription server was tried by hand: docs/deploy.md).
"""

from __future__ import annotations

import io
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, Form, UploadFile
from fastapi.responses import StreamingResponse

from omni import Audio, TextDelta
from omni.asr import Transcriber
from omni.audio import SAMPLE_RATE, load_audio, prepare
from omni.cascade import Cascade
from omni.conversation import Conversation
from omni.llm import ChatModel, LlmOptions
from omni.models import resolve
from omni.remote import RemoteChatModel, RemoteModelError, RemoteOptions, RemoteSpeaker, RemoteTranscriber
from omni.tts import Speaker
from tests.conftest import collect

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
MODEL = "qwen2.5-0.5b"
# In no other test (the latency benchmark speaks it, for timing only): an answer long enough to tell two models apart.
HELD_OUT_QUESTION = ROOT / "bench" / "prompts" / "book.wav"
CHUNK = SAMPLE_RATE // 2  # what the browser sends
TRANSCRIPTION_PROMPTS: list[str] = []  # the `prompt` of each request to the speech server below


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# llama-cpp-python's own server, with one log line per generated token, so that when its generation stopped is known
# to the millisecond (its "Disconnected from client" line came after only 5 of 8 cancelled replies).
SERVER = """
import time, llama_cpp
generate = llama_cpp.Llama.generate
def logged(self, *args, **kwargs):
    for token in generate(self, *args, **kwargs):
        print(f"token at {time.monotonic():.4f}", flush=True)
        yield token
llama_cpp.Llama.generate = logged
from llama_cpp.server.__main__ import main
main()
"""


@dataclass
class LlmServer:
    process: subprocess.Popen
    url: str
    log: Path

    def token_times(self) -> list[float]:
        """time.monotonic() of every token it generated."""
        return [float(line.split()[-1]) for line in self.log.read_text().splitlines() if line.startswith("token at ")]


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory) -> Iterator[LlmServer]:
    """llama-cpp-python's server (SERVER) on a free port, set up like the app's own ChatModel (LlmOptions)."""
    options, port = LlmOptions(), free_port()
    command = [
        sys.executable, "-c", SERVER, "--model", str(resolve(MODEL)), "--model_alias", MODEL,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(options.n_ctx),
        "--n_batch", str(options.batch), "--n_ubatch", str(options.batch),
        # One thread: Whisper and piper share the 2 cores from this process, and llama.cpp's two threads stall each
        # other when one is pre-empted (tokens came 0.5-1.5 s apart here under load; the same answers either way).
        "--n_threads", "1", "--n_threads_batch", "1",
        # By default a streaming reply ends early whenever another request waits: one conversation's listening
        # ahead would cut another's reply short.
        "--interrupt_requests", "False",
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("llm-server") / "log.txt"
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = LlmServer(process, f"http://127.0.0.1:{port}/v1", log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{server.url}/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("llama_cpp.server did not start:\n" + log.read_text()[-3000:])
    yield server
    process.send_signal(signal.SIGCONT)  # in case a test left it stopped
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def asr() -> Transcriber:
    return Transcriber("whisper-base")


@pytest.fixture(scope="module")
def tts() -> Speaker:
    return Speaker.load()


@pytest.fixture(scope="module")
def remote_cascade(llm_server, asr, tts) -> Cascade:
    model = Cascade(asr, RemoteChatModel(llm_server.url, MODEL), tts)
    model.warm_up()
    return model


def speak(conversation: Conversation, audio: np.ndarray) -> None:
    """Feed AUDIO and then silence in 0.5 s chunks, as fast as they are taken, until the turn ends."""
    audio = np.concatenate([audio, np.zeros(2 * SAMPLE_RATE, np.float32)])
    for i in range(0, audio.size, CHUNK):
        conversation.hear(audio[i : i + CHUNK], SAMPLE_RATE)
        if conversation.turn_ended:
            return
    pytest.fail("the turn never ended")


def test_a_spoken_turn_through_the_server(remote_cascade, say):
    conversation = Conversation(remote_cascade)
    speak(conversation, say("What is the capital of France?"))
    reply = collect(conversation.reply())
    assert "france" in reply["transcript"].lower()
    assert "paris" in reply["text"].lower(), reply["text"]
    audio = np.concatenate(reply["audio"])
    assert audio.dtype == np.int16 and audio.size > 0.5 * remote_cascade.sample_rate
    assert conversation.history[-1]["content"] == reply["turn"].reply_text


def test_two_turn_memory(remote_cascade, say):
    conversation = Conversation(remote_cascade)
    speak(conversation, say("Hello, my name is Anna."))
    collect(conversation.reply())
    speak(conversation, say("What is my name?"))
    assert "anna" in collect(conversation.reply())["text"].lower()
    assert len(conversation.history) == 4


def test_closing_the_reply_stops_the_server_within_300_ms(llm_server, asr, tts, say):
    # Room for a story longer than the usual 160 tokens: the server, which writes ahead of the reader, is still
    # writing it when the first audio comes, however slow this machine is at the moment.
    llm = RemoteChatModel(llm_server.url, MODEL, options=LlmOptions(max_tokens=2000))
    chunks = Cascade(asr, llm, tts).respond(say("Tell me a long story about a dragon."), SAMPLE_RATE, [])
    for chunk in chunks:
        if isinstance(chunk, Audio):
            break
    closed_at = time.monotonic()
    chunks.close()
    time.sleep(1.0)  # a server that did not stop would go on writing its story meanwhile
    tokens = llm_server.token_times()
    assert any(closed_at - 0.5 < t <= closed_at for t in tokens), "the server was not writing when the reply closed"
    stop_ms = max(0.0, max(tokens) - closed_at) * 1000
    print(f"the server's last token came {stop_ms:.0f} ms after the reply was closed")
    assert stop_ms < 300


def test_listening_ahead_warms_the_server_prompt_cache(remote_cascade, say):
    """`prefill` while the user speaks puts the prompt in the server's cache: the reply's first token comes sooner."""
    llm = remote_cascade.llm
    history = [
        {"role": "user", "content": "Hello, my name is Anna and I live in Lisbon with my two cats."},
        {"role": "assistant", "content": "Nice to meet you, Anna! Lisbon is a lovely city for cats and people."},
        {"role": "user", "content": "I am planning a trip to Japan in the spring to see the cherry blossoms."},
        {"role": "assistant", "content": "That sounds wonderful. Kyoto and Tokyo are both beautiful in spring."},
    ]
    question = "Which city should I visit first, and how many days should I stay there?"

    def first_token_ms(prefill: bool) -> float:
        llm.prefill([], "Something else entirely.")  # the server's cache now holds another conversation
        if prefill:
            llm.prefill(history, question)  # done while the user was still speaking
        start = time.perf_counter()
        deltas = llm.stream(history, question)
        next(deltas)
        deltas.close()
        return (time.perf_counter() - start) * 1000

    cold = min(first_token_ms(prefill=False) for _ in range(2))
    warm = min(first_token_ms(prefill=True) for _ in range(2))
    print(f"first token: {cold:.0f} ms without listening ahead, {warm:.0f} ms with it")
    assert warm < cold / 2


def test_server_down_fails_the_turn_and_the_conversation_goes_on(remote_cascade, asr, tts, say):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    model = Cascade(asr, RemoteChatModel(url, MODEL), tts)
    conversation = Conversation(model)
    speak(conversation, say("What is the capital of France?"))
    with pytest.raises(RemoteModelError, match="cannot reach the language model server at " + url):
        collect(conversation.reply())
    assert conversation.history == []
    model.llm = remote_cascade.llm  # the server is back
    speak(conversation, say("What is the capital of France?"))
    assert "paris" in collect(conversation.reply())["text"].lower()


def test_a_wrong_model_name_is_named_with_the_ones_served(remote_cascade, llm_server, asr, tts, say):
    model = Cascade(asr, RemoteChatModel(llm_server.url, "qwen-7b-typo"), tts)
    conversation = Conversation(model)
    speak(conversation, say("What is the capital of France?"))
    with pytest.raises(RemoteModelError) as failed:
        collect(conversation.reply())
    assert llm_server.url in str(failed.value) and "'qwen-7b-typo'" in str(failed.value) and MODEL in str(failed.value)
    model.llm = remote_cascade.llm  # the name put right
    speak(conversation, say("What is the capital of France?"))
    assert "paris" in collect(conversation.reply())["text"].lower()


def test_a_server_that_hangs_mid_reply_times_out_and_the_next_turn_works(llm_server, asr, tts, say):
    llm = RemoteChatModel(llm_server.url, MODEL, remote=RemoteOptions(read_timeout_s=1.0))
    conversation = Conversation(Cascade(asr, llm, tts))
    speak(conversation, say("Tell me a long story about a dragon."))
    hung = False
    try:
        with pytest.raises(RemoteModelError, match="sent nothing for 1 s"):
            for chunk in conversation.reply():
                if isinstance(chunk, TextDelta) and not hung:
                    llm_server.process.send_signal(signal.SIGSTOP)  # the engine hangs mid-reply
                    hung = True
    finally:
        llm_server.process.send_signal(signal.SIGCONT)
    assert conversation.history == []
    speak(conversation, say("What is the capital of France?"))
    assert "paris" in collect(conversation.reply())["text"].lower()


def test_held_out_question_same_answer_as_the_local_model(llm_server, asr, tts):
    """At temperature 0 the server and the in-process model run the same GGUF through the same llama.cpp.

    Two more things must match for the same words (docs/deploy.md): llama-cpp-python's server defaults to
    repeat_penalty 1.1 where the library uses 1.0, so the request sets 1.0; and llama.cpp's sums depend on how the
    prompt is cut into batches, so a local model that evaluates it in other steps than the server's 128 tokens may
    take the other token at a near-tie."""
    greedy = LlmOptions(temperature=0.0)
    question = load_audio(HELD_OUT_QUESTION)
    remote_llm = RemoteChatModel(
        llm_server.url, MODEL, options=greedy, remote=RemoteOptions(extra_body={"repeat_penalty": 1.0})
    )
    remote = collect(Cascade(asr, remote_llm, tts).respond(question, SAMPLE_RATE, []))["turn"]
    local = collect(Cascade(asr, ChatModel(MODEL, greedy), tts).respond(question, SAMPLE_RATE, []))["turn"]
    print(f"{local.transcript!r} -> local {local.reply_text!r} / remote {remote.reply_text!r}")
    assert "book" in local.transcript.lower() and remote.transcript == local.transcript
    assert len(local.reply_text.split()) > 10
    assert remote.reply_text == local.reply_text


# --- the speech endpoints, against a server of our own ------------------------------------------------------


@pytest.fixture(scope="module")
def speech_server(asr, tts) -> Iterator[str]:
    """/v1/audio/transcriptions (faster-whisper, verbose_json like OpenAI's) and /v1/audio/speech (piper, raw
    16-bit PCM at the voice's rate, streamed sentence by sentence, as speaches serves piper voices)."""
    app = FastAPI()

    @app.post("/v1/audio/transcriptions")
    def transcriptions(
        file: UploadFile,
        model: str = Form(),
        language: str = Form("en"),
        prompt: str = Form(""),
        response_format: str = Form("json"),
    ):
        with wave.open(io.BytesIO(file.file.read())) as f:
            audio = np.frombuffer(f.readframes(f.getnframes()), np.int16).astype(np.float32) / 32768
        TRANSCRIPTION_PROMPTS.append(prompt)
        segments, _ = asr.model.transcribe(
            audio, language=language, beam_size=1, vad_filter=False, initial_prompt=prompt or None
        )
        segments = [
            {"text": s.text, "avg_logprob": s.avg_logprob, "no_speech_prob": s.no_speech_prob} for s in segments
        ]
        text = "".join(s["text"] for s in segments)
        return {"text": text, "segments": segments} if response_format == "verbose_json" else {"text": text}

    @app.post("/v1/audio/speech")
    def speech(body: dict):
        return StreamingResponse((pcm.tobytes() for pcm in tts.synthesize(body["input"])), media_type="audio/pcm")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


def test_everything_remote(llm_server, speech_server, say):
    remote_tts = RemoteSpeaker(speech_server, "piper", "joe", sample_rate=22_050)
    model = Cascade(RemoteTranscriber(speech_server), RemoteChatModel(llm_server.url), remote_tts)
    model.warm_up()
    assert model.llm.model == MODEL  # taken from the server's list
    conversation = Conversation(model)
    speak(conversation, say("What is the capital of France?"))
    reply = collect(conversation.reply())
    assert "france" in reply["transcript"].lower() and "paris" in reply["text"].lower()
    audio = np.concatenate(reply["audio"])
    assert audio.dtype == np.int16 and audio.size > 0.5 * 22_050
    heard = model.asr.transcribe(prepare(audio, 22_050)).lower()  # the spoken reply, heard back
    assert "paris" in heard, heard


def test_remote_transcriber_hears_silence_as_nothing_and_passes_the_prompt(speech_server, say):
    transcriber = RemoteTranscriber(speech_server)
    assert transcriber.transcribe(np.zeros(2 * SAMPLE_RATE, np.float32)) == ""
    assert "spider" in transcriber.transcribe(say("How many legs does a spider have?")).lower()
    # The words said before a pause go along as the API's `prompt` (Whisper's previous text).
    assert "name" in transcriber.transcribe(say("What is my name?"), "Hello, I am Anna").lower()
    assert TRANSCRIPTION_PROMPTS[-3:] == ["", "", "Hello, I am Anna"]


def test_remote_speaker_streams_pieces_of_the_configured_length(speech_server):
    speaker = RemoteSpeaker(speech_server, sample_rate=22_050, chunk_s=0.2)
    pieces = list(speaker.synthesize("Hello there. This is the second sentence, a little longer than the first."))
    assert all(p.dtype == np.int16 for p in pieces) and len(pieces) > 3
    assert {p.size for p in pieces[:-1]} == {round(22_050 * 0.2)}
    assert list(speaker.synthesize("**")) == []  # nothing speakable: no request


def test_speech_servers_down_are_named(say):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(RemoteModelError, match=f"cannot reach the speech to text server at {url}"):
        RemoteTranscriber(url).transcribe(say("What is my name?"))
    with pytest.raises(RemoteModelError, match=f"cannot reach the text to speech server at {url}"):
        list(RemoteSpeaker(url).synthesize("Hello."))
