"""The cascade speech model end to end: real Whisper, real Qwen2.5 (llama.cpp), real piper."""

from __future__ import annotations

import time

import numpy as np
import pytest

from omni import Audio, TextDelta
from omni.audio import SAMPLE_RATE, prepare
from omni.llm import ChatSlot
from omni.speech_model import NoSpeechError, SpeechModel
from tests.conftest import collect


def test_is_a_speech_model(cascade):
    assert isinstance(cascade, SpeechModel)
    assert cascade.sample_rate == 22050


def test_spoken_reply_to_a_spoken_question(cascade, say):
    reply = collect(cascade.respond(say("How many legs does a spider have?"), SAMPLE_RATE, []))
    assert "spider" in reply["transcript"].lower()
    assert reply["order"][0] == "transcript" and reply["order"][-1] == "turn"
    audio = np.concatenate(reply["audio"])
    assert audio.dtype == np.int16 and audio.size > 0.5 * cascade.sample_rate
    # What it said out loud is about the question.
    heard = cascade.asr.transcribe(prepare(audio, cascade.sample_rate)).lower()
    assert "eight" in heard or "8" in heard, heard
    turn = reply["turn"]
    assert turn.reply_text == reply["text"].strip()
    for key in ("asr_ms", "first_token_ms", "first_audio_ms", "total_ms"):
        assert turn.timings[key] > 0


def test_first_audio_comes_before_the_language_model_finishes(cascade, say):
    reply = collect(cascade.respond(say("Tell me three interesting facts about the moon."), SAMPLE_RATE, []))
    order = reply["order"]
    last_text = len(order) - 1 - order[::-1].index("text")
    assert order.index("audio") < last_text, order


def test_history_shapes_the_reply(cascade, say):
    history = []
    first = collect(cascade.respond(say("Hello, my name is Anna."), SAMPLE_RATE, history))
    history += first["turn"].messages()
    second = collect(cascade.respond(say("What is my name?"), SAMPLE_RATE, history))
    assert "anna" in second["text"].lower(), second["text"]
    alone = collect(cascade.respond(say("What is my name?"), SAMPLE_RATE, []))
    assert "anna" not in alone["text"].lower()


@pytest.mark.parametrize(
    "audio",
    [np.zeros(0, np.float32), np.zeros(2 * SAMPLE_RATE, np.float32), np.full(SAMPLE_RATE, np.nan, np.float32)],
    ids=["empty", "silence", "nan"],
)
def test_nothing_to_answer(cascade, audio):
    with pytest.raises(NoSpeechError):
        collect(cascade.respond(audio, SAMPLE_RATE, []))


def test_48k_stereo_int16_question(cascade, say):
    import soxr

    question = soxr.resample(say("What is the capital of France?"), SAMPLE_RATE, 48000)
    stereo = (np.stack([question, question], axis=1) * 32767).astype(np.int16)
    reply = collect(cascade.respond(stereo, 48000, []))
    assert "france" in reply["transcript"].lower()
    assert "paris" in reply["text"].lower()


def test_closing_the_reply_stops_generation(cascade, say):
    chunks = cascade.respond(say("Tell me a long story about a dragon."), SAMPLE_RATE, [])
    for chunk in chunks:
        if isinstance(chunk, Audio):
            break
    start = time.perf_counter()
    chunks.close()
    closed_in = time.perf_counter() - start
    assert closed_in < 0.3
    # The shared model is free again at once: another turn can use it.
    assert not cascade.queue.busy


