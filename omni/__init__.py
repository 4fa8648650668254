"""omni: speech-in -> speech-out models behind one streaming interface (see omni.speech_model)."""

from __future__ import annotations

import argparse
import logging
import time

from omni.settings import Settings
from omni.speech_model import (
    Audio,
    Finished,
    Heartbeat,
    Message,
    NoSpeechError,
    ReplyChunk,
    SpeechModel,
    TextDelta,
    Transcript,
    Turn,
    WordsEnd,
)

__all__ = [
    "MODELS",
    "Audio",
    "Finished",
    "Heartbeat",
    "Message",
    "NoSpeechError",
    "ReplyChunk",
    "Settings",
    "SpeechModel",
    "TextDelta",
    "Transcript",
    "Turn",
    "WordsEnd",
    "add_model_arguments",
    "load_speech_model",
]

MODELS = ("cascade", "mini-omni")
log = logging.getLogger("omni")


def load_speech_model(settings: Settings, warm_up: bool = True) -> SpeechModel:
    """Load the speech model that SETTINGS name (`settings.model`); heavy imports happen only here."""
    name = settings.model
    start = time.perf_counter()
    if name == "cascade":
        from omni.cascade import Cascade

        model = Cascade.load(settings)
        log.info("loaded %s in %.1f s", model.description, time.perf_counter() - start)
        if warm_up:
            model.warm_up()
            log.info("warmed up in %.1f s", time.perf_counter() - start)
        return model
    if name == "mini-omni":
        from omni import mini_omni
        from omni.models import ModelError

        try:
            model = mini_omni.load()
        except (mini_omni.MissingCheckpointError, mini_omni.CheckpointMismatchError) as e:
            raise ModelError(str(e)) from None  # one kind of "model unusable" error for the app and the CLIs
        log.info("loaded mini-omni in %.1f s", time.perf_counter() - start)
        return model
    raise ValueError(f"unknown speech model {name!r}; choose one of {', '.join(MODELS)}")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The --model/--asr/--llm/--llm-url/--llm-model flags shared by the app and the CLIs (`Settings.with_flags`);
    each one not given leaves its setting as the environment made it."""
    from omni.models import REGISTRY

    parser.add_argument("--model", choices=MODELS, help=f"the speech model (OMNI_MODEL; default {Settings.model})")
    asr, llm = [k for k in REGISTRY if k.startswith("whisper")], [k for k in REGISTRY if k.startswith("qwen")]
    parser.add_argument("--asr", choices=asr, help="the cascade's speech recognition model (OMNI_ASR)")
    parser.add_argument("--llm", choices=llm, help="the cascade's language model (OMNI_LLM)")
    parser.add_argument("--llm-url", help="an OpenAI-compatible server for the cascade's LLM (OMNI_LLM_URL)")
    parser.add_argument("--llm-model", help="the model to ask that server for (OMNI_LLM_MODEL)")
