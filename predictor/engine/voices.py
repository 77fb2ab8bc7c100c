"""Voice conditionals: prepared once per (variant, reference audio content), cached, never stored on the model.

Upstream's prepare_conditionals() writes its result to `model.conds`; the engine runs it under the
variant's model lock, takes the result and puts the previous value back, so shared model state is
left exactly as it was. Requests then carry their own conditionals.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import soundfile

from contract.voice_paths import VoicePathError, resolve_voice_path

logger = logging.getLogger(__name__)

# Test-only: the negative control of the soak (scripts/soak.py), which must show that it catches a leak.
# "1" turns the cache into the leak reported upstream (resemble-ai/chatterbox #205, #218: voices pinned
# in memory): no prepared voice is ever evicted, and every request's reference audio is kept. Never set it
# in a deployment.
LEAK_VOICES_SWITCH = "CHATTERBOX_TEST_LEAK_VOICES"


class VoiceError(ValueError):
    """A reference voice that cannot be used (not audio, too short, not found); the message says why."""

    def __init__(self, message: str, *, not_found: bool = False):
        super().__init__(message)
        self.not_found = not_found


@dataclass(frozen=True)
class VoiceSource:
    """Where a request's voice comes from: file bytes (from the voice folder or uploaded) or the built-in voice."""

    content: bytes | None
    label: str

    @property
    def is_builtin(self) -> bool:
        return self.content is None

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.content).hexdigest() if self.content is not None else "builtin"


BUILTIN_VOICE = VoiceSource(content=None, label="built-in")


def voice_from_folder(voices_dir: str, name: str) -> VoiceSource:
    try:
        path = resolve_voice_path(voices_dir, name)
    except VoicePathError as exc:
        raise VoiceError(str(exc), not_found=exc.not_found) from None
    return VoiceSource(content=path.read_bytes(), label=name)


def voice_from_bytes(content: bytes) -> VoiceSource:
    if not content:
        raise VoiceError("audio_prompt is empty")
    return VoiceSource(content=content, label="audio_prompt")


def reference_duration(content: bytes) -> float:
    """Decode just enough to know the file is audio and how long it is (the model decodes it again)."""
    import io

    try:
        info = soundfile.info(io.BytesIO(content))
        return info.frames / float(info.samplerate)
    except Exception:
        pass
    # MP3 and other formats libsndfile may not know: fall back to librosa's decoders.
    import librosa

    with _temporary_file(content) as path:
        try:
            return float(librosa.get_duration(path=path))
        except Exception:
            raise VoiceError("the reference voice is not a readable audio file (WAV, MP3 or FLAC)") from None


class _temporary_file:
    """Upstream loads references by path, so uploaded bytes go through a private temporary file."""

    def __init__(self, content: bytes):
        self._content = content

    def __enter__(self) -> str:
        fd, self._path = tempfile.mkstemp(prefix="chatterbox-voice-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(self._content)
        return self._path

    def __exit__(self, *exc) -> None:
        Path(self._path).unlink(missing_ok=True)


class ConditionalsCache:
    """A bounded LRU of prepared conditionals, keyed by variant and reference content."""

    def __init__(self, capacity: int, on_lookup: Callable[[str, bool], None] | None = None):
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str], object] = OrderedDict()
        self._lock = threading.Lock()
        self._on_lookup = on_lookup
        self._leak = os.environ.get(LEAK_VOICES_SWITCH) == "1"
        self._pinned: list[VoiceSource] = []  # only with the leak switch
        if self._leak:
            logger.warning("%s=1: every voice is kept in memory (a test-only leak)", LEAK_VOICES_SWITCH)

    def get_or_prepare(self, variant: str, voice: VoiceSource, prepare: Callable[[str], object]) -> object:
        key = (variant, voice.digest)
        with self._lock:
            if self._leak:
                self._pinned.append(voice)
            if key in self._entries:
                self._entries.move_to_end(key)
                self._report(variant, True)
                return self._entries[key]
        self._report(variant, False)
        assert voice.content is not None, "the built-in voice is never prepared"
        with _temporary_file(voice.content) as path:
            conds = prepare(path)
        with self._lock:
            self._entries[key] = conds
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity and not self._leak:
                self._entries.popitem(last=False)
        return conds

    def _report(self, variant: str, hit: bool) -> None:
        if self._on_lookup is not None:
            self._on_lookup(variant, hit)
