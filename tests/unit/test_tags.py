"""Turbo's [tags]: what counts as one (contract/tags.py), the 400 messages, and the tags read from a
real tokenizer: the random-weight turbo tokenizer, which carries the real one's added tokens."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from contract.tags import tag_problem, tags_in
from predictor.engine.variants import VARIANT_SPECS
from scripts.random_weights import TURBO_TAGS

KNOWN = ("[laugh]", "[sigh]", "[clear throat]")


@pytest.mark.parametrize(
    "text, tags",
    [
        ("Oh [laugh] well [sigh], [laugh] again.", ["[laugh]", "[sigh]"]),  # each once, in order
        ("[clear throat] Listen.", ["[clear throat]"]),
        ("[Laugh]", ["[Laugh]"]),  # a tag by shape; the tokenizer decides whether it knows it
        # Not tags: digits, punctuation, a space at an edge or doubled, nothing inside.
        ("See [1], [pause:500], [a-b], [ laugh ], [two  spaces], [] and [x_y].", []),
    ],
)
def test_what_counts_as_a_tag(text, tags):
    assert tags_in(text) == tags


def test_known_tags_and_plain_text_pass():
    assert tag_problem("Ha [laugh], [clear throat] ok.", "turbo", KNOWN) is None
    assert tag_problem("No tags [1] here.", "standard", ()) is None


def test_an_unknown_tag_is_named_with_the_known_ones():
    assert tag_problem("Hi [giggle] [laugh] [Sigh].", "turbo", KNOWN) == (
        "unknown tags [giggle], [Sigh] for the turbo model; its tags are [laugh], [sigh], [clear throat]"
    )


def test_a_tag_on_a_model_without_tags_says_so():
    assert tag_problem("Hi [laugh].", "standard", ()) == (
        "the standard model takes no tags (its tokenizer has none), and the text has [laugh]"
    )


def test_tags_are_read_from_the_random_turbo_tokenizer(weights_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(weights_dir / "turbo")
    assert VARIANT_SPECS["turbo"].tags_of(SimpleNamespace(tokenizer=tokenizer)) == TURBO_TAGS
    # Each is one token, as in the real tokenizer: turbo hears the tag, not its letters.
    ids = tokenizer("Oh [clear throat] no [laugh]").input_ids
    tag_ids = tokenizer.convert_tokens_to_ids(["[clear throat]", "[laugh]"])
    assert [i for i in ids if i in tag_ids] == tag_ids


def test_grapheme_tokenizers_have_no_tags():
    # Their added tokens ([START], [SPACE], [en]...) are controls, not tags: tags_of never reads them.
    for name in ("standard", "multilingual"):
        assert VARIANT_SPECS[name].tags_of(None) == ()
