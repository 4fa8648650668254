"""The Whisper audio encoder mini-omni listens through (OpenAI's `small.pt`; only its encoder half is used).

`small.pt` is a torch pickle {"dims": {...}, "model_state_dict": {...}} whose encoder keys are
`encoder.conv1.*`, `encoder.conv2.*`, `encoder.positional_embedding`, `encoder.blocks.N.{attn.{query,key,value,out},
attn_ln, mlp.0, mlp.2, mlp_ln}.*` and `encoder.ln_post.*`; the module below uses the same names without `encoder.`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from faster_whisper.feature_extractor import FeatureExtractor
from torch import Tensor, nn

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper always encodes 30 s windows (zero padded)
SAMPLES_PER_FEATURE = 320  # one encoder output per 20 ms


class EncoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn = nn.ModuleDict(
            {
                "query": nn.Linear(n_state, n_state),
                "key": nn.Linear(n_state, n_state, bias=False),
                "value": nn.Linear(n_state, n_state),
                "out": nn.Linear(n_state, n_state),
            }
        )
        self.attn_ln = nn.LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state)
        self.n_head = n_head

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        h = self.attn_ln(x)
        q, k, v = (self.attn[name](h).view(B, T, self.n_head, -1).transpose(1, 2) for name in ("query", "key", "value"))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, C)
        x = x + self.attn["out"](y)
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    def __init__(self, dims: dict[str, int]) -> None:
        super().__init__()
        n_state = dims["n_audio_state"]
        self.conv1 = nn.Conv1d(dims["n_mels"], n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.empty(dims["n_audio_ctx"], n_state))  # from small.pt
        self.blocks = nn.ModuleList(EncoderBlock(n_state, dims["n_audio_head"]) for _ in range(dims["n_audio_layer"]))
        self.ln_post = nn.LayerNorm(n_state)
        self.mel = FeatureExtractor(feature_size=dims["n_mels"], sampling_rate=SAMPLE_RATE)

    def forward(self, mel: Tensor) -> Tensor:
        """(B, n_mels, 3000) log-mel -> (B, 1500, n_state)."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positional_embedding
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)

    @torch.inference_mode()
    def encode(self, audio: np.ndarray) -> Tensor:
        """Mono float32 16 kHz speech (the first 30 s count) -> (n, n_state) features, one per 20 ms plus one.

        The count is the original's `int(duration_ms / 20) + 1`: the encoder output beyond the speech is dropped.
        """
        window = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
        window[: min(audio.size, WINDOW_SAMPLES)] = audio[:WINDOW_SAMPLES]
        mel = torch.from_numpy(self.mel(window, padding=0))  # (n_mels, 3000), as whisper.log_mel_spectrogram
        param = self.conv1.weight
        features = self(mel.to(param.device, param.dtype).unsqueeze(0))[0]
        return features[: audio.size // SAMPLES_PER_FEATURE + 1]
