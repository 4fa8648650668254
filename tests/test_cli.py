"""The command-line tools, run as a user would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from omni.audio import load_audio
from omni.mp3 import encode_stream
from omni.wav import write_wav

DATA = Path(__file__).parent / "data"
ROOT = DATA.parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_transcribe_prints_one_line_per_file(tmp_path):
    mp3 = tmp_path / "snt2.mp3"
    pcm = (load_audio(DATA / "spk1_snt2.wav") * 32767).astype(np.int16)
    mp3.write_bytes(b"".join(encode_stream([pcm], 16000)))
    result = run("omni.transcribe", str(DATA / "spk1_snt1.wav"), str(mp3))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert "small dog" in lines[0].lower() and "figures" in lines[1].lower()


def test_transcribe_bad_file_fails_clearly(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("this is not audio")
    result = run("omni.transcribe", str(bad))
    assert result.returncode == 2
    assert "error:" in result.stderr and "Traceback" not in result.stderr and "Errno" not in result.stderr


def test_transcribe_says_when_it_heard_no_words(tmp_path):
    """Silence, noise, an empty recording or a folder: a message each, one (empty) line each, exit 2."""
    silence, noise, empty = tmp_path / "silence.wav", tmp_path / "noise.wav", tmp_path / "empty.wav"
    write_wav(silence, np.zeros(32000, np.int16), 16000)
    write_wav(noise, (np.random.default_rng(0).normal(0, 0.05, 32000) * 32767).astype(np.int16), 16000)
    write_wav(empty, np.zeros(0, np.int16), 16000)
    result = run("omni.transcribe", str(silence), str(noise), str(empty), str(tmp_path))
    assert result.returncode == 2
    assert result.stdout.count("\n") == 4 and not result.stdout.strip()
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 4 and all(e.startswith("error: ") for e in errors)
    assert sum("no words heard" in e for e in errors) == 3 and "is a folder" in errors[3]


def test_reply_speaks_and_reports_timings(tmp_path, say):
    question = tmp_path / "question.wav"
    write_wav(question, (say("What is the capital of France?") * 32767).astype(np.int16), 16000)
    out = tmp_path / "reply.wav"
    result = run("omni.reply", str(question), "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "france" in report["transcript"].lower() and "paris" in report["reply_text"].lower()
    for key in ("asr_ms", "first_token_ms", "first_audio_ms", "total_ms", "load_ms", "peak_rss_mb"):
        assert report[key] > 0
    assert report["first_audio_ms"] <= report["total_ms"]
    assert load_audio(out).size > 16000 // 2


def test_reply_to_silence_fails_clearly(tmp_path):
    silence = tmp_path / "silence.wav"
    write_wav(silence, np.zeros(32000, np.int16), 16000)
    result = run("omni.reply", str(silence), "--out", str(tmp_path / "r.wav"))
    assert result.returncode == 2
    assert "No words were heard" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r.wav").exists()


def test_reply_missing_file(tmp_path):
    result = run("omni.reply", str(tmp_path / "nope.wav"))
    assert result.returncode == 2 and "no such audio file" in result.stderr


def test_reply_with_mini_omni(tmp_path):
    """The same CLI drives mini-omni (a tiny random checkpoint in the released format: the words are noise)."""
    from tests.mini_omni_tiny import build_tiny_checkpoint

    checkpoint = build_tiny_checkpoint(tmp_path / "mini-omni")
    env = {**os.environ, "MINI_OMNI_CHECKPOINT": str(checkpoint)}
    out = tmp_path / "reply.wav"
    result = subprocess.run(
        [sys.executable, "-m", "omni.reply", str(DATA / "spk1_snt1.wav"), "--model", "mini-omni", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"transcript", "reply_text", "total_ms", "load_ms"} <= report.keys()
    assert out.exists()


def test_missing_mini_omni_checkpoint_says_how_to_get_it(tmp_path):
    env = {**os.environ, "MINI_OMNI_CHECKPOINT": str(tmp_path / "nothing-here")}
    result = subprocess.run(
        [sys.executable, "-m", "omni.reply", str(DATA / "spk1_snt1.wav"), "--model", "mini-omni"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 1
    assert "huggingface-cli download gpt-omni/mini-omni" in result.stderr and "Traceback" not in result.stderr
