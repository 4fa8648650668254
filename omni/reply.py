"""python -m omni.reply FILE --out reply.wav : answer a recorded question out loud.

Prints one JSON object: transcript, reply_text, timings in ms (asr_ms, first_token_ms, first_audio_ms,
total_ms, ...), model load time and peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

from omni import Audio, Finished, NoSpeechError, Settings, add_model_arguments, load_speech_model
from omni.audio import SAMPLE_RATE, AudioError, load_audio
from omni.models import ModelError
from omni.wav import write_wav


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omni.reply", description=__doc__.splitlines()[0])
    parser.add_argument("file", help="the spoken question (any format FFmpeg reads)")
    parser.add_argument("--out", default="reply.wav", help="where to write the spoken reply (WAV)")
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    settings = Settings.from_env(os.environ).with_flags(args)

    try:
        audio = load_audio(args.file)
        if audio.size == 0:
            raise AudioError(f"{args.file} holds no audio")
        start = time.perf_counter()
        model = load_speech_model(settings)
        load_ms = (time.perf_counter() - start) * 1000
        pieces, result = [], None
        for chunk in model.respond(audio, SAMPLE_RATE, []):
            match chunk:
                case Audio(pcm):
                    pieces.append(pcm)
                case Finished(turn):
                    result = turn
    except (AudioError, ModelError, NoSpeechError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, (AudioError, NoSpeechError)) else 1
    assert result is not None
    write_wav(args.out, np.concatenate(pieces) if pieces else np.zeros(0, np.int16), model.sample_rate)
    report = {
        "transcript": result.transcript,
        "reply_text": result.reply_text,
        **{k: round(v, 1) for k, v in result.timings.items()},
        "load_ms": round(load_ms),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "out": args.out,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
