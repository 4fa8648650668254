"""int16 PCM as WAV bytes or files (stdlib only)."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np


def wav_bytes(pcm: np.ndarray, sample_rate: int) -> bytes:
    """A complete mono 16-bit WAV file in memory."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(np.asarray(pcm, dtype=np.int16).tobytes())
    return buffer.getvalue()


def write_wav(path: str | Path, pcm: np.ndarray, sample_rate: int) -> None:
    Path(path).write_bytes(wav_bytes(pcm, sample_rate))
