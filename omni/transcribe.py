"""python -m omni.transcribe FILE... : one transcript per line (any format FFmpeg reads)."""

from __future__ import annotations

import argparse
import os
import sys

from omni.audio import AudioError, load_audio
from omni.models import REGISTRY, ModelError
from omni.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omni.transcribe", description=__doc__)
    parser.add_argument("files", nargs="+", help="audio files (wav, mp3, ogg, m4a, webm, ...)")
    asr_models = [key for key in REGISTRY if key.startswith("whisper")]
    help_asr = f"the speech recognition model (OMNI_ASR; default {Settings.asr})"
    parser.add_argument("--asr", choices=asr_models, help=help_asr)
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ).with_flags(args)

    from omni.asr import Transcriber

    try:
        transcriber = Transcriber(settings.asr)
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
