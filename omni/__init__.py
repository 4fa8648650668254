"""omni: speech-in -> speech-out models behind one streaming interface (see omni.speech_model)."""

from __future__ import annotations

import logging
import os
import time

from omni.speech_model import Message, NoSpeechError, ReplyChunk, SpeechModel, Turn

__all__ = ["MODELS", "Message", "NoSpeechError", "ReplyChunk", "SpeechModel", "Turn", "load_speech_model"]

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

        model = mini_omni.load()
        log.info("loaded mini-omni in %.1f s", time.perf_counter() - start)
        return model
    raise ValueError(f"unknown speech model {name!r}; choose one of {', '.join(MODELS)}")
