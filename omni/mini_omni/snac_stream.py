"""From the model's 7 delayed audio streams to 24 kHz PCM, streamed while generation goes on.

A SNAC 24 kHz frame (4 * 512 = 2048 samples, 85 ms) has 7 codes: 1 of the coarse level (12 Hz), 2 of the middle
level, 4 of the fine one. Mini-omni writes one code of every frame per stream, and stream j runs j + 1 steps late
(each stream is conditioned on the coarser codes of its frame), so frame f is read diagonally:
stream j at step f + j + 1. The first j + 1 outputs of stream j belong to no frame.
"""

from __future__ import annotations

import numpy as np
import torch
from snac import SNAC
from torch import Tensor

from omni.audio import to_int16

from .model import AUDIO_STREAMS

# Which SNAC level and which code of the frame at that level stream j carries (the original's flattening order).
STREAM_SLOTS = ((0, 0), (1, 0), (2, 0), (2, 1), (1, 1), (2, 2), (2, 3))
SNAC_VQ_STRIDES = [4, 2, 1]  # the three levels STREAM_SLOTS describes


class DelayedFrames:
    """Collects one token per stream and step; knows which frames are complete and where the audio ends."""

    def __init__(self, n_codes: int) -> None:
        self.n_codes = n_codes  # ids from n_codes up are special tokens (end of audio, padding, ...)
        self.steps: list[list[int]] = []
        self.end: int | None = None  # first frame holding a special token: the audio stops before it

    def add(self, tokens: list[int]) -> None:
        step = len(self.steps)
        self.steps.append(tokens)
        for stream, token in enumerate(tokens):
            frame = step - stream - 1
            if frame >= 0 and token >= self.n_codes and (self.end is None or frame < self.end):
                self.end = frame

    @property
    def ready(self) -> int:
        """How many frames from the start are complete audio."""
        complete = max(0, len(self.steps) - AUDIO_STREAMS)
        return complete if self.end is None else min(complete, self.end)

    @property
    def finished(self) -> bool:
        """The audio has ended and every frame before its end is complete."""
        return self.end is not None and self.ready == self.end

    def frames(self, start: int, stop: int) -> Tensor:
        """(stop - start, 7) codes of frames start..stop-1, in stream order."""
        rows = [[self.steps[f + j + 1][j] for j in range(AUDIO_STREAMS)] for f in range(start, stop)]
        return torch.tensor(rows, dtype=torch.long).view(-1, AUDIO_STREAMS)


def snac_codes(frames: Tensor) -> list[Tensor]:
    """(n, 7) frames -> SNAC's [(1, n), (1, 2n), (1, 4n)] codes, placing each stream at its level and slot."""
    levels = []
    for level in range(len(SNAC_VQ_STRIDES)):
        streams = sorted((slot, j) for j, (lvl, slot) in enumerate(STREAM_SLOTS) if lvl == level)
        levels.append(frames[:, [j for _, j in streams]].reshape(1, -1))
    return levels


class SnacStream:
    """Decodes complete frames `stride` at a time with a sliding window, so chunk borders do not click.

    Each decode also sees `context` frames already played and `lookahead` frames not yet played (the decoder's
    convolutions look both ways); only the new frames' samples are returned.
    """

    def __init__(self, snac: SNAC, stride: int = 4, context: int = 2, lookahead: int = 1) -> None:
        self.snac = snac
        self.stride, self.context, self.lookahead = stride, context, lookahead
        self.samples_per_frame = int(snac.hop_length) * snac.vq_strides[0]
        self.played = 0  # frames returned so far

    @torch.inference_mode()
    def pop(self, frames: DelayedFrames, final: bool = False) -> np.ndarray | None:
        """The next chunk of int16 PCM when `stride` new frames (all remaining ones if final) can be played."""
        ready = frames.ready
        if final:
            stop = ready
        elif ready - self.lookahead - self.played >= self.stride:
            stop = self.played + self.stride
        else:
            return None
        if stop <= self.played:
            return None
        start = max(0, self.played - self.context)
        device = next(self.snac.parameters()).device
        codes = [level.to(device) for level in snac_codes(frames.frames(start, min(ready, stop + self.lookahead)))]
        audio = self.snac.decode(codes)[0, 0]
        pcm = audio[(self.played - start) * self.samples_per_frame : (stop - start) * self.samples_per_frame]
        self.played = stop
        return to_int16(pcm.float().cpu().numpy())
