"""omni: speech-in -> speech-out models behind one streaming interface (see omni.speech_model)."""

from __future__ import annotations

import argparse
import logging
import os
import time

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
    "SpeechModel",
    "TextDelta",
    "Transcript",
    "Turn",
    "WordsEnd",
    "add_model_arguments",
    "load_speech_model",
    "use_model_arguments",
]

MODELS = ("cascade", "mini-omni")
log = logging.getLogger("omni")


def load_speech_model(name: str | None = None, warm_up: bool = True) -> SpeechModel:
    """Load the speech model NAME (default: $OMNI_MODEL or "cascade"); heavy imports happen only here."""
    name = name or os.environ.get("OMNI_MODEL", "cascade")
    start = time.perf_counter()
    if name == "cascade":
        from omni.cascade import Cascade

        model = Cascade.load()
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
    """The --model/--asr/--llm flags shared by the app and the CLIs."""
    from omni.models import REGISTRY

    parser.add_argument("--model", choices=MODELS, default=os.environ.get("OMNI_MODEL", "cascade"))
    parser.add_argument("--asr", choices=[k for k in REGISTRY if k.startswith("whisper")], help="the cascade's ASR")
    parser.add_argument("--llm", choices=[k for k in REGISTRY if k.startswith("qwen")], help="the cascade's LLM")
    parser.add_argument("--llm-url", help="an OpenAI-compatible server for the cascade's LLM (OMNI_LLM_URL)")
    parser.add_argument("--llm-model", help="the model to ask that server for (OMNI_LLM_MODEL)")


def use_model_arguments(args: argparse.Namespace) -> None:
    """Hand --asr/--llm/--llm-url/--llm-model to the cascade, which reads them from the environment (as in a Space)."""
    for name, value in (
        ("OMNI_ASR", args.asr),
        ("OMNI_LLM", args.llm),
        ("OMNI_LLM_URL", args.llm_url),
        ("OMNI_LLM_MODEL", args.llm_model),
    ):
        if value:
            os.environ[name] = value
