"""Mini-omni's language model in one file: a Qwen2-0.5B GPT that reads and writes 8 parallel token streams.

Facts of the released checkpoint (gpt-omni/mini-omni: `lit_model.pth` + `model_config.yaml`, litgpt 0.4 layout):

- One embedding table of `padded_vocab_size` rows: the text vocabulary (151936 Qwen2 ids + 64 specials =
  `text_vocab_size`) followed by 7 audio vocabularies, one per SNAC stream (4096 codes + 64 specials =
  `audio_vocab_size` each). Token t of audio stream i is row `text_vocab_size + i * audio_vocab_size + t`.
- Input: at every position the 7 audio streams and the text stream are embedded and averaged. Over the user's
  speech the audio streams' embeddings are replaced by Whisper encoder features passed through `whisper_adapter`.
- Output: one `lm_head` over the whole table (tied to the embedding); its text slice predicts the text stream,
  audio slice i predicts audio stream i.
- Blocks: pre-norm RMSNorm, grouped-query attention with litgpt's fused qkv (per query group: its queries, then
  one key, then one value), rotary embeddings over the first half/second half split, SwiGLU MLP.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

AUDIO_STREAMS = 7  # SNAC codes of one 24 kHz frame: 1 coarse + 2 middle + 4 fine, one per stream
SPECIAL_TOKENS = 64  # the text vocabulary and every audio vocabulary end with this many reserved ids

# Architecture choices of the release, as litgpt names them; other values describe a model this file does not build.
RELEASED_ARCHITECTURE = {
    "norm_class_name": "RMSNorm",
    "mlp_class_name": "LLaMAMLP",
    "parallel_residual": False,
    "shared_attention_norm": False,
    "asr_adapter": "llamamlp",
    "pos_type": "rope",
    "n_expert": 0,
    "rope_condense_ratio": 1,
}


@dataclass(frozen=True)
class MiniOmniConfig:
    """The fields of `model_config.yaml` this model uses; the defaults are the released 0.5B values."""

    n_layer: int = 24
    n_embd: int = 896
    n_head: int = 14
    n_query_groups: int = 2
    head_size: int = 64
    intermediate_size: int = 4864
    block_size: int = 2048
    padded_vocab_size: int = 181120
    text_vocab_size: int = 152000
    audio_vocab_size: int = 4160
    whisper_adapter_dim: int = 768
    norm_eps: float = 1e-6
    rope_base: int = 1_000_000
    rotary_percentage: float = 1.0
    bias: bool = False
    add_qkv_bias: bool = True
    lm_head_bias: bool = False
    tie_word_embeddings: bool = True
    scale_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.n_head % self.n_query_groups:
            raise ValueError(f"n_head {self.n_head} is not a multiple of n_query_groups {self.n_query_groups}")
        if self.padded_vocab_size != self.text_vocab_size + AUDIO_STREAMS * self.audio_vocab_size:
            raise ValueError(
                f"padded_vocab_size {self.padded_vocab_size} != text_vocab_size {self.text_vocab_size}"
                f" + {AUDIO_STREAMS} * audio_vocab_size {self.audio_vocab_size}"
            )

    @classmethod
    def from_yaml(cls, path: Path) -> MiniOmniConfig:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        for key, released in RELEASED_ARCHITECTURE.items():
            if raw.get(key) != released:
                raise ValueError(f"{path}: {key} is {raw.get(key)!r}; only the released {released!r} is supported")
        # litgpt fills these in when they are null
        if raw.get("head_size") is None and "n_embd" in raw and "n_head" in raw:
            raw["head_size"] = raw["n_embd"] // raw["n_head"]
        if raw.get("n_query_groups") is None:
            raw["n_query_groups"] = raw.get("n_head")
        if raw.get("add_qkv_bias") is None:
            raw["add_qkv_bias"] = raw.get("bias")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names if raw.get(name) is None]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}")
        return cls(**{name: raw[name] for name in names})

    @property
    def rope_n_elem(self) -> int:
        return int(self.rotary_percentage * self.head_size)

    # Special ids, each within its own vocabulary (text, or any one audio stream).
    @property
    def eot(self) -> int:  # end of text; also the number of ordinary text ids
        return self.text_vocab_size - SPECIAL_TOKENS

    @property
    def pad_t(self) -> int:
        return self.eot + 1

    @property
    def input_t(self) -> int:
        return self.eot + 2

    @property
    def answer_t(self) -> int:
        return self.eot + 3

    @property
    def asr(self) -> int:  # asks the text stream for a transcript of the speech instead of an answer
        return self.eot + 4

    @property
    def eoa(self) -> int:  # end of audio; also the number of SNAC codes
        return self.audio_vocab_size - SPECIAL_TOKENS

    @property
    def pad_a(self) -> int:
        return self.eoa + 1

    @property
    def input_a(self) -> int:
        return self.eoa + 2

    @property
    def answer_a(self) -> int:
        return self.eoa + 3


def released_state_dict_shapes(config: MiniOmniConfig) -> dict[str, tuple[int, ...]]:
    """Every key of `lit_model.pth` and its shape: the contract between the release and this file.

    Both `lm_head.weight` and `transformer.wte.weight` are stored even though they are tied (litgpt saves the
    module's state dict, which names a shared tensor twice).
    """
    c = config
    qkv = (c.n_head + 2 * c.n_query_groups) * c.head_size
    shapes: dict[str, tuple[int, ...]] = {
        "whisper_adapter.fc_1.weight": (c.intermediate_size, c.whisper_adapter_dim),
        "whisper_adapter.fc_2.weight": (c.intermediate_size, c.whisper_adapter_dim),
        "whisper_adapter.proj.weight": (c.n_embd, c.intermediate_size),
        "lm_head.weight": (c.padded_vocab_size, c.n_embd),
        "transformer.wte.weight": (c.padded_vocab_size, c.n_embd),
    }
    if c.bias:
        shapes.update(
            {
                "whisper_adapter.fc_1.bias": (c.intermediate_size,),
                "whisper_adapter.fc_2.bias": (c.intermediate_size,),
                "whisper_adapter.proj.bias": (c.n_embd,),
            }
        )
    if c.lm_head_bias:
        shapes["lm_head.bias"] = (c.padded_vocab_size,)
    for i in range(c.n_layer):
        block = {
            "norm_1.weight": (c.n_embd,),
            "attn.attn.weight": (qkv, c.n_embd),
            "attn.proj.weight": (c.n_embd, c.n_head * c.head_size),
            "norm_2.weight": (c.n_embd,),
            "mlp.fc_1.weight": (c.intermediate_size, c.n_embd),
            "mlp.fc_2.weight": (c.intermediate_size, c.n_embd),
            "mlp.proj.weight": (c.n_embd, c.intermediate_size),
        }
        if c.add_qkv_bias:
            block["attn.attn.bias"] = (qkv,)
        if c.bias:
            block |= {
                "attn.proj.bias": (c.n_embd,),
                "mlp.fc_1.bias": (c.intermediate_size,),
                "mlp.fc_2.bias": (c.intermediate_size,),
                "mlp.proj.bias": (c.n_embd,),
            }
        shapes |= {f"transformer.h.{i}.{name}": shape for name, shape in block.items()}
    shapes["transformer.ln_f.weight"] = (c.n_embd,)
    return shapes


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()  # in float32 like litgpt: the mean of squares overflows in half precision
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


class SwiGLU(nn.Module):
    """litgpt's LLaMAMLP (also the `whisper_adapter`, from Whisper's width instead of n_embd)."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, bias: bool) -> None:
        super().__init__()
        self.fc_1 = nn.Linear(n_in, n_hidden, bias=bias)
        self.fc_2 = nn.Linear(n_in, n_hidden, bias=bias)
        self.proj = nn.Linear(n_hidden, n_out, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.silu(self.fc_1(x)) * self.fc_2(x))


