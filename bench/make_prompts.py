"""Regenerate the spoken benchmark prompts with the project's own piper voice (run once; the WAVs are kept)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omni.audio import SAMPLE_RATE, resample, to_int16
from omni.tts import Speaker
from omni.wav import write_wav

PROMPTS = Path(__file__).parent / "prompts"
TEXTS = {
    "hello": "Hello there!",
    "capital": "What is the capital of France?",
    "spider": "How many legs does a spider have?",
    "book": "Can you recommend a good book for a long train journey?",
    "name_cat": "My name is Anna. What would be a nice name for a cat?",
    "japan": (
        "I am planning a trip to Japan in the spring, and I would love to see the cherry blossoms. "
        "Which city should I visit first, and how many days should I stay there?"
    ),
}


def main() -> None:
    speaker = Speaker.load()
    lines = ["file\ttext"]
    for name, text in TEXTS.items():
        pcm = np.concatenate(list(speaker.synthesize(text))).astype(np.float32) / 32768
        write_wav(PROMPTS / f"{name}.wav", to_int16(resample(pcm, speaker.sample_rate, SAMPLE_RATE)), SAMPLE_RATE)
        lines.append(f"{name}.wav\t{text}")
    (PROMPTS / "prompts.tsv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
