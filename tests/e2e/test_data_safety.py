"""Data safety of the voice folder (issue 13.4), with the real adapter process: a crash mid-upload
leaves nothing behind after restart, a full disk answers 507 with no partial file, and concurrent
changes of the default voice leave one valid value. Uploads never reach the predictor, so the
sine-wave double stands in for it."""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from adapter.voice_library import DEFAULT_FILE, TEMP_PREFIX
from tests.support.servers import make_audio, start_adapter, start_fake_predictor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    server = start_fake_predictor(tmp_path_factory.mktemp("voices"), tmp_path_factory.mktemp("logs"))
    yield server
    server.stop()


def _multipart(filename: str, data: bytes) -> tuple[bytes, bytes, str]:
    """(head, tail, content type) around the file bytes of a one-file multipart body."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    return head, f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _upload_slowly(port: int, data: bytes, pieces: int, pause_s: float, stop_after: int | None = None):
    """Send an upload in `pieces`, pausing between them; stop after `stop_after` pieces (a crash
    mid-upload is then the server's to handle). Returns the open connection."""
    head, tail, content_type = _multipart("big.wav", data)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.putrequest("POST", "/api/voices/upload")
    conn.putheader("Content-Type", content_type)
    conn.putheader("Content-Length", str(len(head) + len(data) + len(tail)))
    conn.endheaders()
    conn.send(head)
    step = -(-len(data) // pieces)
    for index in range(pieces):
        if stop_after is not None and index == stop_after:
            return conn
        conn.send(data[index * step : (index + 1) * step])
        time.sleep(pause_s)
    conn.send(tail)
    return conn


def _leftovers(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.startswith(TEMP_PREFIX))


@pytest.mark.parametrize("when", ["mid-body", "copying-into-the-folder"])
def test_kill_9_during_a_15_mb_upload_leaves_no_file_after_restart(fake, tmp_path, when):
    voices = tmp_path / "voices"
    voices.mkdir()
    before = sorted(os.listdir(voices))
    big = make_audio(320.0, rate=24000)  # 15.4 MB of WAV
    assert len(big) > 15_000_000
    adapter = start_adapter(fake.url, voices, tmp_path)
    try:
        if when == "mid-body":
            conn = _upload_slowly(adapter.port, big, pieces=40, pause_s=0.02, stop_after=20)
        else:
            conn = _upload_slowly(adapter.port, big, pieces=40, pause_s=0.0)
            # Kill it while the received file is being copied into VOICES_DIR (its temp file exists).
            deadline = time.monotonic() + 30
            while not _leftovers(voices):
                assert time.monotonic() < deadline, "the upload never reached VOICES_DIR"
                time.sleep(0.001)
        adapter.popen.kill()
        adapter.popen.wait(10)
        conn.close()
        restarted = start_adapter(fake.url, voices, tmp_path)
        try:
            listed = requests.get(f"{restarted.url}/api/voices").json()["voices"]
            assert [v["name"] for v in listed] == []
            assert _leftovers(voices) == [] and sorted(os.listdir(voices)) == before
        finally:
            restarted.stop()
    finally:
        adapter.stop()


def test_start_up_removes_only_temp_files_that_no_process_holds(fake, tmp_path):
    voices = tmp_path / "voices"
    voices.mkdir()
    (voices / f"{TEMP_PREFIX}crashed.tmp.wav").write_bytes(b"RIFF" + bytes(1000))
    held = voices / f"{TEMP_PREFIX}in-use.tmp.wav"
    held.write_bytes(b"RIFF" + bytes(1000))
    # Another replica still writing: it holds the flock (a child process, as another pod would).
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(60)",
            str(held),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"locked"
        adapter = start_adapter(fake.url, voices, tmp_path)
        try:
            assert requests.get(f"{adapter.url}/api/voices").status_code == 200
            assert _leftovers(voices) == [held.name]
        finally:
            adapter.stop()
    finally:
        holder.kill()
        holder.wait()
    with open(held) as handle:  # and the lock really was the holder's, now released
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mount_point = tmp_path / "voices"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip()}); tests/unit covers ENOSPC")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_answers_507_and_leaves_no_partial_file(fake, tmp_path, tiny_tmpfs):
    adapter = start_adapter(fake.url, tiny_tmpfs, tmp_path)
    try:
        too_big = make_audio(40.0, rate=24000)  # 1.9 MB: more than the 1 MiB volume holds
        response = requests.post(f"{adapter.url}/api/voices/upload", files={"file": ("big.wav", too_big)})
        assert response.status_code == 507, response.text
        assert "space" in response.json()["error"]["message"]
        assert os.listdir(tiny_tmpfs) == []
        response = requests.post(f"{adapter.url}/api/voices/upload", files={"file": ("small.wav", make_audio(3.0))})
        assert response.status_code == 201, response.text
        assert os.listdir(tiny_tmpfs) == ["small.wav"]
    finally:
        adapter.stop()


def test_twenty_parallel_default_voice_changes_leave_one_valid_value(fake, tmp_path):
    voices = tmp_path / "voices"
    voices.mkdir()
    names = [f"voice{i:02d}.wav" for i in range(20)]
    for i, name in enumerate(names):
        (voices / name).write_bytes(make_audio(2.5, freq=150.0 + 10 * i))
    adapter = start_adapter(fake.url, voices, tmp_path)
    try:
        for _ in range(3):
            with ThreadPoolExecutor(20) as pool:
                answers = list(
                    pool.map(
                        lambda name: requests.post(f"{adapter.url}/api/voice/default", json={"voice_path": name}),
                        names,
                    )
                )
            assert [a.status_code for a in answers] == [200] * 20
            current = requests.get(f"{adapter.url}/api/voice/default").json()
            assert current["voice_path"] in names and current["source"] == "api"
            stored = json.loads((voices / DEFAULT_FILE).read_text())
            assert stored == {"voice_path": current["voice_path"]}
            assert _leftovers(voices) == []
    finally:
        adapter.stop()
