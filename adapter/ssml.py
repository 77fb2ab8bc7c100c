"""SSML input: `<speak>` text as a script of segments (the same segments as the seed's `segments`).

Supported (docs/adapter-api.md, "SSML"):
- `<speak>`: the root (a namespace such as Google's or the W3C's is accepted);
- `<voice name="...">`: a library voice (its extension may be left out), or `variant:voice` for a
  model variant and a voice (`turbo:alice`; `turbo:` alone: that variant with the default voice);
- `<break time="500ms|2s"/>` or `<break strength="none|x-weak|weak|medium|strong|x-strong"/>`;
- `<p>` (a paragraph ends with a medium pause) and `<s>` (a sentence: read as text);
- `<prosody rate="...">`: x-slow, slow, medium, fast, x-fast, or a percentage; through the route's speed
  control, so one rate for the whole text, and only where the route has one (OpenAI's `speed`);
- `<say-as>` and every other element: its text is read, the tag ignored.

Parsing uses defusedxml with DTDs forbidden: no entity expansion (billion laughs), no external
entities or references. Bad SSML raises SSMLError naming the line and column.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace

import defusedxml
import defusedxml.ElementTree as SafeET

from adapter.errors import APIError
from adapter.request import Segment
from adapter.schemas import MAX_PAUSE_MS
from contract.variants import VARIANT_NAMES

# Pauses of <break strength> and of a paragraph's end, in milliseconds (close to what the big services use).
BREAK_STRENGTHS = {"none": 0, "x-weak": 100, "weak": 250, "medium": 400, "strong": 750, "x-strong": 1200}
PARAGRAPH_PAUSE_MS = BREAK_STRENGTHS["medium"]
RATES = {"x-slow": 0.5, "slow": 0.75, "medium": 1.0, "default": 1.0, "fast": 1.25, "x-fast": 1.5}
_TIME = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*$")
_PERCENT = re.compile(r"^\s*([+-]?)(\d+(?:\.\d+)?)\s*%\s*$")


class SSMLError(ValueError):
    def __init__(self, line: int, column: int, problem: str):
        super().__init__(f"SSML line {line}, column {column}: {problem}")
        self.line, self.column, self.problem = line, column, problem


@dataclass
class SsmlSegment:
    text: str
    voice: str | None = None  # as named in <voice name>: a library voice, extension optional
    model: str | None = None  # a variant named as `variant:voice`
    pause_ms: int = 0


@dataclass
class SsmlScript:
    segments: list[SsmlSegment] = field(default_factory=list)
    rate: float | None = None  # from <prosody rate>: one for the whole text, or None


def is_ssml(text: str) -> bool:
    """Auto-detection: the text is an XML document (<speak>, or an XML declaration or DOCTYPE before
    it, which no one speaks aloud). A document that is not valid SSML is then a 400, never read out."""
    return text.lstrip().startswith(("<speak", "<?xml", "<!DOCTYPE"))


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of `index` in `text` (expat's columns are 0-based: we add 1 there too)."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse(text: str, variants: tuple[str, ...]) -> SsmlScript:
    """The script `text` describes; SSMLError for malformed or unsupported SSML."""
    try:
        root = SafeET.fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except ET.ParseError as exc:
        line, column = exc.position
        message = str(exc).split(":")[0]
        raise SSMLError(line, column + 1, f"not well-formed XML ({message})") from None
    except defusedxml.DefusedXmlException as exc:
        # Raised at the DOCTYPE or ENTITY declaration (expat does not say where): point at it.
        found = next((i for i in (text.find("<!DOCTYPE"), text.find("<!ENTITY")) if i >= 0), 0)
        line, column = _position(text, found)
        raise SSMLError(line, column, f"DTDs and entities are not accepted ({exc.__class__.__name__})") from None
    if _local(root.tag) != "speak":
        raise SSMLError(1, 1, f"the root element must be <speak>, not <{_local(root.tag)}>")
    builder = _Builder(text, variants)
    builder.element(root, voice=None, model=None, rate=None)
    return builder.finish()


class _Builder:
    def __init__(self, source: str, variants: tuple[str, ...]):
        self.source = source
        self.variants = variants
        self.script = SsmlScript()
        self._text: list[str] = []
        self._voice: tuple[str | None, str | None] = (None, None)
        self._rates: set[float] = set()

    def element(self, node: ET.Element, voice: str | None, model: str | None, rate: float | None) -> None:
        tag = _local(node.tag)
        if tag == "voice":
            voice, model = self._voice_of(node)
        elif tag == "prosody" and node.get("rate") is not None:
            rate = self._rate_of(node)
        elif tag == "break":
            self._pause(self._break_ms(node))
        self._say(node.text, voice, model, rate)
        for child in node:
            self.element(child, voice, model, rate)
            self._say(child.tail, voice, model, rate)
        if tag == "p":
            self._pause(PARAGRAPH_PAUSE_MS)

    def _say(self, text: str | None, voice: str | None, model: str | None, rate: float | None) -> None:
        words = " ".join((text or "").split())
        if not words:
            return
        if (voice, model) != self._voice and self._text:
            self._flush(0)
        self._voice = (voice, model)
        self._rates.add(rate if rate is not None else 1.0)
        self._text.append(words)

    def _pause(self, ms: int) -> None:
        if self._text:
            self._flush(ms)
        elif self.script.segments:  # consecutive breaks add up
            last = self.script.segments[-1]
            last.pause_ms = min(MAX_PAUSE_MS, last.pause_ms + ms)
        # A pause before any text has no segment to follow: there is no audio to pause yet.

    def _flush(self, pause_ms: int) -> None:
        voice, model = self._voice
        self.script.segments.append(SsmlSegment(" ".join(self._text), voice, model, min(MAX_PAUSE_MS, pause_ms)))
        self._text = []

    def finish(self) -> SsmlScript:
        if self._text:
            self._flush(0)
        if not self.script.segments:
            raise SSMLError(1, 1, "<speak> holds no text to speak")
        if len(self._rates) > 1:
            raise SSMLError(
                1, 1, "<prosody rate> must be the same for all the text (it sets the answer's speed as a whole)"
            )
        rate = self._rates.pop()
        self.script.rate = None if rate == 1.0 else rate
        return self.script

    def _where(self, node: ET.Element) -> tuple[int, int]:
        # ElementTree keeps no positions: the element's first occurrence in the source is close enough.
        found = self.source.find("<" + node.tag.rsplit("}", 1)[-1])
        return _position(self.source, max(found, 0))

    def _voice_of(self, node: ET.Element) -> tuple[str | None, str | None]:
        name = (node.get("name") or "").strip()
        if not name:
            raise SSMLError(*self._where(node), "<voice> needs a name (a library voice, or variant:voice)")
        variant, sep, voice = name.partition(":")
        if not sep:
            return name, None
        if variant not in self.variants:
            raise SSMLError(
                *self._where(node), f"<voice name='{name}'>: '{variant}' is not a variant ({', '.join(self.variants)})"
            )
        return voice or None, variant

    def _break_ms(self, node: ET.Element) -> int:
        time_value, strength = node.get("time"), node.get("strength")
        if time_value is not None:
            match = _TIME.match(time_value)
            if match is None:
                raise SSMLError(*self._where(node), f"<break time='{time_value}'>: expected e.g. 500ms or 1.5s")
            ms = float(match.group(1)) * (1 if match.group(2) == "ms" else 1000)
            if ms > MAX_PAUSE_MS:
                raise SSMLError(*self._where(node), f"<break time='{time_value}'> is over {MAX_PAUSE_MS} ms")
            return round(ms)
        if strength is not None:
            if strength not in BREAK_STRENGTHS:
                raise SSMLError(
                    *self._where(node),
                    f"<break strength='{strength}'>: expected one of {', '.join(BREAK_STRENGTHS)}",
                )
            return BREAK_STRENGTHS[strength]
        return BREAK_STRENGTHS["medium"]

    def _rate_of(self, node: ET.Element) -> float:
        value = node.get("rate", "")
        if value in RATES:
            return RATES[value]
        match = _PERCENT.match(value)
        if match is None:
            raise SSMLError(
                *self._where(node), f"<prosody rate='{value}'>: expected {', '.join(RATES)} or a percentage"
            )
        sign, number = match.group(1), float(match.group(2)) / 100
        return 1.0 + number if sign == "+" else 1.0 - number if sign == "-" else number


def ssml_segments(text: str, base: Segment) -> tuple[tuple[Segment, ...], float | None]:
    """The segments (each `base` with the SSML's text, voice, variant and pause) and the rate of SSML
    `text`; bad SSML is a 400 naming the line and column."""
    try:
        script = parse(text, VARIANT_NAMES)
    except SSMLError as exc:
        raise APIError(400, str(exc)) from None
    segments = tuple(
        replace(
            base,
            text=s.text,
            voice=s.voice or base.voice,
            voice_named=s.voice is not None or base.voice_named,
            model=s.model or base.model,
            pause_ms=s.pause_ms,
        )
        for s in script.segments
    )
    return segments, script.rate