class KVCache:
    """Keys and values of every layer for `batch_size` sequences of at most `max_length` positions."""

    def __init__(
        self, config: MiniOmniConfig, batch_size: int, max_length: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        shape = (batch_size, config.n_query_groups, max_length, config.head_size)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0  # positions filled so far

    def store(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Writes the new positions and returns all keys and values up to them."""
        end = self.length + k.size(2)
        if end > self.keys[layer].size(2):
            raise ValueError(f"sequence of {end} positions exceeds the cache of {self.keys[layer].size(2)}")
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def repeat_rows(self, rows: int) -> None:
        """Turns a cache of one sequence into `rows` copies of it (sequences sharing a prefix)."""
        self.keys = [k.repeat(rows, 1, 1, 1) for k in self.keys]
        self.values = [v.repeat(rows, 1, 1, 1) for v in self.values]

    def keep_rows(self, rows: int) -> None:
        """Drops the sequences after the first `rows` (a finished task stops costing compute)."""
        self.keys = [k[:rows] for k in self.keys]
        self.values = [v[:rows] for v in self.values]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: MiniOmniConfig, layer: int) -> None:
        super().__init__()
        c = config
        self.attn = nn.Linear(c.n_embd, (c.n_head + 2 * c.n_query_groups) * c.head_size, bias=c.add_qkv_bias)
        self.proj = nn.Linear(c.n_head * c.head_size, c.n_embd, bias=c.bias)
        self.config = config
        self.layer = layer

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache) -> Tensor:
        c = self.config
        B, T, _ = x.shape
        q_per_kv = c.n_head // c.n_query_groups
        qkv = self.attn(x).view(B, T, c.n_query_groups, q_per_kv + 2, c.head_size)
        q = qkv[:, :, :, :q_per_kv].reshape(B, T, c.n_head, c.head_size).transpose(1, 2)
        k = qkv[:, :, :, q_per_kv].transpose(1, 2)  # (B, n_query_groups, T, head_size)
        v = qkv[:, :, :, q_per_kv + 1].transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        start = cache.length
        k, v = cache.store(self.layer, k, v)
        # Position start + t sees keys 0..start + t; a single new position sees everything.
        mask = None if T == 1 else torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=q_per_kv > 1)
        return self.proj(y.transpose(1, 2).reshape(B, T, c.n_head * c.head_size))


class Block(nn.Module):
    def __init__(self, config: MiniOmniConfig, layer: int) -> None:
        super().__init__()
        self.norm_1 = RMSNorm(config.n_embd, config.norm_eps)
        self.attn = CausalSelfAttention(config, layer)
        self.norm_2 = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = SwiGLU(config.n_embd, config.intermediate_size, config.n_embd, config.bias)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache) -> Tensor:
        x = x + self.attn(self.norm_1(x), cos, sin, cache)
        return x + self.mlp(self.norm_2(x))


def rope_cache(config: MiniOmniConfig, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    n = config.rope_n_elem
    theta = 1.0 / (config.rope_base ** (torch.arange(0, n, 2, device=device).float() / n))
    angles = torch.outer(torch.arange(config.block_size, device=device).float(), theta).repeat(1, 2)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    n = cos.size(-1)
    rotary, rest = x[..., :n], x[..., n:]
    half1, half2 = rotary[..., : n // 2], rotary[..., n // 2 :]
    rotated = rotary * cos + torch.cat((-half2, half1), dim=-1) * sin
    return torch.cat((rotated.to(x.dtype), rest), dim=-1)


class MiniOmniGPT(nn.Module):
    def __init__(self, config: MiniOmniConfig) -> None:
        super().__init__()
        self.config = config
        self.whisper_adapter = SwiGLU(config.whisper_adapter_dim, config.intermediate_size, config.n_embd, config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=config.lm_head_bias)
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.padded_vocab_size, config.n_embd),
                "h": nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                "ln_f": RMSNorm(config.n_embd, config.norm_eps),
            }
        )
        self.tie_weights()
        # Explicit CPU device: the model may be built on the meta device, rope tables are never loaded.
        cos, sin = rope_cache(config, device="cpu")
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        # Where each stream's ids start in the shared table: 7 audio streams, then text.
        offsets = [config.text_vocab_size + i * config.audio_vocab_size for i in range(AUDIO_STREAMS)] + [0]
        self.register_buffer("stream_offsets", torch.tensor(offsets, device="cpu"), persistent=False)

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def new_cache(self, batch_size: int, max_length: int) -> KVCache:
        return KVCache(self.config, batch_size, max_length, self.lm_head.weight.device, self.lm_head.weight.dtype)

    def forward(
        self, tokens: Tensor, cache: KVCache, audio_features: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Next-token logits after `tokens`, which continue the sequences held in `cache`.

        tokens: (B, 8, T) ids, each in its own stream's vocabulary: 7 audio streams, then text.
        audio_features: (B, N, whisper_adapter_dim) Whisper encoder output that replaces the audio streams at
            positions 1..N (position 0 holds the input marker), or None.
        Returns (text logits (B, text_vocab_size), audio logits (B, 7, audio_vocab_size)) of the last position.
        """
        c = self.config
        B, _, T = tokens.shape
        start = cache.length
        if start + T > c.block_size:
            raise ValueError(f"sequence of {start + T} positions exceeds block_size {c.block_size}")
        emb = self.transformer.wte(tokens + self.stream_offsets[:, None])  # (B, 8, T, n_embd)
        if audio_features is not None:
            n = audio_features.size(1)
            emb[:, :AUDIO_STREAMS, 1 : n + 1] = self.whisper_adapter(audio_features).unsqueeze(1)
        x = emb.mean(dim=1)
        if c.scale_embeddings:
            x = x * c.n_embd**0.5
        cos, sin = self.cos[start : start + T], self.sin[start : start + T]
        for block in self.transformer.h:
            x = block(x, cos, sin, cache)
        cache.length = start + T
        logits = self.lm_head(self.transformer.ln_f(x[:, -1]))  # only the last position is ever sampled
        text = logits[:, : c.text_vocab_size]
        audio = logits[:, c.text_vocab_size :].view(B, AUDIO_STREAMS, c.audio_vocab_size)
        return text, audio


def sample(logits: Tensor, temperature: float, top_k: int | None) -> Tensor:
    """(N, V) logits -> (N,) ids. Like the original: keep the top_k logits, divide by temperature, draw.

    top_k=1 or temperature=0 is greedy (the original's defaults, temperature 0.9 with top_k 1, are greedy).
    """
    if top_k == 1 or temperature <= 0:
        return logits.argmax(dim=-1)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, num_samples=1).squeeze(-1)
