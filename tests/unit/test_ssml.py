"""SSML as a script (adapter/ssml.py): what each supported element becomes, the 400 that names the line
and column, and hostile XML (entity expansion, external entities) refused before anything expands."""

from __future__ import annotations

import pytest

from adapter.errors import APIError
from adapter.request import Segment
from adapter.ssml import SSMLError, is_ssml, parse, ssml_segments
from contract.variants import VARIANT_NAMES

DIALOGUE = """<speak>
  <voice name="alice">Did you hear that?</voice>
  <break time="400ms"/>
  <voice name="turbo:bob.wav"><s>Hear <say-as interpret-as="characters">what</say-as>?</s></voice>
  <voice name="alice"><emphasis>Never</emphasis> mind.</voice>
</speak>"""


def test_a_dialogue_becomes_segments():
    script = parse(DIALOGUE, VARIANT_NAMES)
    got = [(s.text, s.voice, s.model, s.pause_ms) for s in script.segments]
    assert got == [
        ("Did you hear that?", "alice", None, 400),
        ("Hear what ?", "bob.wav", "turbo", 0),
        ("Never mind.", "alice", None, 0),
    ]
    assert script.rate is None


def test_paragraphs_breaks_and_strengths():
    script = parse(
        '<speak><p>One.</p><p>Two.<break strength="x-strong"/><break time="1s"/></p>Three.</speak>', VARIANT_NAMES
    )
    # A paragraph ends with a medium pause (400 ms); consecutive breaks add up.
    assert [(s.text, s.pause_ms) for s in script.segments] == [
        ("One.", 400),
        ("Two.", 1200 + 1000 + 400),
        ("Three.", 0),
    ]


def test_one_prosody_rate_for_the_whole_text_becomes_the_speed():
    assert parse('<speak><prosody rate="150%">Fast.</prosody></speak>', VARIANT_NAMES).rate == 1.5
    assert parse('<speak><prosody rate="slow">Slow.</prosody></speak>', VARIANT_NAMES).rate == 0.75
    with pytest.raises(SSMLError, match="the same for all the text"):
        parse('<speak><prosody rate="fast">Fast.</prosody> Normal.</speak>', VARIANT_NAMES)


def test_namespaced_speak_and_detection():
    text = '<?xml version="1.0"?>\n<speak xmlns="http://www.w3.org/2001/10/synthesis" version="1.0">Hi.</speak>'
    assert is_ssml(text) and parse(text, VARIANT_NAMES).segments[0].text == "Hi."
    assert not is_ssml("I <3 speaking") and not is_ssml("Hello <b>there</b>")


@pytest.mark.parametrize(
    "text, line, column, problem",
    [
        ("<speak>\n  <voice name='alice'>Hi.\n</speak>", 3, 3, "not well-formed"),
        ("<speak>Hi.<break time='soon'/></speak>", 1, 11, "break time='soon'"),
        ("<speak>\n<voice name='robot:alice'>Hi.</voice></speak>", 2, 1, "'robot' is not a variant"),
        ("<speak><break/></speak>", 1, 1, "no text"),
        ("<talk>Hi.</talk>", 1, 1, "root element must be <speak>"),
    ],
)
def test_bad_ssml_names_line_and_column(text, line, column, problem):
    with pytest.raises(SSMLError, match=problem) as caught:
        parse(text, VARIANT_NAMES)
    assert (caught.value.line, caught.value.column) == (line, column)
    assert str(caught.value).startswith(f"SSML line {line}, column {column}: ")


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE speak [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<speak>&lol9;</speak>"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE speak [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<speak>&secret;</speak>"""


@pytest.mark.parametrize("hostile", [BILLION_LAUGHS, EXTERNAL_ENTITY])
def test_hostile_xml_is_refused_before_it_expands(hostile):
    with pytest.raises(APIError) as caught:
        ssml_segments(hostile, Segment(text="", model="standard"))
    assert caught.value.status == 400
    assert caught.value.message.startswith("SSML line 2, column 1: DTDs and entities are not accepted")


def test_segments_inherit_the_requests_voice_model_and_parameters():
    base = Segment(text="", model="standard", language_id="en", voice="carol.wav", parameters={"seed": 3})
    segments, rate = ssml_segments('<speak>One.<voice name="turbo:">Two.</voice></speak>', base)
    assert [(s.text, s.model, s.voice, s.voice_named, s.parameters) for s in segments] == [
        ("One.", "standard", "carol.wav", False, {"seed": 3}),
        ("Two.", "turbo", "carol.wav", False, {"seed": 3}),
    ]
    assert rate is None
