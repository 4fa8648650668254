"""Settings: made from the environment (as a Space configures the app) and the flags, and nothing else."""

from __future__ import annotations

import argparse

from omni import Settings, add_model_arguments
from omni.remote import remote_chat_model, remote_speaker, remote_transcriber


def flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    return parser.parse_args(argv)


def test_a_bare_environment_gives_the_defaults():
    settings = Settings.from_env({})
    assert settings == Settings()
    assert (settings.model, settings.asr, settings.llm, settings.tts) == (
        "cascade", "whisper-base", "qwen2.5-1.5b", "piper-joe"
    )
    assert settings.duplex and settings.max_sessions == 2 and settings.retention_days == 7.0
    assert (settings.server_name, settings.server_port) == ("127.0.0.1", 7860)
    assert remote_chat_model(settings) is remote_transcriber(settings) is remote_speaker(settings) is None


def test_each_variable_counts():
    settings = Settings.from_env({
        "OMNI_MODEL": "mini-omni", "OMNI_ASR": "whisper-tiny.en", "OMNI_LLM": "qwen2.5-0.5b", "OMNI_TTS": "voice",
        "OMNI_DUPLEX": "0", "OMNI_MAX_SESSIONS": "5", "OMNI_RETENTION_DAYS": "0.5",
        "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "8000",
    })
    assert (settings.model, settings.asr, settings.llm, settings.tts) == (
        "mini-omni", "whisper-tiny.en", "qwen2.5-0.5b", "voice"
    )
    assert not settings.duplex and settings.max_sessions == 5 and settings.retention_days == 0.5
    assert (settings.server_name, settings.server_port) == ("0.0.0.0", 8000)


def test_remote_engines_come_from_their_variables():
    settings = Settings.from_env({
        "OMNI_LLM_URL": "http://llm:8000/v1/", "OMNI_LLM_MODEL": "qwen", "OMNI_LLM_API_KEY": "key",
        "OMNI_LLM_PREFILL": "0", "OMNI_LLM_EXTRA_BODY": '{"repeat_penalty": 1.0}',
        "OMNI_ASR_URL": "http://asr/v1", "OMNI_ASR_MODEL": "",  # empty: the default
        "OMNI_TTS_URL": "http://tts/v1", "OMNI_TTS_VOICE": "joe", "OMNI_TTS_SAMPLE_RATE": "22050",
    })
    llm = remote_chat_model(settings)
    assert llm is not None and (llm.server.url, llm.model) == ("http://llm:8000/v1", "qwen")
    assert llm.server.http.headers["Authorization"] == "Bearer key"
    assert not llm.server.remote.prefill and llm.server.remote.extra_body == {"repeat_penalty": 1.0}
    asr = remote_transcriber(settings)
    assert asr is not None and (asr.server.url, asr.model) == ("http://asr/v1", "whisper-1")
    tts = remote_speaker(settings)
    assert tts is not None and (tts.model, tts.voice, tts.sample_rate) == ("tts-1", "joe", 22050)


def test_a_flag_wins_over_its_variable_and_one_not_given_leaves_it():
    variables = {"OMNI_LLM": "qwen2.5-0.5b", "OMNI_ASR": "whisper-tiny.en", "OMNI_MODEL": "mini-omni"}
    environment = Settings.from_env(variables)
    settings = environment.with_flags(flags("--llm", "qwen2.5-1.5b", "--llm-url", "http://gpu:8000/v1"))
    assert (settings.llm, settings.llm_url) == ("qwen2.5-1.5b", "http://gpu:8000/v1")
    assert (settings.asr, settings.model, settings.llm_model) == ("whisper-tiny.en", "mini-omni", None)
    assert environment.with_flags(flags()) == environment


def test_a_parser_with_only_some_of_the_flags():
    parser = argparse.ArgumentParser()
    parser.add_argument("--asr")
    parser.add_argument("--other")
    settings = Settings().with_flags(parser.parse_args(["--asr", "whisper-tiny.en", "--other", "x"]))
    assert settings == Settings(asr="whisper-tiny.en")
