"""The settings of the app and the CLIs: one object, made in `main()` from the environment and the command line.

The environment is how a Hugging Face Space configures the app (the README and docs/deploy.md list the variables);
a flag given on the command line wins over its variable. Nothing writes the environment: the settings are handed
to what needs them (`load_speech_model`, `Cascade.load`, the remote models, the app's `VoiceChat`).

    settings = Settings.from_env(os.environ).with_flags(parser.parse_args())
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# The command-line flags that stand for settings (`omni.add_model_arguments`), by their settings' names.
FLAGS = ("model", "asr", "llm", "llm_url", "llm_model")


@dataclass(frozen=True)
class Settings:
    """Which models answer, where, and how the app serves people. The defaults are those of a bare environment."""

    # The speech model ("cascade" or "mini-omni") and the cascade's parts, by their keys in omni/models.py.
    model: str = "cascade"  # OMNI_MODEL, --model
    asr: str = "whisper-base"  # OMNI_ASR, --asr
    llm: str = "qwen2.5-1.5b"  # OMNI_LLM, --llm
    tts: str = "piper-joe"  # OMNI_TTS
    # The cascade's parts on OpenAI-compatible servers (omni/remote.py): a part with no URL runs here.
    llm_url: str | None = None  # OMNI_LLM_URL, --llm-url
    llm_model: str | None = None  # OMNI_LLM_MODEL, --llm-model (None: the first model the server lists)
    llm_api_key: str | None = None  # OMNI_LLM_API_KEY
    llm_prefill: bool = True  # OMNI_LLM_PREFILL=0: no 1-token requests while the user speaks (paid APIs)
    llm_extra_body: Mapping[str, Any] = field(default_factory=dict)  # OMNI_LLM_EXTRA_BODY (JSON), in every request
    asr_url: str | None = None  # OMNI_ASR_URL
    asr_model: str = "whisper-1"  # OMNI_ASR_MODEL
    asr_api_key: str | None = None  # OMNI_ASR_API_KEY
    tts_url: str | None = None  # OMNI_TTS_URL
    tts_model: str = "tts-1"  # OMNI_TTS_MODEL
    tts_voice: str = "alloy"  # OMNI_TTS_VOICE
    tts_sample_rate: int = 24_000  # OMNI_TTS_SAMPLE_RATE: the rate of the server's raw PCM
    tts_api_key: str | None = None  # OMNI_TTS_API_KEY
    # The app.
    duplex: bool = True  # OMNI_DUPLEX=0: half duplex by default (the page's "Let me interrupt" box unticked)
    # OMNI_MAX_SESSIONS: conversations served at once. On 2 cores two people talking get a first clause within
    # ~2.5 s (bench.load); a third would wait longer than a conversation can bear, so it is told to come back.
    max_sessions: int = 2
    retention_days: float = 7.0  # OMNI_RETENTION_DAYS: conversations and recordings kept after their last turn
    server_name: str = "127.0.0.1"  # GRADIO_SERVER_NAME
    server_port: int = 7860  # GRADIO_SERVER_PORT

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """The settings that ENVIRON's variables give (os.environ, in a `main()`); the defaults for those unset."""
        default = cls()

        def given(name: str) -> str | None:  # unset or empty: None
            return environ.get(name) or None

        return cls(
            model=environ.get("OMNI_MODEL", default.model),
            asr=environ.get("OMNI_ASR", default.asr),
            llm=environ.get("OMNI_LLM", default.llm),
            tts=environ.get("OMNI_TTS", default.tts),
            llm_url=given("OMNI_LLM_URL"),
            llm_model=given("OMNI_LLM_MODEL"),
            llm_api_key=given("OMNI_LLM_API_KEY"),
            llm_prefill=environ.get("OMNI_LLM_PREFILL", "1") != "0",
            llm_extra_body=json.loads(given("OMNI_LLM_EXTRA_BODY") or "{}"),
            asr_url=given("OMNI_ASR_URL"),
            asr_model=given("OMNI_ASR_MODEL") or default.asr_model,
            asr_api_key=given("OMNI_ASR_API_KEY"),
            tts_url=given("OMNI_TTS_URL"),
            tts_model=given("OMNI_TTS_MODEL") or default.tts_model,
            tts_voice=given("OMNI_TTS_VOICE") or default.tts_voice,
            tts_sample_rate=int(given("OMNI_TTS_SAMPLE_RATE") or default.tts_sample_rate),
            tts_api_key=given("OMNI_TTS_API_KEY"),
            duplex=environ.get("OMNI_DUPLEX", "1") != "0",
            max_sessions=int(environ.get("OMNI_MAX_SESSIONS", default.max_sessions)),
            retention_days=float(environ.get("OMNI_RETENTION_DAYS", default.retention_days)),
            server_name=environ.get("GRADIO_SERVER_NAME", default.server_name),
            server_port=int(environ.get("GRADIO_SERVER_PORT", default.server_port)),
        )

    def with_flags(self, args: argparse.Namespace) -> Settings:
        """These settings with the FLAGS given on the command line in their place (a parser may define only some)."""
        given = {name: getattr(args, name, None) for name in FLAGS}
        return replace(self, **{name: value for name, value in given.items() if value})
