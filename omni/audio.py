"""Audio in and out: any input (int16/int32/float, mono/stereo, any rate, any file format) -> mono float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soxr

SAMPLE_RATE = 16_000  # what the VAD and Whisper hear
FRAME = 512  # Silero VAD frame at SAMPLE_RATE (32 ms)


class AudioError(ValueError):
    """Audio that cannot be used, with a message meant for the user."""


def to_mono_float32(audio: np.ndarray) -> np.ndarray:
    """Mono float32 in [-1, 1] from int/float PCM shaped (n,), (n, channels) or (channels, n).

    NaN and inf samples become silence (a broken chunk must not poison a whole turn), and clipped or
    over-range float input is limited to [-1, 1].
    """
    audio = np.asarray(audio)
    if audio.size == 0:
        return np.zeros(0, dtype=np.float32)
    if audio.ndim > 2:
        raise AudioError(f"expected mono or stereo PCM, got an array of shape {audio.shape}")
    if np.issubdtype(audio.dtype, np.integer):
        audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max + 1)
    elif np.issubdtype(audio.dtype, np.floating):
        audio = audio.astype(np.float32, copy=False)
    else:
        raise AudioError(f"unsupported sample type {audio.dtype}")
    if audio.ndim == 2:
        # Channels are the short axis: browsers send (n, 2), some libraries (2, n).
        audio = audio.mean(axis=1 if audio.shape[0] >= audio.shape[1] else 0)
    audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(audio, -1.0, 1.0)


def resample(audio: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono float32 audio in one go (for whole clips; streams use `soxr.ResampleStream`)."""
    if sample_rate <= 0:
        raise AudioError(f"invalid sample rate {sample_rate}")
    if sample_rate == target_rate or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, sample_rate, target_rate).astype(np.float32, copy=False)


def prepare(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Any PCM array at any rate -> mono float32 at SAMPLE_RATE."""
    return resample(to_mono_float32(audio), sample_rate)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any file FFmpeg reads (through PyAV) into mono float32 at `sample_rate`."""
    import av  # imported here: only file input needs it

    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path} is a folder, not an audio file")
    if not path.is_file():
        raise AudioError(f"no such audio file: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioError(f"{path} has no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            frames = []
            for frame in container.decode(audio=0):
                frames.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(frame))
            frames.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(None))
    except av.error.FFmpegError as e:  # its str() starts with FFmpeg's error number: say what it means instead
        raise AudioError(f"cannot decode {path}: {e.strerror or 'not audio FFmpeg can read'}") from None
    audio = np.concatenate(frames) if frames else np.zeros(0, dtype=np.float32)
    return to_mono_float32(audio)


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float [-1, 1] -> int16 PCM."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
