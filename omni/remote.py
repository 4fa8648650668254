"""The cascade's models on OpenAI-compatible servers (vLLM, llama.cpp's server, Ollama, speaches, OpenAI itself).

The app keeps what must stay close to the user (microphone, VAD, turn-taking, barge-in) and hands the heavy work
to an engine: `RemoteChatModel` streams replies from `/v1/chat/completions`, `RemoteTranscriber` posts a turn to
`/v1/audio/transcriptions`, `RemoteSpeaker` streams `/v1/audio/speech`. Each has the interface of its local
counterpart (omni.llm.ChatModel, omni.asr.Transcriber, omni.tts.Speaker), and `Cascade.load` picks them when
the settings give their URL (OMNI_LLM_URL, OMNI_ASR_URL, OMNI_TTS_URL: see the remote_* functions and
omni/settings.py).

Client: httpx (already installed with Gradio): its streams close their connection when a reply is dropped half
read, which is how a cancelled turn stops the server's work.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from omni.asr import AsrOptions
from omni.audio import SAMPLE_RATE
from omni.llm import LlmOptions, build_prompt
from omni.models import ModelError
from omni.settings import Settings
from omni.speech_model import Message
from omni.tts import speakable
from omni.wav import wav_bytes


class RemoteModelError(ModelError):
    """A remote engine failed or refused; the message names its URL and says what went wrong."""


@dataclass
class RemoteOptions:
    connect_timeout_s: float = 5.0  # a server that takes longer to accept a connection is down
    # The longest wait for the next bytes of an answer, its first token included: a busy server queues requests
    # (llama-cpp-python's answers one at a time), but past 20 s nobody is still listening.
    read_timeout_s: float = 20.0
    # Listening ahead sends the prompt so far with max_tokens=1, so that the server's prompt cache holds it when
    # the turn ends (llama.cpp's server keeps a slot's prompt; vLLM has automatic prefix caching). Off for paid
    # APIs, where each draft is a billed request.
    prefill: bool = True
    # Engine-specific fields added to every chat request, e.g. {"repeat_penalty": 1.0} for llama-cpp-python's
    # server (its default of 1.1 is not the library's 1.0), {"cache_prompt": true} for an old llama.cpp server.
    extra_body: dict[str, Any] = field(default_factory=dict)


class _Server:
    """One OpenAI-compatible server: an httpx client with its timeouts, and errors that name the URL."""

    def __init__(self, what: str, url: str, api_key: str | None, options: RemoteOptions | None):
        self.what = what  # "language model", "speech to text", "text to speech"
        self.url = url.rstrip("/")
        self.remote = options or RemoteOptions()
        self.http = httpx.Client(
            base_url=self.url + "/",
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=httpx.Timeout(self.remote.read_timeout_s, connect=self.remote.connect_timeout_s),
        )

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Network failures inside the block become one RemoteModelError saying what happened, and where."""
        where = f"the {self.what} server at {self.url}"
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise RemoteModelError(f"cannot reach {where} ({e or type(e).__name__}): is it running?") from e
        except httpx.ReadTimeout as e:
            raise RemoteModelError(f"{where} sent nothing for {self.remote.read_timeout_s:g} s and was given up") from e
        except httpx.RemoteProtocolError as e:
            raise RemoteModelError(f"{where} closed the connection mid-answer ({e})") from e
        except httpx.HTTPError as e:
            raise RemoteModelError(f"{where} failed: {type(e).__name__}: {e}") from e

    def check(self, response: httpx.Response) -> None:
        """Raise a RemoteModelError with the server's own words for an error status."""
        if response.status_code < 400:
            return
        response.read()
        try:
            error = response.json()
            error = error.get("error", error.get("detail", error)) if isinstance(error, dict) else error
            message = error.get("message", error) if isinstance(error, dict) else error
        except ValueError:
            message = response.text
        message = str(message)[:300] or response.reason_phrase
        if response.status_code in (401, 403):
            message = f"the API key was refused ({message})"
        raise RemoteModelError(f"the {self.what} server at {self.url} answered {response.status_code}: {message}")

    def served_models(self) -> list[str] | None:
        """The model names the server lists at /models, or None where it has no such list."""
        with self.errors():
            response = self.http.get("models")
        if response.status_code == 404:
            return None
        self.check(response)
        return [m["id"] for m in response.json().get("data", [])]


