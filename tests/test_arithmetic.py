"""Spoken arithmetic computed exactly (omni/arithmetic.py), and the note the language model gets. No models."""

from __future__ import annotations

from decimal import Decimal

import pytest

from omni.arithmetic import find, note, with_note
from omni.llm import LlmOptions, build_prompt


@pytest.mark.parametrize(
    ("text", "said", "result"),
    [
        ("What is 7.25 minus 3.8?", "7.25 minus 3.8", "3.45"),  # the second decimal a model got wrong
        ("What is seven point two five minus three point eight?", "7.25 minus 3.8", "3.45"),
        ("What is 0.1 plus 0.2?", "0.1 plus 0.2", "0.3"),  # exactly, not 0.30000000000000004
        ("What is twelve times eight?", "12 times 8", "96"),
        ("What is 144 divided by 12?", "144 divided by 12", "12"),
        ("What's one hundred minus thirty seven?", "100 minus 37", "63"),
        ("What is 1,000 divided by 8?", "1000 divided by 8", "125"),
        ("one hundred and twenty five times two", "125 times 2", "250"),
        ("What is 6.5 x 4?", "6.5 times 4", "26"),
        ("What is 3-2?", "3 minus 2", "1"),
        ("What is 2 plus 3 times 4?", "2 plus 3 times 4", "14"),  # times before plus
        ("What is 15 percent of 80?", "15 percent of 80", "12"),
        ("Subtract 4 from 10.", "10 minus 4", "6"),
        ("Add five and seven.", "5 plus 7", "12"),
        ("Multiply 2.5 by 4.", "2.5 times 4", "10"),
        ("two thousand twenty four minus nineteen ninety nine", "2024 minus 1999", "25"),
        ("How much is 9.6 take away 4.85?", "9.6 minus 4.85", "4.75"),
    ],
)
def test_spoken_calculations_are_exact(text: str, said: str, result: str) -> None:
    assert find(text) == (said, Decimal(result))


@pytest.mark.parametrize(
    "text",
    [
        "I have two cats and one dog.",  # numbers, no operator
        "How many pets do I have?",
        "I go running 3 times a week.",
        "Drop the two when you add the figures.",
        "Take the 2 to 5 train.",
        "What is the capital of France?",
        "",
    ],
)
def test_no_calculation_no_note(text: str) -> None:
    assert note(text) is None
    assert with_note(text) == text


def test_notes_say_exact_rounded_or_impossible() -> None:
    assert note("What is 7.25 minus 3.8?") == "Calculator: 7.25 minus 3.8 = 3.45 exactly."
    assert note("What is 10 divided by 3?") == "Calculator: 10 divided by 3 = about 3.3333."
    assert "divide by zero" in note("What is 5 divided by 0?")


def test_every_user_turn_gets_its_note_so_the_cached_prefix_stays() -> None:
    history = [{"role": "user", "content": "What is 2 plus 2?"}, {"role": "assistant", "content": "4."}]
    messages = build_prompt(LlmOptions(), history, "And 7.25 minus 3.8?")
    assert messages[1]["content"] == "What is 2 plus 2?\nCalculator: 2 plus 2 = 4 exactly."
    assert messages[3]["content"].endswith("Calculator: 7.25 minus 3.8 = 3.45 exactly.")
    assert build_prompt(LlmOptions(exact_arithmetic=False), history, "And 7.25 minus 3.8?")[3]["content"] == (
        "And 7.25 minus 3.8?"
    )
