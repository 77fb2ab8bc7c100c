"""Safe resolution of user-supplied voice names inside the voice folder.

Shared by the predictor and the adapter, so both refuse the same names
with the same words. The refusal never says whether the outside file exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from .text import unpaired_surrogate_message

AUDIO_SUFFIXES = (".wav", ".mp3", ".flac")


class VoicePathError(ValueError):
    """A voice name that is not a file inside the voice folder (or does not exist there)."""

    def __init__(self, message: str, *, not_found: bool = False):
        super().__init__(message)
        self.not_found = not_found


def resolve_voice_path(voices_dir: str | os.PathLike, name: str, *, must_exist: bool = True) -> Path:
    """Return the real path of `name` inside `voices_dir`.

    `name` is a file name relative to the folder, or an absolute path that lies inside it. Symlinks
    are resolved before the containment check, so a link that leaves the folder is refused.
    """
    if not isinstance(name, str) or not name.strip():
        raise VoicePathError("voice name must be a non-empty string")
    if "\x00" in name:
        raise VoicePathError("voice name contains a NUL character")
    bad_text = unpaired_surrogate_message("voice name", name)
    if bad_text:
        raise VoicePathError(bad_text)
    root = Path(voices_dir).resolve()
    candidate = Path(name)
    if not candidate.is_absolute():
        candidate = root / candidate
    resolved = candidate.resolve()
    if resolved == root or root not in resolved.parents:
        raise VoicePathError(f"voice '{name}' is not inside the voice folder")
    if must_exist and not resolved.is_file():
        raise VoicePathError(f"voice '{name}' was not found in the voice folder", not_found=True)
    return resolved


def safe_voice_filename(name: str) -> str:
    """Reduce an uploaded file name to a plain, safe name inside the voice folder (or raise)."""
    bad_text = unpaired_surrogate_message("file name", name)
    if bad_text:
        raise VoicePathError(bad_text)
    base = os.path.basename(name.replace("\\", "/")).strip()
    cleaned = "".join(ch if ch.isalnum() or ch in "._- " else "_" for ch in base).strip(" .")
    stem, dot, suffix = cleaned.rpartition(".")
    if not dot or not stem:
        raise VoicePathError(f"file name '{name}' needs one of the suffixes {', '.join(AUDIO_SUFFIXES)}")
    if f".{suffix.lower()}" not in AUDIO_SUFFIXES:
        raise VoicePathError(f"file name '{name}' must end in one of {', '.join(AUDIO_SUFFIXES)}")
    if len(cleaned) > 200:
        raise VoicePathError("file name is longer than 200 characters")
    return f"{stem}.{suffix.lower()}"
