"""Whisper (faster-whisper, short windows) on the real recordings."""

from __future__ import annotations

import jiwer
import numpy as np
import pytest

from omni.audio import SAMPLE_RATE, prepare

NORMALIZE = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])


def wer(references: list[str], hypotheses: list[str]) -> float:
    return jiwer.wer([NORMALIZE(r) for r in references], [NORMALIZE(h) for h in hypotheses])


def test_word_error_rate_on_real_recordings(cascade, recordings):
    refs, hyps = [], []
    for audio, text in recordings.values():
        refs.append(text)
        hyps.append(cascade.asr.transcribe(audio))
    assert wer(refs, hyps) <= 0.05, list(zip(refs, hyps))


def test_short_window_matches_whisper_long_form(cascade, recordings):
    audio, _ = recordings["example1.wav"]
    assert NORMALIZE(cascade.asr._transcribe_window(audio, 10)) == NORMALIZE(cascade.asr._transcribe_long(audio))


def test_noisy_speech_is_still_understood(cascade, recordings):
    rng = np.random.default_rng(0)
    refs, hyps = [], []
    for audio, text in recordings.values():
        noise = rng.normal(0, 1, audio.size).astype(np.float32)
        noise *= np.sqrt(np.mean(audio**2) / np.mean(noise**2)) / 10 ** (10 / 20)  # 10 dB SNR
        refs.append(text)
        hyps.append(cascade.asr.transcribe(audio + noise))
    assert wer(refs, hyps) <= 0.25, list(zip(refs, hyps))


@pytest.mark.parametrize("level", [0.0, 0.01, 0.05])
def test_silence_and_noise_give_no_words(cascade, level):
    noise = np.random.default_rng(1).normal(0, level, 3 * SAMPLE_RATE).astype(np.float32)
    assert cascade.asr.transcribe(noise) == ""


def test_48k_stereo_int16_and_nan_samples(cascade, recordings):
    import soxr

    audio, text = recordings["spk1_snt3.wav"]
    stereo = (np.stack([soxr.resample(audio, SAMPLE_RATE, 48000)] * 2, axis=1) * 32767).astype(np.int16)
    assert wer([text], [cascade.asr.transcribe(prepare(stereo, 48000))]) <= 0.15
    broken = audio.copy()
    broken[:800] = np.nan  # a broken first chunk must not poison the turn
    assert wer([text], [cascade.asr.transcribe(prepare(broken, SAMPLE_RATE))]) <= 0.15


def test_forty_seconds_of_speech(cascade, recordings):
    """Longer than Whisper's 30 s window: the long-form path transcribes all of it."""
    pieces, texts = [], []
    while sum(p.size for p in pieces) < 40 * SAMPLE_RATE:
        for audio, text in recordings.values():
            pieces += [audio, np.zeros(SAMPLE_RATE // 2, np.float32)]
            texts.append(text)
    transcript = cascade.asr.transcribe(np.concatenate(pieces))
    assert wer([" ".join(texts)], [transcript]) <= 0.15


def test_speech_like_sounds_without_words_give_no_words(cascade, recordings):
    """Whisper hears "the" in reversed speech and "Ch-ch-ch..." in babble; neither may reach the chat model."""
    audio, _ = recordings["spk1_snt1.wav"]
    babble = sum(np.roll(audio, k * 3000) for k in range(6)).astype(np.float32) / 3
    assert cascade.asr.transcribe(audio[::-1].copy()) == ""
    assert cascade.asr.transcribe(babble) == ""
