"""The mini-omni backend on a tiny random checkpoint in the released format (CPU, a few seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from omni import Audio, Finished, TextDelta, Transcript
from omni.audio import load_audio
from omni.mini_omni import CheckpointMismatchError, GenerationSettings, MiniOmni, MissingCheckpointError, load
from omni.mini_omni.generate import generate, prompt_tokens
from omni.mini_omni.model import MiniOmniConfig, MiniOmniGPT, released_state_dict_shapes, sample
from omni.mini_omni.whisper import WhisperEncoder
from omni.speech_model import NoSpeechError, SpeechModel
from tests.mini_omni_tiny import RELEASED_MODEL_CONFIG, SNAC_CODES, build_tiny_checkpoint

SPEECH = Path(__file__).parent / "data" / "spk1_snt1.wav"
FRAME_SAMPLES = 2048  # one SNAC frame: 4 codes of 512 samples at 24 kHz

# lit_model.pth of gpt-omni/mini-omni: every tensor and its shape (Qwen2-0.5B in litgpt naming, 24 blocks,
# 14 query heads in 2 groups of 64 wide, SwiGLU 4864, one 181120-row table: 152000 text + 7 x 4160 audio ids,
# whisper-small features 768 wide into the adapter). The embedding and lm_head are tied but both are stored.
RELEASED_BLOCK = {
    "norm_1.weight": (896,),
    "attn.attn.weight": (1152, 896),
    "attn.attn.bias": (1152,),
    "attn.proj.weight": (896, 896),
    "norm_2.weight": (896,),
    "mlp.fc_1.weight": (4864, 896),
    "mlp.fc_2.weight": (4864, 896),
    "mlp.proj.weight": (896, 4864),
}
RELEASED_KEYS = {
    "whisper_adapter.fc_1.weight": (4864, 768),
    "whisper_adapter.fc_2.weight": (4864, 768),
    "whisper_adapter.proj.weight": (896, 4864),
    "lm_head.weight": (181120, 896),
    "transformer.wte.weight": (181120, 896),
    "transformer.ln_f.weight": (896,),
    **{f"transformer.h.{i}.{name}": shape for i in range(24) for name, shape in RELEASED_BLOCK.items()},
}
# Encoder half of OpenAI's whisper small.pt (n_mels 80, 1500 positions, 768 wide, 12 heads, 12 blocks).
WHISPER_SMALL_DIMS = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 768, "n_audio_head": 12, "n_audio_layer": 12}
WHISPER_SMALL_BLOCK = {
    "attn.query.weight": (768, 768),
    "attn.query.bias": (768,),
    "attn.key.weight": (768, 768),
    "attn.value.weight": (768, 768),
    "attn.value.bias": (768,),
    "attn.out.weight": (768, 768),
    "attn.out.bias": (768,),
    "attn_ln.weight": (768,),
    "attn_ln.bias": (768,),
    "mlp.0.weight": (3072, 768),
    "mlp.0.bias": (3072,),
    "mlp.2.weight": (768, 3072),
    "mlp.2.bias": (768,),
    "mlp_ln.weight": (768,),
    "mlp_ln.bias": (768,),
}
WHISPER_SMALL_ENCODER_KEYS = {
    "conv1.weight": (768, 80, 3),
    "conv1.bias": (768,),
    "conv2.weight": (768, 768, 3),
    "conv2.bias": (768,),
    "positional_embedding": (1500, 768),
    "ln_post.weight": (768,),
    "ln_post.bias": (768,),
    **{f"blocks.{i}.{name}": shape for i in range(12) for name, shape in WHISPER_SMALL_BLOCK.items()},
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("mini-omni"))


@pytest.fixture
def model(tiny_dir: Path) -> MiniOmni:
    # OMNI_TEST_DEVICE=cuda runs the same tests on a GPU (CI has none).
    model = load(tiny_dir, device=os.environ.get("OMNI_TEST_DEVICE", "cpu"))
    model.settings = GenerationSettings(max_new_tokens=24, max_transcript_tokens=4)
    return model


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SPEECH)


def test_released_key_list(tmp_path: Path) -> None:
    (tmp_path / "model_config.yaml").write_text(yaml.safe_dump(RELEASED_MODEL_CONFIG))
    config = MiniOmniConfig.from_yaml(tmp_path / "model_config.yaml")
    assert config == MiniOmniConfig()
    assert released_state_dict_shapes(config) == RELEASED_KEYS
    assert (config.eot, config.pad_t, config.input_t, config.answer_t, config.asr) == (151936, 151937, 151938, 151939, 151940)
    assert (config.eoa, config.pad_a, config.input_a, config.answer_a) == (4096, 4097, 4098, 4099)
    with torch.device("meta"):
        encoder = WhisperEncoder(WHISPER_SMALL_DIMS)
    assert {k: tuple(v.shape) for k, v in encoder.state_dict().items()} == WHISPER_SMALL_ENCODER_KEYS


def test_module_matches_key_list(tiny_dir: Path) -> None:
    config = MiniOmniConfig.from_yaml(tiny_dir / "model_config.yaml")
    gpt = MiniOmniGPT(config)
    assert {k: tuple(v.shape) for k, v in gpt.state_dict().items()} == released_state_dict_shapes(config)
    assert gpt.lm_head.weight is gpt.transformer.wte.weight


def test_streaming_reply(model: MiniOmni, speech: np.ndarray) -> None:
    assert isinstance(model, SpeechModel)
    assert (model.name, model.sample_rate) == ("mini-omni", 24000)
    chunks = list(model.respond(speech, 16000, [{"role": "user", "content": "ignored: single-turn"}]))

    transcript, finished, middle = chunks[0], chunks[-1], chunks[1:-1]
    assert isinstance(transcript, Transcript) and transcript.text  # the model's own ASR, 4 tokens at most here
    assert all(isinstance(c, TextDelta | Audio) for c in middle)
    assert isinstance(finished, Finished)
    turn = finished.turn
    assert turn.transcript == transcript.text
    deltas = [c.text for c in middle if isinstance(c, TextDelta)]
    assert deltas and "".join(deltas).strip() == turn.reply_text != ""

    # 24 steps with no end of audio: frames 0..16 are complete (stream 6 runs 7 steps late), played 4 at a time
    # as soon as one more frame exists after them, the rest at the end.
    audio = [c.pcm for c in middle if isinstance(c, Audio)]
    assert all(a.dtype == np.int16 and a.ndim == 1 for a in audio)
    assert [a.size for a in audio] == [4 * FRAME_SAMPLES] * 4 + [FRAME_SAMPLES]
    assert set(turn.timings) == {"encoder_ms", "asr_ms", "first_token_ms", "first_audio_ms", "total_ms"}
    assert turn.timings["encoder_ms"] <= turn.timings["asr_ms"] <= turn.timings["first_audio_ms"] <= turn.timings["total_ms"]


def test_end_tokens_and_stream_delays(model: MiniOmni, speech: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """Force when each stream ends and which codes the audio streams write; check what comes out."""
    c = model.gpt.config
    frames = 7  # audio frames before the end of audio
    text_steps, transcript_steps = 3, 2  # tokens before the end of text / of the transcript
    forward = model.gpt.forward
    calls: list[torch.Tensor] = []  # tokens fed at every call
    picked_text: list[int] = []
    picked_transcript: list[int] = []

    def scripted(tokens: torch.Tensor, cache, audio_features=None):
        text, audio = forward(tokens, cache, audio_features)
        if tokens.size(0) == 1:  # the prompt prefix all rows share: nothing is sampled after it
            return text, audio
        step = len(calls)
        calls.append(tokens.clone())
        if step == text_steps:
            text[1, c.eot] = 1e4
        picked_text.append(int(text[1].argmax()))
        if text.size(0) == 3:
            if step == transcript_steps:
                text[2, c.eot] = 1e4
            picked_transcript.append(int(text[2].argmax()))
        for stream in range(7):
            frame = step - stream - 1
            token = c.pad_a if frame < 0 else (frame * 7 + stream) % SNAC_CODES if frame < frames else c.eoa
            audio[0, stream, token] = 1e4
        return text, audio

    monkeypatch.setattr(model.gpt, "forward", scripted)
    decoded: list[list[torch.Tensor]] = []
    snac_decode = model.snac.decode
    monkeypatch.setattr(model.snac, "decode", lambda codes: decoded.append(codes) or snac_decode(codes))

    chunks = list(model.respond(speech, 16000, []))

    # Stops once every frame before the end of audio is complete: frame 6's last code comes at step 6 + 7.
    assert len(calls) == frames + 7
    assert [t.size(0) for t in calls] == [3] * 3 + [2] * 11  # the ASR row leaves once its text ended
    # The text row leads: its token is fed to both rows; the speech row gets its own audio, the text row padding.
    for step in range(1, text_steps + 1):
        assert calls[step][0, 7, 0] == calls[step][1, 7, 0] == picked_text[step - 1]
        assert calls[step][1, :7, 0].tolist() == [c.pad_a] * 7
    assert calls[text_steps + 1][0, 7, 0] == c.eot and calls[text_steps + 2][0, 7, 0] == c.pad_t

    tokenizer = model.tokenizer
    turn = chunks[-1].turn
    assert turn.transcript == tokenizer.decode(picked_transcript[:transcript_steps]).strip()
    assert turn.reply_text == tokenizer.decode(picked_text[:text_steps]).strip()

    audio = [ch.pcm for ch in chunks if isinstance(ch, Audio)]
    assert [a.size for a in audio] == [4 * FRAME_SAMPLES, 3 * FRAME_SAMPLES]
    # The first decode sees frames 0..4 (4 to play, 1 of lookahead). Stream j of frame f wrote (7f + j) % 64;
    # SNAC levels take streams [0], [1, 4], [2, 3, 5, 6] of each frame, in that order.
    first = decoded[0]
    expected = [[(7 * f + j) % SNAC_CODES for f in range(5) for j in streams] for streams in ([0], [1, 4], [2, 3, 5, 6])]
    assert [level[0].tolist() for level in first] == expected


def test_shared_prefix_prefill_matches_full_prompt(model: MiniOmni, speech: np.ndarray) -> None:
    gpt, settings = model.gpt, model.settings
    features = model.whisper.encode(speech)
    prompt = prompt_tokens(gpt.config, features.size(0), transcribe=True).to(model.device)
    with torch.inference_mode():
        text, audio = gpt(prompt, gpt.new_cache(3, prompt.size(-1)), features.expand(3, -1, -1))
    first = next(generate(gpt, features, settings))
    assert first.audio == audio[0].argmax(-1).tolist()
    assert [first.text, first.transcript] == text[1:].argmax(-1).tolist()


def test_closing_stops_generation(model: MiniOmni, speech: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    model.settings.max_new_tokens = 400
    forward = model.gpt.forward
    calls = []
    monkeypatch.setattr(model.gpt, "forward", lambda *args: calls.append(1) or forward(*args))
    reply = model.respond(speech, 16000, [])
    first_audio = next(chunk for chunk in reply if isinstance(chunk, Audio))
    assert first_audio.pcm.size == 4 * FRAME_SAMPLES
    made = len(calls)
    reply.close()
    assert len(calls) == made < 20
    with pytest.raises(StopIteration):
        next(reply)


def test_silence_is_no_speech(model: MiniOmni) -> None:
    with pytest.raises(NoSpeechError):
        next(model.respond(np.zeros(16000, dtype=np.float32), 16000, []))


def test_transcript_off(model: MiniOmni, speech: np.ndarray) -> None:
    model.settings.transcribe = False
    chunks = list(model.respond(speech, 16000, []))
    assert isinstance(chunks[0], Transcript) and chunks[0].text == ""
    assert isinstance(chunks[1], TextDelta | Audio)


def test_sampling() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]] * 200)
    assert sample(logits, temperature=0.9, top_k=1).tolist() == [1] * 200
    assert sample(logits, temperature=0.0, top_k=None).tolist() == [1] * 200
    assert set(sample(logits, temperature=1.0, top_k=2).tolist()) == {1, 3}


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(MissingCheckpointError) as caught:
        load(tmp_path / "absent")
    assert isinstance(caught.value, FileNotFoundError)
    message = str(caught.value)
    for name in ("lit_model.pth", "model_config.yaml", "tokenizer.json", "small.pt", "snac/pytorch_model.bin"):
        assert name in message
    assert f"huggingface-cli download gpt-omni/mini-omni --local-dir {tmp_path / 'absent'}" in message
    assert "huggingface-cli download hubertsiuzdak/snac_24khz config.json pytorch_model.bin" in message
    assert "openaipublic.azureedge.net/main/whisper/models/" in message


def test_partly_missing_checkpoint_names_only_what_is_missing(tiny_dir: Path, tmp_path: Path) -> None:
    partial = build_tiny_checkpoint(tmp_path / "partial")
    (partial / "small.pt").unlink()
    with pytest.raises(MissingCheckpointError) as caught:
        load(partial)
    assert caught.value.missing == ["small.pt"]
    assert "curl -L" in str(caught.value) and "gpt-omni/mini-omni" not in str(caught.value)


def test_default_checkpoint_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINI_OMNI_CHECKPOINT", str(tmp_path / "from-env"))
    with pytest.raises(MissingCheckpointError, match="from-env"):
        load()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("transformer.h.1.mlp.proj.weight"), "missing key 'transformer.h.1.mlp.proj.weight'"),
        (
            lambda sd: sd.update({"transformer.ln_f.weight": torch.ones(31)}),
            "key 'transformer.ln_f.weight' has shape (31,), expected (32,)",
        ),
        (lambda sd: sd.update({"transformer.post_adapter.0.norm_1.weight": torch.ones(32)}), "unexpected key"),
    ],
)
def test_mismatched_checkpoint_is_rejected(tmp_path: Path, edit, message: str) -> None:
    directory = build_tiny_checkpoint(tmp_path / "broken")
    state_dict = torch.load(directory / "lit_model.pth", weights_only=True)
    edit(state_dict)
    torch.save(state_dict, directory / "lit_model.pth")
    with pytest.raises(CheckpointMismatchError, match="lit_model.pth does not match") as caught:
        load(directory)
    assert message in str(caught.value)