def test_listening_ahead_prepares_the_answer(cascade, say):
    """`listen` on the words so far transcribes them and evaluates the prompt; `respond` then starts from there."""
    question = say("How many legs does a spider have?")
    speech = np.flatnonzero(np.abs(question) > 0.02)
    half = question[: (speech[0] + speech[-1]) // 2]
    cascade.listen(half, SAMPLE_RATE, [])
    (draft,) = cascade._own.phrases
    assert draft.transcript and not draft.covers(question)

    cascade.listen(question, SAMPLE_RATE, [])
    transcript = cascade._own.phrases[-1].transcript
    assert "spider" in transcript.lower()
    assert cascade.llm.prefill([], transcript, cascade._own.slot) == 0  # the whole prompt is already in the KV cache
    # The turn as the conversation cuts it (at the end of the speech) is covered by the draft: no second ASR.
    reply = collect(cascade.respond(question[: speech[-1] + SAMPLE_RATE // 10], SAMPLE_RATE, []))
    assert reply["transcript"] == transcript
    assert "eight" in reply["text"].lower() or "8" in reply["text"]


@pytest.mark.parametrize("draft_heard", ["the same words", "the same words, not read yet", "other words"])
def test_the_answer_to_a_draft_is_written_while_whisper_hears_the_end(cascade, say, monkeypatch, draft_heard):
    """At a pause, listening ahead has often heard all but the tail of the last word and a little silence: the
    answer to its draft is written while Whisper hears the whole phrase, and kept only if the words are the same."""
    question = say("How many legs does a spider have?")
    end = np.flatnonzero(np.abs(question) > 0.02)[-1]
    turn = np.concatenate([question[:end], np.zeros(SAMPLE_RATE // 4, np.float32)])  # the words, then 250 ms
    session = cascade.session()
    session.listen(turn[: end - SAMPLE_RATE // 20], SAMPLE_RATE, [])  # the draft stops 50 ms before the words end
    if draft_heard == "other words":  # as if listening ahead had misheard the last word
        session.phrases[-1].transcript = "How many legs does a cat have?"
        cascade.llm.prefill([], session.phrases[-1].transcript, session.slot)
    if draft_heard == "the same words, not read yet":  # the pause came while listening ahead was still busy
        session._reading = None
    draft = session.phrases[-1].transcript
    written: list[list[str]] = []
    hear_writing = session._hear_writing

    def spy(*args):
        phrase, read, writing = hear_writing(*args)
        writing.add_done_callback(lambda done: written.append(done.result()[0]))
        return phrase, read, writing

    monkeypatch.setattr(session, "_hear_writing", spy)

    reply = collect(session.respond(turn, SAMPLE_RATE, []))
    assert "spider" in reply["transcript"].lower()
    assert "eight" in reply["text"].lower() or "8" in reply["text"], reply["text"]
    assert written, "the answer to the draft was begun while Whisper heard the phrase"
    if draft_heard == "the same words":  # (words not read yet are read first: on a quiet machine, no time for a token)
        assert any(written[0]), "the answer to the draft was written while Whisper heard the phrase"
    if draft_heard.startswith("the same words"):
        assert reply["transcript"] == draft
        assert reply["text"].startswith("".join(written[0])), (reply["text"], written)  # kept
    else:
        assert "cat" not in reply["text"].lower(), reply["text"]
    session.close()


@pytest.mark.parametrize("then", ["the same words", "the same words and the end of the last one", "other words"])
def test_the_start_of_the_answer_written_ahead_is_kept_for_the_same_words(cascade, say, then):
    """Listening ahead heard finished words before the pause showed: the start of the answer is written ahead, and
    the answer at the pause goes on from it when it hears the same words (as they are, or in a draft that Whisper
    confirms), and drops it for other words."""
    question = say("How many legs does a spider have?")
    end = np.flatnonzero(np.abs(question) > 0.02)[-1]
    turn = np.concatenate([question[:end], np.zeros(SAMPLE_RATE // 4, np.float32)])
    heard_ahead = turn if then == "the same words" else turn[: end - SAMPLE_RATE // 20]
    session = cascade.session()
    session.listen(heard_ahead, SAMPLE_RATE, [])
    if then == "other words":  # as if listening ahead had misheard the last word
        session.phrases[-1].transcript = "How many legs does a cat have?"
        session._listened = (session.phrases[-1].transcript, [])
    session.write_ahead(lambda: False)
    ahead = "".join(session._ahead.deltas)
    assert ahead.strip() and len(ahead.split()) < 10, ahead  # the first clause or so, not the whole answer

    reply = collect(session.respond(turn, SAMPLE_RATE, []))
    assert "spider" in reply["transcript"].lower()
    assert "eight" in reply["text"].lower() or "8" in reply["text"], reply["text"]
    written_ahead = reply["turn"].timings["written_ahead"]
    if then == "other words":
        assert written_ahead == 0 and "cat" not in reply["text"].lower(), reply["text"]
    else:
        assert written_ahead > 0 and reply["text"].startswith(ahead.strip()), (reply["text"], ahead)
    assert session._ahead is None
    session.close()


def test_a_draft_of_other_audio_is_not_used(cascade, say):
    cascade.listen(say("What is the capital of France?"), SAMPLE_RATE, [])
    reply = collect(cascade.respond(say("How many legs does a spider have?"), SAMPLE_RATE, []))
    assert "spider" in reply["transcript"].lower()


def test_each_phrase_is_transcribed_once(cascade, say, monkeypatch):
    """Where the user paused and went on, the words before are finished: later drafts and the reply reuse them."""
    first, second = say("Hello, my name is Anna."), say("How many legs does a spider have?")
    gap = np.zeros(2 * SAMPLE_RATE // 5, np.float32)  # a 400 ms pause for breath
    turn = np.concatenate([first, gap, second])
    cut = first.size + gap.size // 2  # the phrase break, as the pause detector places it
    heard: list[int] = []
    transcribe = cascade.asr.transcribe
    monkeypatch.setattr(cascade.asr, "transcribe", lambda audio: heard.append(audio.size) or transcribe(audio))

    cascade.listen(turn[: cut + SAMPLE_RATE // 2], SAMPLE_RATE, [], [cut])  # half a second after the pause
    cascade.listen(turn, SAMPLE_RATE, [], [cut])
    reply = collect(cascade.respond(turn, SAMPLE_RATE, [], [cut]))
    # The first phrase once; then only the words since the pause; the reply's own audio was all heard already.
    assert heard == [cut, SAMPLE_RATE // 2, turn.size - cut]
    words = reply["transcript"].lower()
    assert "anna" in words and "spider" in words and words.index("anna") < words.index("spider")
    assert reply["audio"]


def test_two_conversations_keep_their_own_caches(cascade, say):
    """Each conversation has its own phrases and prompt cache: listening ahead for one never evicts the other's,
    and replies written in turns, token by token, answer each its own question and history."""
    anna, bob = cascade.session(), cascade.session()
    history = [{"role": "user", "content": "Hello, my name is Anna."}, {"role": "assistant", "content": "Hi Anna!"}]
    anna.listen(say("What is my name?"), SAMPLE_RATE, history)
    bob.listen(say("How many legs does a spider have?"), SAMPLE_RATE, [])
    (anna_phrase,), (bob_phrase,) = anna.phrases, bob.phrases
    assert "name" in anna_phrase.transcript.lower() and "spider" in bob_phrase.transcript.lower()
    assert cascade.llm.prefill(history, anna_phrase.transcript, anna.slot) == 0  # still cached after Bob's turn

    replies = {
        0: anna.respond(say("What is my name?"), SAMPLE_RATE, history),
        1: bob.respond(say("How many legs does a spider have?"), SAMPLE_RATE, []),
    }
    texts = ["", ""]
    while replies:  # one chunk each in turn: the model switches between the two caches all the time
        for i, reply in list(replies.items()):
            chunk = next(reply, None)
            if chunk is None:
                del replies[i]
            elif isinstance(chunk, TextDelta):
                texts[i] += chunk.text
    assert "anna" in texts[0].lower(), texts
    assert "eight" in texts[1].lower() or "8" in texts[1], texts
    anna.close()
    bob.close()


def test_two_generations_on_one_cache_never_mix(cascade):
    """A speculative answer cancelled but not yet closed may take one more step on its conversation's cache while
    the next answer is written there: each must go on from its own tokens, not from the other's."""
    slot = ChatSlot()
    france = cascade.llm.stream([], "What is the capital of France?", slot)
    spider = cascade.llm.stream([], "How many legs does a spider have?", slot)
    texts = ["", ""]
    for a, b in zip(france, spider):
        texts[0] += a
        texts[1] += b
    texts[0] += "".join(france)
    texts[1] += "".join(spider)
    assert "paris" in texts[0].lower(), texts
    assert "eight" in texts[1].lower() or "8" in texts[1], texts


def test_threads_follow_what_other_processes_keep_busy(cascade, monkeypatch):
    """A quiet machine: every thread writes and evaluates. A browser's worth busy: one thread writes (memory-bound,
    it holds its speed), every thread evaluates a prompt (compute-bound). A core busy: one thread for both."""
    import llama_cpp

    llm = cascade.llm
    ctx = llm.llm._ctx.ctx
    threads = llm.options.threads

    def evaluate_with(others: float) -> tuple[int, int]:
        monkeypatch.setattr("omni.llm.others_busy", lambda: others)
        llm.prefill([], f"Count to {others}.", ChatSlot())
        return llama_cpp.llama_n_threads(ctx), llama_cpp.llama_n_threads_batch(ctx)

    assert evaluate_with(0.0) == (threads, threads)
    assert evaluate_with(0.3) == (1, threads)
    assert evaluate_with(1.0) == (1, 1)
    assert evaluate_with(0.0) == (threads, threads)
