"""Call a running adapter's OpenAI-compatible API with the official `openai` SDK and print a transcript:
each call as written, what came back, and what an independent decoder makes of it.

    python -m scripts.openai_demo --base-url http://localhost:8081/v1 [--api-key TOKEN] [--voice alloy]

The first call asks for raw pcm with a fixed seed: that is what was generated. The other formats ask
for the same seed, so they must decode to the same duration (within a codec frame, plus the start
delay a streamed mp3 or ADTS stream cannot signal; see tests/support/decoding.py)."""

from __future__ import annotations

import argparse
import base64
import json
import time
from typing import Literal

import openai

from tests.support.decoding import assert_duration, decode

AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav"]  # the SDK takes only these literals
FORMATS: tuple[AudioFormat, ...] = ("mp3", "opus", "aac", "flac", "wav")
STREAMED_FORMATS: tuple[AudioFormat, ...] = ("mp3", "opus")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://localhost:8081/v1")
    parser.add_argument("--api-key", default="unused")
    parser.add_argument("--model", default="tts-1")
    parser.add_argument("--voice", default="alloy")
    parser.add_argument("--text", default="Hello from Chatterbox, through the OpenAI SDK.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-new-tokens", type=int, help="cap speech tokens (random weights rarely stop)")
    args = parser.parse_args()

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=600)
    same = {"seed": args.seed} | ({"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {})
    call = f"model={args.model!r}, voice={args.voice!r}, input={args.text!r}"
    print(f"openai {openai.__version__}, base_url {args.base_url}")
    print(f">>> client.models.list() -> {[m.id for m in client.models.list().data]}")

    pcm = client.audio.speech.create(
        model=args.model, voice=args.voice, input=args.text, response_format="pcm", extra_body=same
    ).read()
    generated = len(pcm) / 2 / 24000
    print(f">>> client.audio.speech.create({call}, response_format='pcm', extra_body={same})")
    print(f"    {len(pcm)} bytes = {generated:.3f} s generated (24 kHz s16le mono)")

    print(f"{'format':7} {'bytes':>7} {'content starts':16} {'decoded by':22} {'decoded s':>9} {'minus generated':>15}")
    for fmt in FORMATS:
        response = client.audio.speech.create(
            model=args.model, voice=args.voice, input=args.text, response_format=fmt, extra_body=same
        )
        data = response.read()
        samples, rate = decode(data, fmt)
        difference = assert_duration(len(samples), rate, generated, fmt, streamed=fmt != "flac")
        decoder = "PyAV (FFmpeg aac)" if fmt == "aac" else "soundfile (libsndfile)"
        print(f"{fmt:7} {len(data):>7} {data[:4]!r:16} {decoder:22} {len(samples) / rate:>9.3f} {difference:>+15.3f}")

    for fmt in STREAMED_FORMATS:
        print(
            f">>> with client.audio.speech.with_streaming_response.create({call}, response_format={fmt!r}) as r: "
            "r.iter_bytes()"
        )
        started = time.monotonic()
        first_at, pieces, data = None, 0, b""
        with client.audio.speech.with_streaming_response.create(
            model=args.model, voice=args.voice, input=args.text, response_format=fmt, extra_body=same
        ) as r:
            for piece in r.iter_bytes():
                first_at = first_at or time.monotonic() - started
                pieces += 1
                data += piece
        total = time.monotonic() - started
        samples, rate = decode(data, fmt)
        print(
            f"    first bytes after {first_at:.2f} s, last after {total:.2f} s, {pieces} reads, "
            f"{len(data)} bytes, decoded {len(samples) / rate:.3f} s"
        )

    print(f">>> with client.audio.speech.with_streaming_response.create({call}, stream_format='sse') as r: ...")
    with client.audio.speech.with_streaming_response.create(
        model=args.model, voice=args.voice, input=args.text, stream_format="sse", extra_body=same
    ) as r:
        events = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    samples, rate = decode(audio, "mp3")
    print(
        f"    {len(events) - 1} speech.audio.delta events, decoded {len(samples) / rate:.3f} s; "
        f"then {json.dumps(events[-1])}"
    )

    print(f">>> client.audio.speech.create(model='tts-2', voice={args.voice!r}, input='hi')")
    try:
        client.audio.speech.create(model="tts-2", voice=args.voice, input="hi")
    except openai.BadRequestError as exc:
        print(f"    openai.BadRequestError: {exc.message}")
    print(f">>> client.audio.speech.create(model={args.model!r}, voice={args.voice!r}, input='hi', speed=5)")
    try:
        client.audio.speech.create(model=args.model, voice=args.voice, input="hi", speed=5)
    except openai.BadRequestError as exc:
        print(f"    openai.BadRequestError: {exc.message} (param={exc.param})")


if __name__ == "__main__":
    main()
