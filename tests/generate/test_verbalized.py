"""Verbalized Sampling: the instruction and the lenient parser of k responses (pure, no model)."""

from __future__ import annotations

import pytest

from prefgen.engines import Completion
from prefgen.generate.verbalized import (
    UNPARSEABLE,
    VerbalizedSample,
    parse_probability,
    parse_verbalized,
    split_verbalized,
    with_verbalized_instruction,
)

WELL_FORMED = """<response><text>A cat in a hat.</text><probability>0.5</probability></response>
<response><text>A dog on a log.</text><probability>0.3</probability></response>
<response><text>A fox in a box.</text><probability>0.2</probability></response>"""


def test_instruction_goes_before_the_last_user_turn_and_leaves_the_rest():
    messages = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "Tell a joke."},
    ]
    out = with_verbalized_instruction(messages, 4)
    assert out[:3] == messages[:3]
    assert out[3]["content"].startswith("Generate 4 possible responses")
    assert out[3]["content"].endswith("\n\nTell a joke.")
    assert "<probability>" in out[3]["content"]
    assert messages[3]["content"] == "Tell a joke."  # the row's messages are not mutated
    assert with_verbalized_instruction([], 2)[0]["role"] == "user"


def test_well_formed_reply_gives_k_samples_in_order():
    assert parse_verbalized(WELL_FORMED, 3) == [
        VerbalizedSample("A cat in a hat.", 0.5),
        VerbalizedSample("A dog on a log.", 0.3),
        VerbalizedSample("A fox in a box.", 0.2),
    ]


def test_more_than_k_keeps_the_first_k():
    assert [s.text for s in parse_verbalized(WELL_FORMED, 2)] == [
        "A cat in a hat.",
        "A dog on a log.",
    ]


def test_tags_in_any_case_order_and_spacing():
    text = (
        "Sure! Here you go:\n<Response id='1'>\n  <PROBABILITY> 0.25 </PROBABILITY>\n"
        "  <Text>\n  Multi\nline  </Text>\n</Response >\n"
        "<response><text>second</text><probability>30%</probability></response>"
    )
    assert parse_verbalized(text, 5) == [
        VerbalizedSample("Multi\nline", 0.25),
        VerbalizedSample("second", 0.3),
    ]


def test_reply_cut_off_by_max_tokens_keeps_the_closed_responses():
    text = WELL_FORMED.rsplit("<response>", 1)[0] + "<response><text>A fox in a bo"
    assert [s.text for s in parse_verbalized(text, 3)] == ["A cat in a hat.", "A dog on a log."]


def test_unclosed_response_tags_still_split_blocks():
    text = "<response><text>one</text><probability>0.6</probability><response><text>two</text>"
    assert parse_verbalized(text, 3) == [
        VerbalizedSample("one", 0.6),
        VerbalizedSample("two", None),
    ]


def test_text_tags_without_response_wrappers():
    text = "<text>a</text> <probability>0.7</probability>\n<text>b</text>\n<text>c</text> p=0.1"
    assert parse_verbalized(text, 3) == [
        VerbalizedSample("a", 0.7),
        VerbalizedSample("b", None),  # the probability belongs to the text before it, not after
        VerbalizedSample("c", None),
    ]


def test_empty_texts_do_not_count():
    text = "<response><text>  </text><probability>0.5</probability></response>" + WELL_FORMED
    assert len(parse_verbalized(text, 5)) == 3


def test_json_variant_also_in_a_code_fence():
    text = (
        'Here:\n```json\n{"responses": [{"text": "x", "probability": 0.6}, '
        '{"text": "y", "probability": "40%"}, {"text": "", "probability": 0.1}, {"nope": 1}]}\n```'
    )
    assert parse_verbalized(text, 5) == [VerbalizedSample("x", 0.6), VerbalizedSample("y", 0.4)]
    assert parse_verbalized('[{"text": "z"}]', 2) == [VerbalizedSample("z", None)]


@pytest.mark.parametrize(
    "text",
    ["", "Just one plain answer.", "<response>no text tag</response>", "{not json", "[1, 2]"],
)
def test_nothing_parseable(text):
    assert parse_verbalized(text, 3) == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0.3", 0.3),
        (" 0.30 ", 0.3),
        ("30%", 0.3),
        ("30 %", 0.3),
        ("1", 1.0),
        ("0", 0.0),
        (".5", 0.5),
        ("5e-2", 0.05),
        ("about 0.2 (likely)", 0.2),
        (0.25, 0.25),
        ("1.5", None),
        ("150%", None),
        ("-0.1", None),
        ("high", None),
        ("", None),
        (None, None),
        (True, None),
    ],
)
def test_parse_probability(raw, expected):
    value = parse_probability(raw)
    if expected is None:
        assert value is None
    else:
        assert value == pytest.approx(expected)


def test_split_pads_to_k_with_error_pieces_and_keeps_the_token_total():
    text = "<response><text>short</text><probability>0.9</probability></response>" + (
        "<response><text>a much longer answer</text></response><response><text>cut"
    )
    pieces = split_verbalized(Completion(text, "length", 40), 4)
    assert [p.finish_reason for p, _ in pieces] == ["stop", "stop", UNPARSEABLE, UNPARSEABLE]
    assert [p.text for p, _ in pieces] == ["short", "a much longer answer", "", ""]
    assert [prob for _, prob in pieces] == [0.9, None, None, None]
    assert sum(p.n_tokens for p, _ in pieces) == 40
    assert pieces[0][0].n_tokens < pieces[1][0].n_tokens  # shared by characters


def test_split_of_an_unparseable_reply_keeps_its_tokens_on_the_first_error():
    pieces = split_verbalized(Completion("I refuse to use tags.", "stop", 7), 3)
    assert [p.finish_reason for p, _ in pieces] == [UNPARSEABLE] * 3
    assert [p.n_tokens for p, _ in pieces] == [7, 0, 0]


def test_split_of_a_failed_call_repeats_its_error():
    pieces = split_verbalized(Completion("", "error: prompt_too_long (9 tokens)", 0), 2)
    assert [p.finish_reason for p, _ in pieces] == ["error: prompt_too_long (9 tokens)"] * 2
