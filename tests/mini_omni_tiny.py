"""Builds a tiny random mini-omni checkpoint in exactly the released file format, for tests.

Same file names and layout as checkpoints/mini-omni/, same keys and tensor ranks as the real files; only the sizes
shrink (2 layers, 32 wide, 256 text ids, 64 SNAC codes). Special token ids follow from the vocabulary sizes the
way they do in the release (each vocabulary ends with 64 specials), so the config remaps them consistently.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import yaml
from snac import SNAC
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from omni.mini_omni.model import AUDIO_STREAMS, SPECIAL_TOKENS, MiniOmniConfig, released_state_dict_shapes
from omni.mini_omni.whisper import WhisperEncoder

# model_config.yaml of gpt-omni/mini-omni as released (a litgpt Config dump; the model is Qwen2-0.5B sized).
RELEASED_MODEL_CONFIG = {
    "add_qkv_bias": True,
    "asr_adapter": "llamamlp",
    "attn_dropout": 0.0,
    "bias": False,
    "block_size": 2048,
    "force_align": False,
    "gelu_approximate": "none",
    "head_size": 64,
    "hf_config": {"name": "Qwen2-0.5B", "org": "Qwen"},
    "intermediate_size": 4864,
    "lm_head_bias": False,
    "mlp_class_name": "LLaMAMLP",
    "n_embd": 896,
    "n_expert": 0,
    "n_expert_per_token": 0,
    "n_head": 14,
    "n_layer": 24,
    "n_query_groups": 2,
    "name": "Qwen2-0.5B",
    "norm_class_name": "RMSNorm",
    "norm_eps": 1.0e-06,
    "padded_vocab_size": 181120,
    "padding_multiple": 512,
    "parallel_residual": False,
    "pos_type": "rope",
    "post_adapter": False,
    "post_adapter_layers": 6,
    "prompt_vocab_size": None,
    "rope_base": 1000000,
    "rope_condense_ratio": 1,
    "rotary_percentage": 1,
    "scale_embeddings": False,
    "shared_attention_norm": False,
    "tie_word_embeddings": True,
    "use_pretrain_phoneme_emb": False,
    "vocab_size": 50254,
    "text_vocab_size": 152000,
    "cat_audio_vocab_size": 29120,
    "audio_vocab_size": 4160,
    "whisper_adapter_dim": 768,
}

TEXT_IDS = 256  # a byte-level vocabulary: every id decodes to one byte
SNAC_CODES = 64
TINY_MODEL_CONFIG = RELEASED_MODEL_CONFIG | {
    "block_size": 512,
    "head_size": 8,
    "intermediate_size": 64,
    "n_embd": 32,
    "n_head": 4,
    "n_layer": 2,
    "n_query_groups": 2,
    "text_vocab_size": TEXT_IDS + SPECIAL_TOKENS,
    "audio_vocab_size": SNAC_CODES + SPECIAL_TOKENS,
    "cat_audio_vocab_size": AUDIO_STREAMS * (SNAC_CODES + SPECIAL_TOKENS),
    "padded_vocab_size": TEXT_IDS + SPECIAL_TOKENS + AUDIO_STREAMS * (SNAC_CODES + SPECIAL_TOKENS),
    "whisper_adapter_dim": 16,
}
# Whisper `small` has n_mels 80 and n_audio_ctx 1500 too (30 s windows); the widths shrink.
TINY_WHISPER_DIMS = {
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 16,
    "n_audio_head": 2,
    "n_audio_layer": 1,
    "n_vocab": 51865,
    "n_text_ctx": 448,
    "n_text_state": 16,
    "n_text_head": 2,
    "n_text_layer": 1,
}
# snac_24khz's config.json with narrow layers: same rates (512 samples per code, 24 kHz) and code levels.
TINY_SNAC_CONFIG = {
    "sampling_rate": 24000,
    "encoder_dim": 4,
    "encoder_rates": [2, 4, 8, 8],
    "decoder_dim": 32,
    "decoder_rates": [8, 8, 4, 2],
    "attn_window_size": None,
    "codebook_size": SNAC_CODES,
    "codebook_dim": 4,
    "vq_strides": [4, 2, 1],
    "noise": True,
    "depthwise": True,
}


def sinusoids(length: int, channels: int) -> torch.Tensor:
    """Whisper's encoder positional embedding."""
    inv_timescales = torch.exp(-math.log(10000) / (channels // 2 - 1) * torch.arange(channels // 2))
    scaled_time = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([scaled_time.sin(), scaled_time.cos()], dim=1)


def lit_model_state_dict(config: MiniOmniConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    state_dict = {}
    for key, shape in released_state_dict_shapes(config).items():
        if key.endswith(("norm_1.weight", "norm_2.weight")) or key == "transformer.ln_f.weight":
            state_dict[key] = torch.ones(shape)
        else:
            state_dict[key] = torch.randn(shape, generator=generator) * 0.5
    embedding = state_dict["transformer.wte.weight"]
    # Zero rows for special tokens: with tied weights their logits are exactly 0, so a random model never ends a
    # stream by chance (a trained one emits them only where a stream ends); tests force them where they want them.
    embedding[config.eot : config.text_vocab_size] = 0
    for stream in range(AUDIO_STREAMS):
        offset = config.text_vocab_size + stream * config.audio_vocab_size
        embedding[offset + config.eoa : offset + config.audio_vocab_size] = 0
    state_dict["lm_head.weight"] = embedding  # tied: one tensor saved under both names, like litgpt
    return state_dict


def whisper_checkpoint(generator: torch.Generator) -> dict:
    encoder = WhisperEncoder(TINY_WHISPER_DIMS)
    state_dict = {}
    for key, value in encoder.state_dict().items():
        state_dict[f"encoder.{key}"] = torch.randn(value.shape, generator=generator) * 0.2
    state_dict["encoder.positional_embedding"] = sinusoids(*encoder.positional_embedding.shape)
    n_text = TINY_WHISPER_DIMS["n_text_state"]  # the decoder half, which mini-omni does not use
    state_dict["decoder.token_embedding.weight"] = torch.randn(TINY_WHISPER_DIMS["n_vocab"], n_text) * 0.02
    state_dict["decoder.positional_embedding"] = torch.zeros(TINY_WHISPER_DIMS["n_text_ctx"], n_text)
    state_dict["decoder.ln.weight"] = torch.ones(n_text)
    state_dict["decoder.ln.bias"] = torch.zeros(n_text)
    # small.pt stores float16 tensors
    return {"dims": TINY_WHISPER_DIMS, "model_state_dict": {k: v.half() for k, v in state_dict.items()}}


def byte_level_tokenizer() -> Tokenizer:
    """A Qwen2-style byte-level BPE tokenizer without merges: ids 0..255 are the 256 bytes."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={char: i for i, char in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def build_tiny_checkpoint(directory: Path, seed: int = 0) -> Path:
    """Writes the tiny checkpoint into `directory` (created) and returns it."""
    directory = Path(directory)
    (directory / "snac").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # SNAC initialises its layers from the global generator

    (directory / "model_config.yaml").write_text(yaml.safe_dump(TINY_MODEL_CONFIG, sort_keys=False))
    config = MiniOmniConfig.from_yaml(directory / "model_config.yaml")
    torch.save(lit_model_state_dict(config, generator), directory / "lit_model.pth")

    byte_level_tokenizer().save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Qwen2Tokenizer"}))

    torch.save(whisper_checkpoint(generator), directory / "small.pt")

    (directory / "snac" / "config.json").write_text(json.dumps(TINY_SNAC_CONFIG))
    torch.save(SNAC(**TINY_SNAC_CONFIG).state_dict(), directory / "snac" / "pytorch_model.bin")
    return directory
