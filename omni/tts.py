"""Text to speech with piper: one voice, streamed sentence by sentence."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from omni.models import ModelError, resolve

# Symbols that a language model writes for the eye, not the ear.
_UNSPOKEN = re.compile(r"[*_#`~|<>\[\]{}]+")
_SPACES = re.compile(r"\s+")


def speakable(text: str) -> str:
    """Text as it should be read aloud: no markdown marks, no emoji, single spaces."""
    text = _UNSPOKEN.sub(" ", text)
    text = "".join(ch for ch in text if ord(ch) < 0x2190 or ch in "\u2019\u201c\u201d")
    return _SPACES.sub(" ", text).strip()


class Speaker:
    """A piper voice. `synthesize` yields int16 PCM, one chunk per sentence."""

    def __init__(self, model_path: Path, config_path: Path | None = None):
        import onnxruntime
        from piper import PiperConfig, PiperVoice

        config_path = config_path or model_path.with_name(model_path.name + ".json")
        if not config_path.exists():
            raise ModelError(f"piper voice config {config_path} is missing (it must sit beside the .onnx file)")
        # Both cores: the cascade speaks and writes in turn, never at once. Threads that sleep when idle instead of
        # spinning: next to one busy process (a browser) spinning threads made a 31-character first clause take
        # 192 ms (one thread: 142), sleeping ones 117 ms; quiet, 84 ms either way (one thread: 145).
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = min(2, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.voice = PiperVoice(
            config=PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8"))),
            session=onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"]),
        )
        self.sample_rate: int = self.voice.config.sample_rate
        self.name = model_path.stem

    @classmethod
    def load(cls, key: str = "piper-joe") -> Speaker:
        return cls(resolve(key))

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        text = speakable(text)
        if not text:
            return
        for chunk in self.voice.synthesize(text):
            yield chunk.audio_int16_array
