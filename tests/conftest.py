"""Shared fixtures: the real models, loaded once, and real or synthesized speech."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from omni import Audio, Finished, Settings, TextDelta, Transcript
from omni.audio import load_audio

DATA = Path(__file__).parent / "data"


def references() -> dict[str, str]:
    with open(DATA / "references.tsv", newline="") as f:
        return {row["file"]: row["text"] for row in csv.DictReader(f, delimiter="\t")}


@pytest.fixture(scope="session")
def recordings() -> dict[str, tuple[np.ndarray, str]]:
    """The real recordings in tests/data: name -> (16 kHz float32 audio, what is said)."""
    return {name: (load_audio(DATA / name), text) for name, text in references().items()}


@pytest.fixture(scope="session")
def cascade():
    from omni.cascade import Cascade

    model = Cascade.load(Settings.from_env(os.environ))
    model.warm_up()
    return model


@pytest.fixture(scope="session")
def say() -> Callable[[str], np.ndarray]:
    """Text -> the spoken question from tests/data/questions (16 kHz float32).

    The questions were spoken once by piper (bench/make_prompts.py) and kept: piper's output varies from run to
    run, and a test should hear the same audio every time.
    """
    folder = DATA / "questions"
    with open(folder / "index.tsv", newline="") as f:
        files = {row["text"]: folder / row["file"] for row in csv.DictReader(f, delimiter="\t")}

    def speak(text: str) -> np.ndarray:
        return load_audio(files[text])

    return speak


def collect(chunks) -> dict:
    """Read a whole reply: transcript, text, audio, the turn, and the order chunks came in."""
    out = {"transcript": None, "text": "", "audio": [], "turn": None, "order": []}
    for chunk in chunks:
        match chunk:
            case Transcript(text):
                out["transcript"] = text
                out["order"].append("transcript")
            case TextDelta(text):
                out["text"] += text
                out["order"].append("text")
            case Audio(pcm):
                out["audio"].append(pcm)
                out["order"].append("audio")
            case Finished(turn):
                out["turn"] = turn
                out["order"].append("turn")
    return out


# Tests that load the real cascade (directly or through another fixture), or start it in a subprocess, are the
# slow tier; `pytest -m "not slow and not browser"` runs the rest in seconds.
SLOW_FIXTURES = {"cascade"}
SLOW_MODULES = {"tests.test_cli", "tests.test_mini_omni"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.module.__name__ in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