class RemoteChatModel:
    """A chat model behind an OpenAI-compatible `/chat/completions`, with the interface of omni.llm.ChatModel.

    MODEL None takes the first model the server lists (a llama.cpp server serves one). The messages are those of
    the local model (`build_prompt`: same system prompt, same history trimming).
    """

    remote = True  # its work runs elsewhere: the cascade does not queue it for these cores

    def __init__(
        self,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        options: LlmOptions | None = None,
        remote: RemoteOptions | None = None,
    ):
        self.options = options or LlmOptions()
        self.server = _Server("language model", url, api_key, remote)
        self.model = model
        self._model_checked = False
        self.name = f"{model or 'model'} at {self.server.url}"

    def _check_model(self) -> None:
        """Make sure the server serves MODEL, once: some (llama-cpp-python's) answer any name with their own model."""
        if self._model_checked:
            return
        served = self.server.served_models()
        if served:
            if self.model is None:
                self.model = served[0]
                self.name = f"{self.model} at {self.server.url}"
            elif self.model not in served:
                raise RemoteModelError(
                    f"the language model server at {self.server.url} has no model {self.model!r}; "
                    f"it serves: {', '.join(served) or 'nothing'} (set OMNI_LLM_MODEL)"
                )
        self._model_checked = True

    def _request(self, history: Sequence[Message], user_text: str, **fields: Any) -> dict[str, Any]:
        self._check_model()
        return {
            "model": self.model,
            "messages": build_prompt(self.options, history, user_text),
            "max_tokens": self.options.max_tokens,
            "temperature": self.options.temperature,
            "top_p": self.options.top_p,
            **self.server.remote.extra_body,
            **fields,
        }

    def stream(self, history: Sequence[Message], user_text: str, slot: object = None) -> Iterator[str]:
        """Text deltas of the reply as the server streams them. Closing the generator closes the connection, which
        stops the server's generation (llama-cpp-python's server: within one token).

        SLOT (a local model's per-conversation cache) means nothing here: the servers find each conversation's
        cached prefix themselves."""
        body = self._request(history, user_text, stream=True)
        with self.server.errors(), self.server.http.stream("POST", "chat/completions", json=body) as response:
            self.server.check(response)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # SSE comments (keep-alive pings) and blank lines
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    raise RemoteModelError(f"the language model server at {self.server.url}: {chunk['error']}")
                for choice in chunk.get("choices", []):
                    if delta := (choice.get("delta") or {}).get("content"):
                        yield delta

    def prefill(self, history: Sequence[Message], user_text: str, slot: object = None) -> int:
        """Have the server evaluate the prompt that answers USER_TEXT into its prompt cache (a 1-token request).

        Returns the prompt tokens it evaluated anew where the server says (llama.cpp's `timings.prompt_n`, or
        OpenAI-style `cached_tokens`); 0 where it cannot tell."""
        if not user_text or not self.server.remote.prefill:
            return 0
        body = self._request(history, user_text, max_tokens=1, stream=False)
        with self.server.errors():
            response = self.server.http.post("chat/completions", json=body)
        self.server.check(response)
        answer = response.json()
        if "prompt_n" in answer.get("timings", {}):
            return int(answer["timings"]["prompt_n"])
        usage = answer.get("usage") or {}
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        return int(usage.get("prompt_tokens", 0)) - int(cached) if cached is not None else 0

    def prefill_steps(self, history: Sequence[Message], user_text: str, slot: object = None) -> Iterator[int]:
        """`prefill` as the one step it is here: the server does the work, there is nothing to interleave."""
        yield self.prefill(history, user_text, slot)

    def forget(self, slot: object) -> None:
        """Nothing to free: the server evicts the prompts it cached by itself."""

    def warm_up(self) -> None:
        """Check the server and the model name now (not at the first turn) and get the system prompt cached."""
        for _ in self.stream([], "Hello"):
            break


