"""Turn-taking in the Conversation engine with a loudness VAD and a scripted model: fast and deterministic.

The same behaviours are tested with Silero and the real cascade in test_conversation.py and test_barge_in.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

from omni import Audio, TextDelta
from omni.audio import SAMPLE_RATE
from omni.conversation import INTERRUPTED, READ_SLACK, Conversation, ConversationOptions
from omni.speech_model import NoSpeechError, WordsEnd
from tests.conftest import collect
from tests.fakes import LoudnessVad, ScriptedModel, chunks, silence, speech
from utils.vad import PauseDetectorOptions


def conversation(model: ScriptedModel | None = None, **options) -> Conversation:
    """A conversation on the 700 ms silence rule (the semantic end of turn has tests of its own)."""
    vad_options = PauseDetectorOptions(turn=None)
    return Conversation(model or ScriptedModel(), vad_options, ConversationOptions(**options), vad=LoudnessVad())


def say(conversation: Conversation, audio: np.ndarray) -> list[str]:
    """Feed AUDIO in 0.5 s chunks; the kinds of the events it caused."""
    return [e.kind for chunk in chunks(audio) for e in conversation.hear(chunk, SAMPLE_RATE)]


def test_a_turn_ends_after_silence_and_is_answered():
    talk = conversation(speculate=False, listen_ahead=False)
    kinds = say(talk, np.concatenate([silence(0.5), speech(1.5), silence(1.0)]))
    assert kinds == ["speech_start", "pause", "end_of_turn"]
    reply = collect(talk.reply())
    assert reply["transcript"] == "1.5 s of speech"
    assert reply["text"] == "Hello there. How are you? " and len(reply["audio"]) == 2
    assert [m["role"] for m in talk.history] == ["user", "assistant"]


def test_silence_and_a_click_start_no_turn():
    talk = conversation()
    assert say(talk, np.concatenate([silence(2.0), speech(0.1), silence(2.0)])) == []
    assert not talk.turn_ended


def test_a_turn_without_words_raises_no_speech():
    model = ScriptedModel()
    talk = conversation(model, speculate=False)
    say(talk, np.concatenate([speech(1.0) * 0.3, silence(1.0)]))  # loud enough for the VAD, not for "words"
    with pytest.raises(NoSpeechError):
        collect(talk.reply())
    assert not talk.speaking


def test_the_answer_starts_at_the_pause_and_is_dropped_when_the_user_goes_on():
    model = ScriptedModel()
    talk = conversation(model)
    say(talk, np.concatenate([speech(1.0), silence(0.25)]))  # a pause: an answer starts in the background
    assert talk._speculation is not None
    say(talk, np.concatenate([speech(1.0), silence(1.0)]))  # they went on, then stopped
    reply = collect(talk.reply())
    assert reply["transcript"] == "2.2 s of speech"  # the whole turn (with its pause), not the part before it


def test_the_model_listens_ahead_while_the_user_speaks():
    model = ScriptedModel()
    talk = conversation(model)
    for chunk in chunks(speech(2.0)):
        talk.hear(chunk, SAMPLE_RATE)
        if talk._listening:
            talk._listening.join(1)
    assert len(model.listened) >= 2 and model.listened == sorted(model.listened)


@pytest.mark.parametrize(("speech_s", "same_audio"), [(1.4, True), (1.1, False)])
def test_the_answer_at_a_pause_hears_what_listening_ahead_heard_past_the_silence(speech_s, same_audio):
    """Speech that stops late in a chunk: listening ahead on that chunk heard past where the silence began, so the
    answer at the pause (next chunk) takes that audio and the model has its words already. Speech that stopped
    earlier paused in its own chunk: the answer hears its words with the post-roll."""
    model = ScriptedModel()
    talk = conversation(model, speculate_in_silence_ms=None)
    for chunk in chunks(np.concatenate([speech(speech_s), silence(0.5)])):
        talk.hear(chunk, SAMPLE_RATE)
        if talk._listening:
            talk._listening.join(1)
    assert talk._speculation is not None
    collect(talk._speculation)
    assert (model.heard[0] == model.listened[-1]) is same_audio
    assert model.heard[0] >= speech_s * SAMPLE_RATE  # every word, whatever it took


def test_a_turn_that_ends_in_the_chunk_of_its_pause_is_answered_on_what_listening_ahead_heard():
    """The pause and the end of the turn in one chunk (in the app: a fast end on what listening ahead read): the
    answer starts there and hears the audio listening ahead heard, whose words the model has already (it started at
    the end of the turn instead and transcribed the whole turn again)."""
    model = ScriptedModel()
    talk = conversation(model, speculate_in_silence_ms=None)
    for chunk in chunks(np.concatenate([speech(1.4), silence(0.1)])):  # heard ahead up to 0.1 s into the silence
        talk.hear(chunk, SAMPLE_RATE)
        if talk._listening:
            talk._listening.join(1)
    kinds = [e.kind for e in talk.hear(silence(1.0), SAMPLE_RATE)]
    assert kinds == ["pause", "end_of_turn"] and talk.turn_ended
    reply = collect(talk.reply())
    assert model.heard == [model.listened[-1]]
    assert reply["transcript"] == "1.4 s of speech"


def test_a_chunk_that_ends_in_a_silence_starts_the_answer_and_the_pause_keeps_it():
    """The chunk ends 92 ms into the silence after the words: the answer starts there, a chunk before the pause shows,
    and that answer is the reply (nothing is transcribed twice)."""
    model = ScriptedModel()
    talk = conversation(model)
    say(talk, np.concatenate([speech(1.4), silence(0.1)]))
    assert talk._speculation is not None and not talk.detector.paused
    assert say(talk, silence(1.0)) == ["pause", "end_of_turn"]
    assert collect(talk.reply())["transcript"] == "1.4 s of speech"
    assert len(model.heard) == 1


def test_an_answer_started_in_a_short_silence_is_dropped_when_they_go_on():
    model = ScriptedModel()
    talk = conversation(model)
    say(talk, np.concatenate([speech(1.4), silence(0.1)]))  # the chunk ends 92 ms into a silence: an answer starts
    started = talk._speculation
    assert started is not None
    say(talk, np.concatenate([silence(0.05), speech(1.45), silence(1.0)]))  # 150 ms: not a pause, they go on
    assert started.cancelled
    assert collect(talk.reply())["transcript"] == "3.0 s of speech"  # the whole turn


def test_a_pause_after_more_words_replaces_an_answer_started_in_a_short_silence():
    model = ScriptedModel()
    talk = conversation(model)
    say(talk, np.concatenate([speech(1.4), silence(0.1)]))  # an answer starts 92 ms into a silence
    early = talk._speculation
    # In the next chunk: 50 ms more silence, two more words, then a pause that starts an answer of its own.
    assert say(talk, np.concatenate([silence(0.05), speech(0.2), silence(0.25)])) == ["pause"]
    assert early is not None and early.cancelled
    assert talk._speculation is not None and not talk._speculation.cancelled
    assert say(talk, silence(0.5)) == ["end_of_turn"]
    assert collect(talk.reply())["transcript"] == "1.7 s of speech"


def test_audio_after_the_end_of_a_turn_belongs_to_the_next_one():
    """A quick follow-up in the same chunk as the end of the turn (or before the reply starts) keeps its start."""
    talk = conversation(speculate=False, listen_ahead=False, barge_in=True)
    # The end of turn is decided 704 ms into the silence; the next words start 100 ms later, in the same chunk.
    audio = np.concatenate([speech(1.0), silence(0.8), speech(1.0), silence(1.0)])
    kinds = say(talk, audio[: SAMPLE_RATE * 2])  # up to 0.2 s into the next words
    assert kinds[-1] == "end_of_turn" and talk.turn_ended
    first = talk.turn_audio()
    assert np.abs(first).max() > 0.2 and first.size < 1.6 * SAMPLE_RATE
    collect(talk.reply())
    talk.played()
    kinds = say(talk, audio[SAMPLE_RATE * 2 :])
    assert kinds == ["speech_start", "pause", "end_of_turn"]
    assert collect(talk.reply())["transcript"] == "1.0 s of speech"  # from its first sample


def test_a_reply_with_nothing_to_say_out_loud_gives_the_microphone_back():
    talk = conversation(ScriptedModel(reply="Hmm"), speculate=False, barge_in=True)  # no sentence: no audio
    say(talk, np.concatenate([speech(1.0), silence(1.0)]))
    reply = collect(talk.reply())
    assert reply["audio"] == [] and reply["turn"] is not None
    assert not talk.speaking  # normal listening again: not the stricter barge-in start


def test_talking_over_the_reply_cuts_it_and_keeps_what_was_heard():
    model = ScriptedModel(reply="One. Two. Three. Four. Five. Six.", delay_s=0.05)
    talk = conversation(model, speculate=False, barge_in=True)
    say(talk, np.concatenate([speech(1.0), silence(1.0)]))
    reply = talk.reply()
    for chunk in reply:
        if isinstance(chunk, Audio):
            break
    assert talk.speaking
    kinds = say(talk, speech(1.0))
    assert "speech_start" in kinds and talk.interruptions == 1
    rest = list(reply)
    assert not any(c.turn for c in rest)  # cut: never finished
    said = talk.history[-1]["content"]
    assert said.endswith(INTERRUPTED) and "[" not in said  # no note the model could copy into its replies
    assert talk.heard(0.0) == "" and talk.history[-1]["content"] == INTERRUPTED


def test_a_held_reply_makes_nothing_until_released():
    model = ScriptedModel(reply=" ".join(["word"] * 40), delay_s=0.01)
    talk = conversation(model, speculate=False)
    say(talk, np.concatenate([speech(1.0), silence(1.0)]))
    reply = talk.reply()
    next(reply)
    talk.hold(5.0)
    time.sleep(0.05)
    queued = talk._reply._queue.qsize()
    time.sleep(0.2)
    assert talk._reply._queue.qsize() <= queued + 1  # at most the word under way
    talk.resume()
    assert sum(1 for c in reply if isinstance(c, TextDelta)) > 30


def test_cancel_forgets_the_turn_and_keeps_the_history():
    talk = conversation(speculate=False)
    say(talk, np.concatenate([speech(1.0), silence(1.0)]))
    collect(talk.reply())
    say(talk, speech(1.0))
    talk.cancel()
    assert talk.history and not talk.turn_ended and not talk.detector.started_talking


def test_each_conversation_has_its_own_history():
    model = ScriptedModel()
    anna, bob = conversation(model, speculate=False), conversation(model, speculate=False)
    say(anna, np.concatenate([speech(1.0), silence(1.0)]))
    collect(anna.reply())
    say(bob, np.concatenate([speech(2.0), silence(1.0)]))
    collect(bob.reply())
    assert model.histories[-1] == [] and len(anna.history) == 2 and len(bob.history) == 2


# --- the end of turn from the model's reading of the words -----------------------------------------------------

FRAME_MS = 32


def reading_conversation(
    words_end: float | None, heard: float = 0.9, asks: bool = True
) -> tuple[Conversation, ScriptedModel]:
    """A conversation on the semantic end of turn: smart-turn hears HEARD, the model reads WORDS_END (of a question
    if ASKS)."""
    model = ScriptedModel(words_end=words_end, asks=asks)
    talk = Conversation(
        model, PauseDetectorOptions(), ConversationOptions(listen_ahead=False), vad=LoudnessVad(),
        smart_turn=lambda audio: heard,
    )
    return talk, model


def wait_for_reading(talk: Conversation) -> None:
    deadline = time.monotonic() + 2
    while talk._reading is None and time.monotonic() < deadline:
        time.sleep(0.005)


def end_after_pause(talk: Conversation, seconds_of_silence: float) -> int | None:
    """Say 1 s, pause until the speculation has read the words, then stay silent frame by frame: how many ms of
    silence ended the turn (None: it did not end)."""
    say(talk, speech(1.0))
    pause = silence(0.25)  # a pause (192 ms) starts the speculative answer, which reads the words
    kinds = [e.kind for e in talk.hear(pause, SAMPLE_RATE)]
    assert kinds == ["pause"]
    wait_for_reading(talk)
    for step in chunks(silence(seconds_of_silence), FRAME_MS / 1000):
        for event in talk.hear(step, SAMPLE_RATE):
            if event.kind == "end_of_turn":
                return (event.detected_at - event.sample) * 1000 // SAMPLE_RATE
    return None


def test_finished_words_end_the_turn_after_a_quarter_second():
    talk, _ = reading_conversation(words_end=0.9)
    assert talk.detector.text_end is not None
    assert end_after_pause(talk, 1.0) == 256  # TurnOptions.complete_ms, not the 700 ms rule
    reply = collect(talk.reply())  # the reading is the detector's: the reply's readers never see it
    assert reply["transcript"] == "1.0 s of speech" and reply["turn"] is not None


def test_a_finished_statement_waits_a_breath_longer():
    """ "I have two cats. | And one dog.": a statement may be the preamble to more; a 0.45 s breath stays inside."""
    talk, _ = reading_conversation(words_end=0.9, asks=False)
    assert end_after_pause(talk, 1.0) == 480  # TurnOptions.statement_ms


def test_unfinished_words_keep_the_turn_open_up_to_three_seconds():
    talk, _ = reading_conversation(words_end=0.01)
    assert end_after_pause(talk, 2.5) is None  # "If it stops raining" goes on
    talk, _ = reading_conversation(words_end=0.01)
    assert end_after_pause(talk, 3.5) == 3008  # TurnOptions.incomplete_ms, in whole frames


def test_finished_words_do_not_end_the_turn_fast_when_the_ear_objects():
    talk, _ = reading_conversation(words_end=0.9, heard=0.05)  # "eggs, milk and..." sounds unfinished
    assert end_after_pause(talk, 1.0) == 704  # the 700 ms rule


def test_a_model_that_does_not_read_leaves_the_silence_rule():
    talk, _ = reading_conversation(words_end=None)
    assert talk.detector.text_end is None
    assert end_after_pause(talk, 1.0) == 704


def test_a_reading_counts_only_if_it_heard_every_word_of_this_turn():
    talk, _ = reading_conversation(words_end=0.9)
    talk.options.speculate = False
    say(talk, np.concatenate([speech(1.0), silence(0.1)]))  # stopped talking 0.1 s ago: no pause yet
    stopped, heard = talk.detector.speech_end, talk.detector.position
    assert stopped is not None and stopped < heard
    turn, done = talk._turns, WordsEnd(0.9)
    talk._reading = (turn, heard, done)  # read up to now: every word
    assert talk._words_end(stopped) == done
    talk._reading = (turn, stopped - READ_SLACK, done)  # Silero hears silence late: this had every sound
    assert talk._words_end(stopped) == done
    talk._reading = (turn, stopped - READ_SLACK - 1, done)  # read before the last words
    assert talk._words_end(stopped) is None
    talk._reading = (turn, heard + 512, done)  # past what the VAD has judged: a word may start there
    assert talk._words_end(stopped) is None
    talk._reading = (turn - 1, heard, done)  # the turn before
    assert talk._words_end(stopped) is None


def test_listening_ahead_reads_the_last_words_before_the_pause():
    """Speech that stops late in a chunk: listening ahead has read every word by the next chunk, which ends the turn
    (the speculation at the pause would have its reading a chunk later)."""
    talk, model = reading_conversation(words_end=0.9)
    talk.options.listen_ahead, talk.options.speculate = True, False
    events = []
    audio = np.concatenate([speech(1.4), silence(1.5)])  # stops 0.1 s before the end of the third chunk
    for chunk in chunks(audio):
        events += talk.hear(chunk, SAMPLE_RATE)
        talk._listening and talk._listening.join()
    end = next(e for e in events if e.kind == "end_of_turn")
    assert model.listened and end.detected_at <= 2 * SAMPLE_RATE  # decided within the fourth chunk
    assert (end.detected_at - end.sample) * 1000 // SAMPLE_RATE == 256


@pytest.mark.parametrize(("words_end", "written"), [(0.9, True), (0.01, False)])
def test_words_read_as_finished_have_the_start_of_their_answer_written_until_the_next_chunk(words_end, written):
    """Listening ahead read finished words before the pause showed: the model writes the start of the answer ahead
    (`write_ahead`), and stops when the next chunk comes. Unfinished words are not answered ahead."""
    talk, model = reading_conversation(words_end=words_end)
    talk.options.listen_ahead = True
    stops: list[Callable[[], bool]] = []
    model.write_ahead = stops.append  # the conversation asks for it on a thread of its own
    for i, chunk in enumerate(chunks(speech(1.5)), 1):  # three chunks of talk, each listened to ahead
        talk.hear(chunk, SAMPLE_RATE)
        talk._listening.join()
        deadline = time.monotonic() + 2
        while written and len(stops) < i and time.monotonic() < deadline:
            time.sleep(0.005)
    assert len(stops) == (3 if written else 0)
    if written:
        assert not stops[-1]()  # nothing new yet: go on writing
        talk.hear(silence(0.5), SAMPLE_RATE)
        assert stops[-1]()  # the next chunk has come: its pause (or words) decide
