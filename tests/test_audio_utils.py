"""Audio normalisation, file decoding, the clause splitter and the mp3 stream."""

from __future__ import annotations

import io
import itertools

import av
import numpy as np
import pytest

from omni.audio import AudioError, load_audio, prepare, to_mono_float32
from omni.clauses import ClauseSplitter
from omni.mp3 import Mp3Stream, encode_stream
from omni.tts import speakable
from omni.wav import write_wav


def test_formats_become_mono_float32():
    stereo_int16 = np.array([[16384, 16384], [-16384, -16384]], dtype=np.int16)
    assert to_mono_float32(stereo_int16).tolist() == [0.5, -0.5]
    assert to_mono_float32(np.array([1 << 30], dtype=np.int32))[0] == pytest.approx(0.5)
    channels_first = np.ones((2, 100), dtype=np.float64) * 0.25
    assert to_mono_float32(channels_first).shape == (100,)
    assert to_mono_float32(np.array([np.nan, np.inf, -np.inf, 2.0])).tolist() == [0.0, 0.0, 0.0, 1.0]
    assert to_mono_float32(np.zeros(0, dtype=np.int16)).size == 0
    with pytest.raises(AudioError):
        to_mono_float32(np.zeros((2, 2, 2)))


def test_prepare_resamples_48k_stereo(recordings):
    audio, _ = recordings["spk1_snt1.wav"]
    import soxr

    stereo48 = (np.stack([soxr.resample(audio, 16000, 48000)] * 2, axis=1) * 32767).astype(np.int16)
    back = prepare(stereo48, 48000)
    assert abs(back.size - audio.size) <= 2
    assert np.corrcoef(back[: audio.size], audio[: back.size])[0, 1] > 0.99


def test_load_audio_reads_any_format(tmp_path, recordings):
    audio, _ = recordings["spk1_snt2.wav"]
    mp3 = tmp_path / "question.mp3"
    pcm = (audio * 32767).astype(np.int16)
    mp3.write_bytes(b"".join(encode_stream([pcm], 16000)))
    decoded = load_audio(mp3)
    assert abs(decoded.size - audio.size) < 0.1 * 16000  # mp3 adds encoder delay and padding
    with pytest.raises(AudioError, match="no such audio file"):
        load_audio(tmp_path / "missing.wav")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio at all" * 100)
    with pytest.raises(AudioError, match="cannot decode|no audio"):
        load_audio(garbage)


def test_mp3_stream_has_no_seams():
    """Encoding in uneven chunks gives the very same bytes as one piece, and decodes to a gap-free sine."""
    rate = 22050
    t = np.arange(rate * 2) / rate
    sine = (0.5 * np.sin(2 * np.pi * 220 * t) * 32767).astype(np.int16)
    whole = b"".join(encode_stream([sine], rate))
    cuts = [0, 100, 1337, 5000, 5001, 20000, len(sine)]
    chunked = b"".join(encode_stream([sine[a:b] for a, b in itertools.pairwise(cuts)], rate))
    assert chunked == whole

    with av.open(io.BytesIO(chunked)) as container:
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    decoded = decoded.astype(np.float32)
    assert decoded.size >= sine.size  # nothing lost (the encoder adds a little delay and padding)
    body = decoded[2000 : sine.size - 2000]
    # A 220 Hz sine at half scale never steps more than 2*pi*220/rate*0.5 per sample: a seam would.
    assert np.max(np.abs(np.diff(body))) < 0.05
    # A gap would show as a quiet stretch: every 10 ms window keeps the sine's level.
    windows = body[: body.size // 220 * 220].reshape(-1, 220)
    assert np.sqrt(np.mean(windows**2, axis=1)).min() > 0.3


def test_mp3_stream_rejects_float():
    with pytest.raises(TypeError):
        Mp3Stream(16000).encode(np.zeros(10, dtype=np.float32))


def test_first_clause_is_released_early_then_whole_sentences():
    splitter = ClauseSplitter(first_clause_words=3)
    pieces = []
    for token in ["Sure", "thing,", "Anna,", "the", "capital", "of", "France", "is", "Paris.", "It", "is", "lovely", "in", "spring,", "they", "say.", "Bye"]:
        pieces += splitter.push(token + " ")
    pieces += splitter.flush()
    assert pieces == ["Sure thing, Anna,", "the capital of France is Paris.", "It is lovely in spring, they say.", "Bye"]


def test_a_sentence_is_cut_as_soon_as_its_full_stop_comes():
    """llama.cpp's tokens bring their space in front: a sentence's end is known before the next token, unless the
    full stop may belong to a number or an abbreviation."""

    def pieces_after_each(tokens: list[str]) -> list[list[str]]:
        splitter = ClauseSplitter(first_clause_words=3)
        return [splitter.push(token) for token in tokens]

    assert pieces_after_each(["The", " capital", " of", " France", " is", " Paris", "."])[-1] == [
        "The capital of France is Paris."
    ]
    assert pieces_after_each(["How", " are", " you", "?"])[-1] == ["How are you?"]
    for tokens in (["It", " is", " 3", "."], ["Ask", " Dr", "."], ["Ask", " Mrs", "."], ["In", " the", " U", ".S", "."]):
        assert pieces_after_each(tokens)[-1] == [], tokens
    # ... and they are cut when the next token shows the sentence went on, or ended.
    splitter = ClauseSplitter(first_clause_words=3)
    for token in ["It", " is", " 3", ".", "5", " metres", " long", "."]:
        pieces = splitter.push(token)
    assert pieces == ["It is 3.5 metres long."]


def test_long_first_sentence_is_cut_before_a_phrase():
    splitter = ClauseSplitter(first_clause_words=3, first_phrase_words=5)
    pieces = []
    for token in ["The", "birch", "canoe", "slid", "smoothly", "on", "the", "smooth", "planks.", "It", "was", "made", "of", "wood", "and", "it", "was", "light."]:
        pieces += splitter.push(token + " ")
    pieces += splitter.flush()
    # Only the first sentence is cut; "and" in the second one is left alone.
    assert pieces == ["The birch canoe slid smoothly", "on the smooth planks.", "It was made of wood and it was light."]


def test_speakable_removes_markdown_and_emoji():
    assert speakable("**Paris** is the `capital` 🇫🇷 of France!") == "Paris is the capital of France!"


def test_write_wav_roundtrip(tmp_path):
    pcm = (np.sin(np.arange(1600)) * 1000).astype(np.int16)
    write_wav(tmp_path / "x.wav", pcm, 16000)
    assert np.allclose(load_audio(tmp_path / "x.wav") * 32768, pcm, atol=2)
