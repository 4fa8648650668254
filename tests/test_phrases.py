"""Joining the phrases of a turn into one transcript (omni.cascade.Phrase.join). No models."""

from __future__ import annotations

import pytest

from omni.cascade import Phrase


@pytest.mark.parametrize(
    ("phrases", "joined"),
    [
        (
            ["The procedure is established.", "for the frequent flyer."],
            "The procedure is established for the frequent flyer.",
        ),
        (["What is the tallest mountain?", "in the world?"], "What is the tallest mountain in the world?"),
        (["Who was the first person...", "to walk on the moon?"], "Who was the first person to walk on the moon?"),
        (
            ["Hello, my name is Anna.", "How many legs does a spider have?"],
            "Hello, my name is Anna. How many legs does a spider have?",
        ),
        (["What is the capital of", "France?"], "What is the capital of France?"),
        (["What is the largest animal?", "In the world?"], "What is the largest animal in the world?"),
        (["My name is Tom.", "And I live in Dublin."], "My name is Tom and I live in Dublin."),
        (
            ["How many players does a football team?", "Have on the field."],
            "How many players does a football team? Have on the field.",
        ),
        (["No.", "I said Porto."], "No. I said Porto."),  # a new sentence keeps its full stop
        (["I live in Dublin", "", " and I like it. "], "I live in Dublin and I like it."),  # silence: no phrase
        (["", ""], ""),
    ],
)
def test_phrases_join_without_breaking_sentences(phrases: list[str], joined: str) -> None:
    assert Phrase.join(phrases) == joined
