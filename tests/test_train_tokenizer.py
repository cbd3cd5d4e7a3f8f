"""The default pair's tokenizer and needle keys: numbers in groups of up to 1-3 digits, keys that no
KJV haystack contains."""

from __future__ import annotations

import re

import pytest

from meap_bench.errors import UserError
from meap_bench.train.tokenizer import digit_groups, train_tokenizer

TEXT = "And the LORD spake unto Moses, saying, The special magic number for zorvath is 1234567."


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return train_tokenizer([TEXT] * 20, 1600, tmp_path_factory.mktemp("tok"))


def pieces(tok, text: str) -> list[str]:
    return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])


def test_every_digit_group_is_one_token(tok):
    assert len(digit_groups(3)) == 1110
    assert all(len(pieces(tok, group)) == 1 for group in digit_groups(3))


@pytest.mark.parametrize(("number", "groups"), [("1234567", ["123", "456", "7"]), ("9040012", ["904", "001", "2"]),
                                               ("42", ["42"]), ("1000000", ["100", "000", "0"])])
def test_numbers_split_left_to_right_in_threes(tok, number, groups):
    assert pieces(tok, number) == groups
    assert pieces(tok, f" {number}.") == ["Ġ", *groups, "."]  # the needle answer: space, 3 groups, full stop
    assert tok.decode(tok(f"is {number}.")["input_ids"], skip_special_tokens=True) == f"is {number}."


@pytest.mark.parametrize(("digits", "groups"), [(1, list("1234567")), (2, ["12", "34", "56", "7"])])
def test_fewer_digits_per_token_split_numbers_finer(tmp_path, digits, groups):
    tok = train_tokenizer([TEXT] * 20, 1600, tmp_path, digits=digits)
    assert pieces(tok, " 1234567.") == ["Ġ", *groups, "."]
    assert "123" not in tok.get_vocab()


def test_digit_merges_never_touch_words(tok):
    assert "".join(pieces(tok, "abc123def")).replace("Ġ", " ") == "abc123def"
    assert "123" in pieces(tok, "abc123def")


def test_too_small_a_vocabulary_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match=r"tokenizer.vocab_size 600 leaves .* digit groups"):
        train_tokenizer([TEXT] * 5, 600, tmp_path)


def test_needle_keys_are_made_up_words_no_kjv_text_contains():
    from meap_bench.data.kjv import kjv_text
    from meap_bench.data.synthetic import magic_keys

    train, heldout = magic_keys("train"), magic_keys("heldout")
    assert len(heldout) > 1000 and len(train) > 7 * 1000 and not set(train) & set(heldout)
    english = set(re.findall(r"[a-z]+", (kjv_text("train") + kjv_text("heldout")).lower()))
    assert not (set(train) | set(heldout)) & english
    assert all(re.fullmatch(r"[a-z]{4,12}", k) for k in heldout)
    assert magic_keys.__wrapped__("heldout") == heldout  # deterministic, not a random draw
