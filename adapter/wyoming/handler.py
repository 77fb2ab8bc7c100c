"""One Wyoming connection: describe -> info; synthesize -> audio-start, audio-chunk*, audio-stop;
synthesize-start, synthesize-chunk*, synthesize-stop -> the same audio events, then synthesize-stopped.

Every piece of text goes through adapter.synthesis.Synthesis, so Wyoming requests hold a slot of the
same pool as HTTP and WebSocket requests (MAX_CONCURRENT_REQUESTS) and are refused the same way.
"""

from __future__ import annotations

import asyncio
import logging

from sentence_stream import SentenceBoundaryDetector
from starlette.concurrency import run_in_threadpool
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.server import AsyncEventHandler
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from adapter.errors import APIError
from adapter.request import Output, Segment, SynthesisRequest
from adapter.ssml import is_ssml, ssml_segments
from adapter.synthesis import AppContext, Synthesis
from adapter.transport import ClientGone
from adapter.wyoming import catalogue
from contract.errors import ServiceError
from contract.variants import SAMPLE_RATE

log = logging.getLogger("adapter.wyoming")

TRANSPORT = "wyoming"  # the `transport` label of the adapter's synthesis metrics
SAMPLE_WIDTH = 2  # 16-bit PCM
CHANNELS = 1
# Home Assistant plays each audio-chunk whole before the next, so chunks are kept short.
CHUNK_MS = 40
OUTPUT = Output("pcm_s16le", SAMPLE_RATE, stream=True, chunk_size_ms=CHUNK_MS)


class TextStream:
    """The state of one synthesize-start ... synthesize-stop exchange."""

    def __init__(self, voice: SynthesizeVoice | None):
        self.voice = voice
        self.sentences = SentenceBoundaryDetector()
        self.audio_started = False
        self.text_seen = False
        # Streamed text that starts with markup is SSML: kept whole and spoken at synthesize-stop
        # (cutting it at sentence ends would cut elements in two).
        self.markup: list[str] | None = None


class TtsHandler(AsyncEventHandler):
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: AppContext, running: set[asyncio.Task]
    ):
        super().__init__(reader, writer)
        self.ctx = ctx
        self.stream: TextStream | None = None
        self._running = running

    async def run(self) -> None:
        """Registered in `running` so that shutdown can cancel it and wait for its cleanup."""
        task = asyncio.current_task()
        assert task is not None  # the server runs each connection's handler in its own task
        self._running.add(task)
        try:
            await super().run()
        except (ConnectionError, ValueError) as exc:
            # A peer that breaks the framing (or the connection) ends only its own connection.
            log.info("wyoming connection closed: %s", exc)
        finally:
            self._running.discard(task)

    async def handle_event(self, event: Event) -> bool:
        try:
            await self._dispatch(event)
        except ClientGone:
            return False
        return True

    async def write_event(self, event: Event) -> None:
        try:
            await super().write_event(event)
        except (ConnectionError, OSError, RuntimeError):
            raise ClientGone() from None

    async def _dispatch(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self.write_event((await self.describe()).event())
        elif Synthesize.is_type(event.type):
            # Inside a stream, Home Assistant repeats the whole text for servers that do not stream: ignore it.
            if self.stream is None:
                request = Synthesize.from_event(event)
                started = await self.speak(request.text, request.voice, audio_started=False)
                if started:
                    await self.write_event(AudioStop().event())
        elif SynthesizeStart.is_type(event.type):
            self.stream = TextStream(SynthesizeStart.from_event(event).voice)
        elif SynthesizeChunk.is_type(event.type):
            if self.stream is None:
                await self.error(400, "synthesize-chunk without synthesize-start")
                return
            text, stream = SynthesizeChunk.from_event(event).text, self.stream
            if not stream.text_seen and text.strip():
                stream.text_seen = True
                stream.markup = [] if text.lstrip().startswith("<") else None
            if stream.markup is not None:
                stream.markup.append(text)
                return
            # Each sentence is spoken as soon as it is complete, while the rest of the text is still coming.
            for sentence in stream.sentences.add_chunk(text):
                await self._speak_in_stream(sentence)
        elif SynthesizeStop.is_type(event.type):
            if self.stream is not None:
                rest = self.stream.sentences.finish() if self.stream.markup is None else "".join(self.stream.markup)
                await self._speak_in_stream(rest)
                if self.stream.audio_started:
                    await self.write_event(AudioStop().event())
                self.stream = None
            await self.write_event(SynthesizeStopped().event())
        # Anything else (ping, other domains) is dropped, as the protocol asks of servers.

    async def describe(self) -> Info:
        try:
            loaded = list((await self.ctx.predictor.info()).get("loaded_models") or [])
        except ServiceError as exc:
            # Home Assistant still gets an answer (its voices, no models) and asks again later.
            log.warning("wyoming describe: predictor unavailable (%s)", exc.message)
            loaded = []
        voices = await run_in_threadpool(self.ctx.voices.list_voices)
        return catalogue.describe(loaded, voices)

    async def _speak_in_stream(self, text: str) -> None:
        stream = self.stream
        if stream is not None and text.strip():
            stream.audio_started = await self.speak(text, stream.voice, stream.audio_started)

    async def speak(self, text: str, voice: SynthesizeVoice | None, audio_started: bool) -> bool:
        """Synthesises `text` into audio-chunk events (audio-start first, unless already sent); an
        error becomes an `error` event. Returns whether audio-start has been sent."""
        try:
            async with Synthesis(self.ctx, await self._request(text, voice)) as synthesis:
                async for piece in synthesis.encoded():
                    if not piece.data:
                        continue
                    if not audio_started:
                        await self.write_event(AudioStart(SAMPLE_RATE, SAMPLE_WIDTH, CHANNELS).event())
                        audio_started = True
                    await self.write_event(AudioChunk(SAMPLE_RATE, SAMPLE_WIDTH, CHANNELS, piece.data).event())
        except ServiceError as exc:
            await self.error(exc.status, exc.message)
        except ClientGone:
            raise
        except Exception:
            log.exception("wyoming synthesis failed")
            await self.error(500, "internal server error")
        return audio_started

    async def _request(self, text: str, voice: SynthesizeVoice | None) -> SynthesisRequest:
        if not text.strip():
            raise APIError(422, "text must not be empty")
        loaded = list((await self.ctx.predictor.info()).get("loaded_models") or [])
        choice = catalogue.choose(loaded, voice.name if voice else None, voice.language if voice else None)
        segment = Segment(text=text, model=choice.model, language_id=choice.language, voice=choice.voice)
        if not is_ssml(text):
            return SynthesisRequest(segments=(segment,), output=OUTPUT, transport=TRANSPORT)
        # Wyoming has no speed control: <prosody rate> is read past.
        segments, _rate = ssml_segments(text, segment)
        return SynthesisRequest(segments=segments, output=OUTPUT, transport=TRANSPORT, scripted=True)

    async def error(self, status: int, message: str) -> None:
        """Wyoming errors carry a text and a code; the code is the HTTP API's status for the same problem."""
        await self.write_event(Error(text=message, code=str(status)).event())
