"""PCM chunks -> an mp3 byte stream for a streaming `gr.Audio` output.

One LAME encoder lives for the whole reply, so chunk joins are invisible: no per-chunk encoder delay, padding
or fade is added (encoding each chunk as its own file would put a gap and a click at every join).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import lameenc
import numpy as np

BIT_RATE_KBPS = 64  # mono speech: transparent enough, small enough to stream on a phone


class Mp3Stream:
    """Feed int16 mono PCM with `encode`; finish with `flush`. Each call returns whole mp3 frames (maybe none)."""

    def __init__(self, sample_rate: int, bit_rate_kbps: int = BIT_RATE_KBPS):
        self.sample_rate = sample_rate
        self._encoder = lameenc.Encoder()
        self._encoder.set_in_sample_rate(sample_rate)
        self._encoder.set_channels(1)
        self._encoder.set_bit_rate(bit_rate_kbps)
        self._encoder.set_quality(5)  # 2 = best, 7 = fastest; 5 costs ~1 % of a core for speech
        self._encoder.silence()

    def encode(self, pcm: np.ndarray) -> bytes:
        if pcm.dtype != np.int16:
            raise TypeError(f"expected int16 PCM, got {pcm.dtype}")
        return bytes(self._encoder.encode(np.ascontiguousarray(pcm).tobytes()))

    def flush(self) -> bytes:
        return bytes(self._encoder.flush())


def encode_stream(chunks: Iterable[np.ndarray], sample_rate: int) -> Iterator[bytes]:
    """Yield mp3 bytes as PCM chunks arrive (skipping empty results), then the encoder's tail."""
    stream = Mp3Stream(sample_rate)
    for pcm in chunks:
        if data := stream.encode(pcm):
            yield data
    if tail := stream.flush():
        yield tail
