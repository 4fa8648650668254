"""python -m omni.transcribe FILE... : one transcript per line (any format FFmpeg reads)."""

from __future__ import annotations

import argparse
import os
import sys

from omni.audio import AudioError, load_audio
from omni.models import REGISTRY, ModelError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omni.transcribe", description=__doc__)
    parser.add_argument("files", nargs="+", help="audio files (wav, mp3, ogg, m4a, webm, ...)")
    asr_models = [key for key in REGISTRY if key.startswith("whisper")]
    parser.add_argument("--asr", default=os.environ.get("OMNI_ASR", "whisper-base"), choices=asr_models)
    args = parser.parse_args(argv)

    from omni.asr import Transcriber

    try:
        transcriber = Transcriber(args.asr)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    failed = 0
    for path in args.files:
        try:
            text = transcriber.transcribe(load_audio(path))
            if not text:
                raise AudioError(f"no words heard in {path} (silence, noise or an empty recording)")
            print(text, flush=True)
        except AudioError as e:
            print(f"error: {e}", file=sys.stderr)
            print(flush=True)  # keep one line per file
            failed += 1
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
