"""The voice folder's writer under faults: a full disk (fault-injected, for machines where a tiny
tmpfs cannot be mounted: tests/e2e/test_data_safety.py mounts one) and temp files left by a crash."""

from __future__ import annotations

import errno
import fcntl
import io
import os

import pytest

from adapter import voice_library
from adapter.errors import APIError
from adapter.voice_library import DEFAULT_FILE, TEMP_PREFIX, VoiceLibrary, remove_stale_temps
from tests.support.servers import make_audio


def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("writer", ["copyfileobj", "fsync"])
def test_a_full_disk_during_upload_is_507_and_leaves_nothing(tmp_path, monkeypatch, writer):
    library = VoiceLibrary(str(tmp_path), None, 2.0, 60.0)
    target = voice_library.shutil if writer == "copyfileobj" else voice_library.os
    monkeypatch.setattr(target, writer, _full_disk)
    with pytest.raises(APIError) as refused:
        library.store_upload(io.BytesIO(make_audio(3.0)), "alice.wav", overwrite=False)
    assert refused.value.status == 507 and "space" in refused.value.message
    assert os.listdir(tmp_path) == []


def test_a_full_disk_when_setting_the_default_voice_is_507_and_keeps_the_old_one(tmp_path, monkeypatch):
    (tmp_path / "alice.wav").write_bytes(make_audio(3.0))
    (tmp_path / "bob.wav").write_bytes(make_audio(3.0))
    library = VoiceLibrary(str(tmp_path), None, 2.0, 60.0)
    library.set_default("alice.wav")
    monkeypatch.setattr(voice_library.os, "fsync", _full_disk)
    with pytest.raises(APIError) as refused:
        library.set_default("bob.wav")
    assert refused.value.status == 507
    assert library.default() == ("alice.wav", "api")
    assert sorted(os.listdir(tmp_path)) == [DEFAULT_FILE, "alice.wav", "bob.wav"]


def test_other_write_errors_are_not_reported_as_a_full_disk(tmp_path, monkeypatch):
    library = VoiceLibrary(str(tmp_path), None, 2.0, 60.0)
    monkeypatch.setattr(
        voice_library.shutil, "copyfileobj", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error"))
    )
    with pytest.raises(OSError) as failed:
        library.store_upload(io.BytesIO(make_audio(3.0)), "alice.wav", overwrite=False)
    assert failed.value.errno == errno.EIO
    assert os.listdir(tmp_path) == []


def test_stale_temps_are_removed_and_held_ones_kept(tmp_path):
    stale = tmp_path / f"{TEMP_PREFIX}abc.tmp.wav"
    held = tmp_path / f"{TEMP_PREFIX}def.tmp.wav"
    voice = tmp_path / "alice.wav"
    for path in (stale, held, voice):
        path.write_bytes(b"x")
    with open(held) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a writer at work (flock conflicts across open files)
        assert remove_stale_temps(tmp_path) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([held.name, voice.name])
    assert remove_stale_temps(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == [voice.name]


def test_a_temp_file_is_locked_while_it_exists(tmp_path):
    with voice_library.write_temp(tmp_path, b"data") as tmp:
        assert remove_stale_temps(tmp_path) == 0 and tmp.exists()
    assert list(tmp_path.iterdir()) == []