class RemoteTranscriber:
    """Speech to text through `/audio/transcriptions`, with the interface of omni.asr.Transcriber.

    It asks for `verbose_json` and drops the segments Whisper invents on silence and noise, by the local
    transcriber's own rules (AsrOptions), so that silence gives "" here too."""

    def __init__(
        self,
        url: str,
        model: str = "whisper-1",
        api_key: str | None = None,
        options: AsrOptions | None = None,
        remote: RemoteOptions | None = None,
    ):
        self.options = options or AsrOptions()
        self.server = _Server("speech to text", url, api_key, remote)
        self.model = model
        self.name = f"{model} at {self.server.url}"

    def transcribe(self, audio: np.ndarray, prompt: str = "") -> str:
        """Mono float32 at 16 kHz -> plain text. PROMPT: the words said just before (the API's `prompt`)."""
        if audio.size < SAMPLE_RATE // 10:  # under 100 ms: nothing a person could have said (as the local one)
            return ""
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
        fields = {"model": self.model, "response_format": "verbose_json"}
        if self.options.language:
            fields["language"] = self.options.language
        if prompt:
            fields["prompt"] = prompt
        with self.server.errors():
            response = self.server.http.post(
                "audio/transcriptions",
                data=fields,
                files={"file": ("turn.wav", wav_bytes(pcm, SAMPLE_RATE), "audio/wav")},
            )
        self.server.check(response)
        answer = response.json()
        segments = answer.get("segments")
        if segments is None:
            return str(answer.get("text", "")).strip()
        words = (
            s["text"].strip()
            for s in segments
            if not self.options.is_hallucination(s["text"], s.get("no_speech_prob", 0.0), s.get("avg_logprob", 0.0))
        )
        return " ".join(w for w in words if w)


class RemoteSpeaker:
    """Text to speech through `/audio/speech` as raw PCM, with the interface of omni.tts.Speaker.

    OpenAI's `pcm` is 16-bit mono at 24 kHz; other servers may use the voice's own rate (speaches' piper voices:
    22.05 kHz): set SAMPLE_RATE to what the server sends."""

    def __init__(
        self,
        url: str,
        model: str = "tts-1",
        voice: str = "alloy",
        sample_rate: int = 24_000,
        api_key: str | None = None,
        remote: RemoteOptions | None = None,
        chunk_s: float = 0.2,  # audio handed on per piece: the first one is ready as soon as this much arrived
    ):
        self.server = _Server("text to speech", url, api_key, remote)
        self.model, self.voice, self.sample_rate = model, voice, sample_rate
        self.chunk_bytes = 2 * round(sample_rate * chunk_s)
        self.name = f"{model}/{voice} at {self.server.url}"

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """int16 PCM pieces as the server streams them; closing the generator closes the connection."""
        text = speakable(text)
        if not text:
            return
        body = {"model": self.model, "voice": self.voice, "input": text, "response_format": "pcm"}
        with self.server.errors(), self.server.http.stream("POST", "audio/speech", json=body) as response:
            self.server.check(response)
            for piece in response.iter_bytes(self.chunk_bytes):  # whole samples: chunk_bytes is even
                if usable := piece[: len(piece) // 2 * 2]:
                    yield np.frombuffer(usable, dtype="<i2").astype(np.int16)


def remote_chat_model(settings: Settings, options: LlmOptions | None = None) -> RemoteChatModel | None:
    """The language model at `settings.llm_url` (its model, API key, prefill and extra body), or None."""
    if settings.llm_url is None:
        return None
    remote = RemoteOptions(prefill=settings.llm_prefill, extra_body=dict(settings.llm_extra_body))
    return RemoteChatModel(settings.llm_url, settings.llm_model, settings.llm_api_key, options, remote)


def remote_transcriber(settings: Settings, options: AsrOptions | None = None) -> RemoteTranscriber | None:
    """Speech to text at `settings.asr_url`, or None."""
    if settings.asr_url is None:
        return None
    return RemoteTranscriber(settings.asr_url, settings.asr_model, settings.asr_api_key, options)


def remote_speaker(settings: Settings) -> RemoteSpeaker | None:
    """Text to speech at `settings.tts_url`, or None."""
    if settings.tts_url is None:
        return None
    return RemoteSpeaker(
        settings.tts_url, settings.tts_model, settings.tts_voice, settings.tts_sample_rate, settings.tts_api_key
    )
