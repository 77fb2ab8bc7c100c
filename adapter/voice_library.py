"""The shared voice folder: name resolution, listing, uploads and the persisted default voice.

Every adapter replica mounts the same VOICES_DIR, so all shared state (voice files and the default
voice) lives there and is re-read when it changes; nothing is kept only in one process.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import soundfile as sf

from adapter.errors import APIError
from contract.variants import TURBO_MIN_REFERENCE_SECONDS
from contract.voice_paths import AUDIO_SUFFIXES, VoicePathError, resolve_voice_path, safe_voice_filename

log = logging.getLogger("adapter.voices")

DEFAULT_FILE = ".default_voice.json"


@dataclass(frozen=True)
class AudioProbe:
    format: str
    duration_seconds: float
    sample_rate: int
    channels: int


def probe_audio(path: Path, *, full_decode: bool, stop_after_s: float = float("inf")) -> AudioProbe:
    """Describe an audio file; raises ValueError when it does not decode as audio.

    full_decode reads every frame: headers alone can lie (truncated or forged files). It stops
    past `stop_after_s`, so a small, highly compressed upload cannot keep a thread decoding hours.
    """
    try:
        with sf.SoundFile(str(path)) as f:
            frames = 0
            if full_decode:
                limit = stop_after_s * f.samplerate
                for block in f.blocks(blocksize=65536, dtype="float32"):
                    frames += len(block)
                    if frames > limit:
                        break
            else:
                frames = f.frames
            if f.samplerate <= 0 or frames <= 0:
                raise ValueError("no audio frames")
            return AudioProbe(f.format.lower(), frames / f.samplerate, f.samplerate, f.channels)
    except (sf.LibsndfileError, RuntimeError, ValueError) as sf_error:
        if path.suffix.lower() != ".mp3":
            raise ValueError(str(sf_error)) from None
    # Older libsndfile builds cannot read MP3; librosa (audioread) may still manage.
    import librosa  # imported lazily: it is slow to import and rarely needed

    try:
        samples, rate = librosa.load(str(path), sr=None, mono=False)
    except Exception as exc:  # librosa raises many kinds for undecodable input
        raise ValueError(str(exc)) from None
    channels = 1 if samples.ndim == 1 else samples.shape[0]
    frames = samples.shape[-1]
    if frames == 0:
        raise ValueError("no audio frames")
    return AudioProbe("mp3", frames / rate, int(rate), channels)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


TEMP_PREFIX = ".upload-"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def write_temp(folder: Path, source: BinaryIO | bytes, suffix: str = ".tmp") -> Iterator[Path]:
    """A hidden, fsynced temp file in `folder`, to publish with os.replace/os.link inside the block;
    whatever is left of it is removed on the way out.

    Hidden so that listings never show it; in `folder` so that publishing is a same-filesystem,
    atomic rename. It is flock()ed while it exists, which tells remove_stale_temps (another process
    starting on the same folder) that it is in use; a process killed mid-write leaves it unlocked.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=folder)
    except OSError as exc:
        raise _storage_error(exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(fd, "wb", closefd=False) as out:
            if isinstance(source, bytes):
                out.write(source)
            else:
                shutil.copyfileobj(source, out, 1024 * 1024)
            out.flush()
            # mkstemp makes 0600 files; the predictor (maybe another user) must be able to read them.
            os.fchmod(out.fileno(), 0o644)
            os.fsync(out.fileno())
        yield Path(tmp)
    except OSError as exc:
        raise _storage_error(exc) from None
    finally:
        with suppress(FileNotFoundError):  # gone already once published with os.replace
            os.unlink(tmp)
        os.close(fd)


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in _DISK_FULL:
        log.error("VOICES_DIR is full: %s", exc)
        return APIError(507, "not enough space left in the voice folder (VOICES_DIR) to store this file")
    return exc


def remove_stale_temps(folder: Path) -> int:
    """Delete temp files that no live process holds (left by a crash mid-upload); returns how many."""
    removed = 0
    for path in folder.glob(TEMP_PREFIX + "*"):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a writer holds it
        else:
            with suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        finally:
            os.close(fd)
    if removed:
        log.warning("removed %d temp file(s) left in %s by an interrupted upload", removed, folder)
    return removed


# soundfile's format names for the containers the predictor accepts.
_ACCEPTED_FORMATS = {"wav": ".wav", "wavex": ".wav", "flac": ".flac", "mp3": ".mp3"}


class VoiceLibrary:
    def __init__(self, voices_dir: str, env_default: str | None, min_seconds: float, max_seconds: float):
        self.root = Path(voices_dir).resolve()
        self._given_root = Path(os.path.normpath(Path(voices_dir).absolute()))
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("cannot create VOICES_DIR %s: %s", self.root, exc)
        if self.root.is_dir():
            remove_stale_temps(self.root)
        self.min_seconds = min_seconds
        self.max_seconds = max_seconds
        self._probe_cache: dict[str, tuple[tuple, AudioProbe | None]] = {}
        self._default_cache: tuple[tuple, str | None, bool] | None = None
        self.env_default = self._normalise_env_default(env_default)

    # --- names -----------------------------------------------------------------------------

    def _normalise_env_default(self, name: str | None) -> str | None:
        if not name:
            return None
        try:
            path = resolve_voice_path(self.root, name, must_exist=False)
        except VoicePathError as exc:
            raise ValueError(f"DEFAULT_VOICE: {exc}") from None
        if not path.is_file():
            log.warning("DEFAULT_VOICE %r does not exist (yet) in %s", name, self.root)
        return self._relative_name(name, path)

    def resolve(self, name: str) -> str:
        """The voice's name relative to VOICES_DIR (what the predictor gets), or an APIError.

        Names outside the folder get one message whether or not the file exists, so the API
        cannot be used to probe the adapter's file system.
        """
        try:
            path = resolve_voice_path(self.root, name, must_exist=False)
        except VoicePathError as exc:
            raise APIError(400, str(exc)) from None
        relative = self._relative_name(name, path)
        if (
            any(part.startswith(".") for part in relative.split("/"))
            or Path(relative).suffix.lower() not in AUDIO_SUFFIXES
        ):
            raise APIError(400, f"voice '{name}' is not a voice file (expected {', '.join(AUDIO_SUFFIXES)})")
        if not path.is_file():
            raise APIError(404, f"voice '{name}' was not found in the voice folder")
        return relative

    def resolve_named(self, name: str) -> str:
        """A voice named with or without its extension (SSML's <voice name>, OpenAI's `voice`):
        `alice` is alice.wav, alice.mp3 or alice.flac, the first that exists; else a 404."""
        if Path(name).suffix.lower() in AUDIO_SUFFIXES:
            return self.resolve(name)
        for suffix in AUDIO_SUFFIXES:
            try:
                return self.resolve(name + suffix)
            except APIError as exc:
                if exc.status != 404:
                    raise
        raise APIError(
            404, f"voice '{name}' was not found in the voice folder (with any of {', '.join(AUDIO_SUFFIXES)})"
        )

    def _relative_name(self, name: str, resolved: Path) -> str:
        """The name as the client wrote it, relative to the folder, symlinks not followed.

        Kubernetes ConfigMap/Secret volumes publish files as links into a hidden `..data` folder;
        following them would turn `my_voice.wav` into a hidden path. The predictor resolves the
        name again on its side of the shared volume.
        """
        lexical = Path(os.path.normpath(name))
        candidates = (
            [lexical]
            if not lexical.is_absolute()
            else [lexical.relative_to(base) for base in (self._given_root, self.root) if lexical.is_relative_to(base)]
        )
        for candidate in candidates:
            # normpath drops "x/.." without following links; keep the name only if it still
            # leads to the file that passed the containment check.
            if (self.root / candidate).resolve() == resolved:
                return candidate.as_posix()
        return resolved.relative_to(self.root).as_posix()

    # --- default voice -------------------------------------------------------------------

    def default(self) -> tuple[str | None, str | None]:
        """(voice name or None, source): the API-set default (shared file) wins over DEFAULT_VOICE."""
        persisted, present = self._read_default_file()
        if present:
            return persisted, "api"
        if self.env_default:
            return self.env_default, "env"
        return None, None

    def _read_default_file(self) -> tuple[str | None, bool]:
        path = self.root / DEFAULT_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            self._default_cache = None
            return None, False
        # The inode changes on every os.replace, so another replica's write is always noticed.
        key = (st.st_mtime_ns, st.st_ino, st.st_size)
        if self._default_cache and self._default_cache[0] == key:
            return self._default_cache[1], self._default_cache[2]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            value = data["voice_path"]
            if value is not None and not isinstance(value, str):
                raise ValueError("voice_path is not a string")
            result = (value, True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            result = (None, False)
        self._default_cache = (key, *result)
        return result

    def set_default(self, name: str | None) -> str | None:
        relative = self.resolve(name) if name is not None else None
        payload = json.dumps({"voice_path": relative}).encode()
        with write_temp(self.root, payload) as tmp:
            os.replace(tmp, self.root / DEFAULT_FILE)
        _fsync_dir(self.root)
        return relative

    def voice_for_request(self, requested: str | None, connection_voice: str | None = None) -> str | None:
        """The voice a synthesis uses: request > connection (WebSocket) > default > built-in (None)."""
        if requested:
            return self.resolve(requested)
        if connection_voice:
            return self.resolve(connection_voice)
        name, source = self.default()
        if name is None:
            return None
        try:
            return self.resolve(name)
        except APIError as exc:
            raise APIError(exc.status, f"default voice ({source}): {exc.message}") from None

    # --- listing ---------------------------------------------------------------------------

    def list_voices(self) -> list[dict]:
        voices = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if filename.startswith(".") or Path(filename).suffix.lower() not in AUDIO_SUFFIXES:
                    continue
                full = Path(dirpath) / filename
                try:
                    real = resolve_voice_path(self.root, str(full))
                except VoicePathError:
                    continue  # symlinks that leave the folder are not voices
                voices.append(self._describe(full.relative_to(self.root).as_posix(), real))
        return voices

    def _describe(self, name: str, path: Path) -> dict:
        st = path.stat()
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._probe_cache.get(name)
        if cached and cached[0] == key:
            probe = cached[1]
        else:
            try:
                probe = probe_audio(path, full_decode=False)
            except ValueError:
                probe = None
            self._probe_cache[name] = (key, probe)
        return {
            "name": name,
            "size_bytes": st.st_size,
            "duration_seconds": round(probe.duration_seconds, 3) if probe else None,
            "sample_rate": probe.sample_rate if probe else None,
            "channels": probe.channels if probe else None,
            "turbo_ok": bool(probe and probe.duration_seconds > TURBO_MIN_REFERENCE_SECONDS),
        }

    # --- uploads ---------------------------------------------------------------------------

    def store_upload(self, source: BinaryIO, filename: str, overwrite: bool) -> dict:
        """Validate an uploaded file and publish it atomically; returns its description.

        A name without an audio suffix gets the one matching the decoded content.
        """
        suffix = Path(filename).suffix.lower()
        known_suffix = suffix in AUDIO_SUFFIXES
        if known_suffix:
            name = self._upload_name(filename)
            self._refuse_existing(name, overwrite)
        with write_temp(self.root, source, suffix=".tmp" + (suffix if known_suffix else "")) as tmp:
            try:
                probe = probe_audio(tmp, full_decode=True, stop_after_s=self.max_seconds + 1)
            except ValueError:
                raise APIError(415, "the uploaded file is not decodable audio (WAV, MP3 or FLAC)") from None
            if probe.format not in _ACCEPTED_FORMATS:
                raise APIError(415, f"audio format {probe.format.upper()} is not accepted; use WAV, MP3 or FLAC")
            if not known_suffix:
                name = self._upload_name(filename + _ACCEPTED_FORMATS[probe.format])
                self._refuse_existing(name, overwrite)
            if not self.min_seconds <= probe.duration_seconds <= self.max_seconds:
                raise APIError(
                    422,
                    f"voice duration {probe.duration_seconds:.2f} s is outside the allowed "
                    f"{self.min_seconds:g}-{self.max_seconds:g} s",
                )
            final = self.root / name
            existed = self._publish(tmp, final, overwrite)
        info = self._describe(name, final)
        info.update(overwritten=existed, format=probe.format)
        return info

    @staticmethod
    def _upload_name(filename: str) -> str:
        try:
            return safe_voice_filename(filename)
        except VoicePathError as exc:
            raise APIError(400, str(exc)) from None

    def _refuse_existing(self, name: str, overwrite: bool) -> None:
        if not overwrite and (self.root / name).exists():
            raise APIError(409, f"voice '{name}' already exists; send overwrite=true to replace it")

    def _publish(self, tmp: Path, final: Path, overwrite: bool) -> bool:
        existed = final.exists()
        if overwrite:
            os.replace(tmp, final)
        else:
            # link() never replaces, which closes the race between two uploads of one name.
            try:
                os.link(tmp, final)
            except FileExistsError:
                self._refuse_existing(final.name, overwrite=False)
                raise
            except OSError:  # no hard links on this filesystem
                self._refuse_existing(final.name, overwrite=False)
                os.replace(tmp, final)
        _fsync_dir(self.root)
        return existed
