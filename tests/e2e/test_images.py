"""The container images, built and run as the chart runs them.

`make images` (scripts/images.sh) builds the adapter, CPU predictor and CUDA predictor images; the build
starts in the background when pytest collects this module (tests/support/image_build.py), and the first
fixture waits for it. Then, with tests/support/oci.py (buildah + runc; there is no Docker engine here):
- the CPU predictor and the adapter each in its own network namespace, with the chart's command, env,
  user, read-only root file system, no capabilities, /tmp as an emptyDir, the voices volume (read-only in
  the predictor, written by the adapter), random weights at /mnt/models (where KServe's storage
  initializer puts them) and the cache volume at /cache; the adapter reaches the predictor at its address;
- one synthesis through POST /api/tts, one WebSocket `say`, one voice upload then a synthesis with it,
  /metrics from both, and SIGTERM stopping both;
- the CUDA image (no GPU here): its Python imports the predictor and torch reports its CUDA build.
Root only: skipped elsewhere unless CHATTERBOX_REQUIRE_IMAGES=1 (make test sets it), which fails instead.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import requests
import soundfile as sf
import websockets

from scripts.random_weights import write_reference_wav
from tests.support import chart_render as cr
from tests.support import image_build, oci
from tests.support.image_build import BUILD_LOG

pytestmark = pytest.mark.slow
REQUIRED = os.environ.get("CHATTERBOX_REQUIRE_IMAGES") == "1"


def _unavailable(reason: str):
    if REQUIRED:
        pytest.fail(f"CHATTERBOX_REQUIRE_IMAGES=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    """`make images`, then name -> tag. CHATTERBOX_IMAGES_PREBUILT=1 skips the build (images already made)."""
    if os.geteuid() != 0:
        _unavailable("building and running images here needs root (buildah, runc, network namespaces)")
    if image_build.wanted():
        returncode, elapsed = image_build.start().wait()  # started at collection (conftest.py)
        tail = BUILD_LOG.read_text(errors="replace")[-6000:]
        assert returncode == 0, f"make images failed after {elapsed:.0f} s ({BUILD_LOG}):\n{tail}"
        print(
            f"\nmake images: {elapsed:.0f} s (in the background since collection)\n" + "\n".join(tail.splitlines()[-4:])
        )
    for tool in ("buildah", "runc", "ip"):
        if not shutil.which(tool):
            _unavailable(f"{tool} is not installed (make images installs it)")
    tags = oci.image_tags()
    tags.pop("base")
    missing = [tag for tag in tags.values() if not oci.image_exists(tag)]
    assert not missing, f"not built: {missing}"
    return tags


def _render(values_file: str, **values) -> tuple[dict[str, dict], dict[str, dict]]:
    objects = cr.render([values_file], values)
    pods = cr.pod_templates(objects)
    return cr.pod_specs(objects), {name: spec.get("securityContext", {}) for name, spec in pods.items()}


@pytest.fixture(scope="module")
def pods():
    network = oci.Pods()
    yield network
    network.close()


@pytest.fixture(scope="module")
def volumes(tmp_path_factory, weights_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("image-volumes")
    root.chmod(0o755)
    voices = oci.owned_dir(root / "voices")
    write_reference_wav(voices / "alice.wav", seconds=6.0, seed=1)
    shutil.chown(voices / "alice.wav", 1000, 1000)
    return {"voices": voices, "cache": oci.owned_dir(root / "cache"), "models": weights_dir, "logs": root}


@pytest.fixture(scope="module")
def running(images, pods, volumes):
    """The CPU predictor and the adapter, as the chart with values-cpu.yaml runs them (turbo only, the
    quickest variant to load; weights from /mnt/models as with `models.source: storageUri`)."""
    containers, security = _render(
        "values-cpu.yaml",
        **{
            "models.source": "storageUri",
            "predictor.loadStandard": False,
            "predictor.loadTurbo": True,
            "adapter.predictorUrl": f"http://{pods.link_ip['predictor']}:8080",
        },
    )
    started = []
    try:
        predictor = oci.Container(
            images["predictor"],
            containers["predictor"],
            security["predictor"],
            pods.netns_path("predictor"),
            mounts={
                "/mnt/models": (volumes["models"], True),
                "/cache": (volumes["cache"], False),
                "/app/voices": (volumes["voices"], True),
            },
            env={"HF_HUB_OFFLINE": "1"},  # nothing to download: the weights are all in /mnt/models
            log_dir=volumes["logs"],
        )
        started.append(predictor)
        adapter = oci.Container(
            images["adapter"],
            containers["adapter"],
            security["adapter"],
            pods.netns_path("adapter"),
            mounts={"/app/voices": (volumes["voices"], False)},
            log_dir=volumes["logs"],
        )
        started.append(adapter)
        predictor.url = f"http://{pods.ip['predictor']}:8080"
        adapter.url = f"http://{pods.ip['adapter']}:8081"
        predictor.wait_http(f"{predictor.url}/v2/health/ready", timeout=900)
        adapter.wait_http(f"{adapter.url}/health", timeout=120)
        yield {"predictor": predictor, "adapter": adapter, "containers": containers, "pods": pods}
    finally:
        for container in reversed(started):
            if container.alive():
                container.stop()
            else:
                container._remove()


def _status(container: oci.Container) -> dict[str, str]:
    pid = json.loads(oci.run("runc", "state", container.name).stdout)["pid"]
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_the_containers_run_as_the_chart_says(running):
    for name in ("predictor", "adapter"):
        container, chart = running[name], running["containers"][name]
        spec = json.loads((container.workdir / "config.json").read_text())
        assert spec["process"]["args"] == cr.container_command(chart)
        assert spec["root"]["readonly"] is chart["securityContext"]["readOnlyRootFilesystem"] is True
        status = _status(container)
        assert status["Uid"].split()[:2] == ["1000", "1000"] and status["Gid"].split()[:2] == ["1000", "1000"]
        assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"].strip() == "1", status
    health = requests.get(f"{running['adapter'].url}/health", timeout=10).json()
    assert health["status"] == "healthy" and health["loaded_models"] == ["turbo"] and health["device"] == "cpu"


def test_synthesis_through_the_adapter(running):
    body = {
        "text": "Hello from the images.",
        "model": "turbo",
        "voice": {"audio_prompt_path": "alice.wav", "seed": 3, "max_new_tokens": 8},
    }
    response = requests.post(f"{running['adapter'].url}/api/tts", json=body, timeout=600)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("audio/wav")
    audio, rate = sf.read(io.BytesIO(response.content))
    assert rate == 24000 and len(audio) > 0


def test_websocket_say(running):
    async def session():
        async with websockets.connect(f"ws://{running['adapter'].url.split('://')[1]}/ws/tts") as ws:
            ready = json.loads(await ws.recv())
            assert ready["type"] == "ready" and ready["device"] == "cpu", ready
            say = {
                "type": "say",
                "id": "r1",
                "text": "Streaming from a container.",
                "model": "turbo",
                "voice": {"seed": 2, "max_new_tokens": 6},
                "audio": {"format": "pcm_s16le", "sample_rate": 24000, "chunk_size_ms": 40},
            }
            await ws.send(json.dumps(say))
            chunks = []
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 600))
                if msg["type"] == "done":
                    return chunks, msg
                assert msg["type"] == "chunk", msg
                chunks.append(base64.b64decode(msg["data"]))

    chunks, done = asyncio.run(session())
    assert chunks and sum(map(len, chunks)) > 0 and done["id"] == "r1"


def test_voice_upload_reaches_the_predictor(running, volumes):
    """The adapter (uid 1000) writes the upload into the voices volume; the predictor reads it through its
    read-only mount of the same volume."""
    source = volumes["logs"] / "carol-source.wav"
    write_reference_wav(source, seconds=6.0, seed=9)
    adapter = running["adapter"].url
    with open(source, "rb") as handle:
        uploaded = requests.post(
            f"{adapter}/api/voices/upload", files={"file": ("carol.wav", handle, "audio/wav")}, timeout=60
        )
    assert uploaded.status_code == 201, uploaded.text
    stored = volumes["voices"] / "carol.wav"
    assert stored.exists() and stored.stat().st_uid == 1000
    body = {
        "text": "With the uploaded voice.",
        "model": "turbo",
        "voice": {"audio_prompt_path": "carol.wav", "seed": 4, "max_new_tokens": 4},
        "audio": {"format": "pcm"},
    }
    response = requests.post(f"{adapter}/api/tts", json=body, timeout=600)
    assert response.status_code == 200 and len(response.content) > 0, response.text


def test_metrics_from_both(running):
    adapter = requests.get(f"{running['adapter'].url}/metrics", timeout=10)
    predictor = requests.get(f"{running['predictor'].url}/metrics", timeout=10)
    assert adapter.status_code == 200 and predictor.status_code == 200
    assert "adapter_time_to_first_audio_seconds_bucket" in adapter.text
    assert "chatterbox_time_to_first_audio_seconds_bucket" in predictor.text


def test_the_predictor_answers_grpc_on_the_charts_port(running):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=f"{running['pods'].ip['predictor']}:8081")
    try:
        assert client.is_server_live() and client.is_model_ready("turbo")
    finally:
        client.close()


def test_sigterm_stops_both(running):
    """The images' commands run as PID 1 of their containers: SIGTERM must still stop them (drained, exit 0)."""
    for name in ("adapter", "predictor"):
        container = running[name]
        oci.run("runc", "kill", container.name, "TERM")
        assert container.wait(timeout=120) == 0, container.log()[-4000:]


def _run_once(image: str, values_file: str, component: str, args: list[str], volumes: dict[str, Path]) -> str:
    """`args` in a container of `image` set up as the chart's `component` (no network), to its exit."""
    containers, security = _render(values_file)
    mounts = {"/app/voices": (volumes["voices"], component == "predictor")}
    if component == "predictor":
        mounts |= {"/mnt/models": (volumes["models"], True), "/cache": (volumes["cache"], False)}
    container = oci.Container(
        image, containers[component], security[component], None, mounts, args=args, log_dir=volumes["logs"]
    )
    try:
        code = container.wait(timeout=300)
        assert code == 0, container.log()[-4000:]
        return container.log()
    finally:
        container.stop()


def test_the_cuda_image_imports_the_predictor_and_its_torch_is_a_cuda_build(images, volumes):
    probe = (
        "import predictor.model, predictor.service, torch, torchaudio, kserve, chatterbox.tts_turbo; "
        "print('cuda', torch.version.cuda, torch.cuda.is_available())"
    )
    out = _run_once(images["predictor-cuda"], "values-gpu.yaml", "predictor", ["python", "-c", probe], volumes)
    assert "cuda 12.4 False" in out, out  # CUDA 12.4 build; no GPU here


def test_the_adapter_image_has_no_torch(images, volumes):
    probe = "import importlib.util, adapter.app; print('torch', importlib.util.find_spec('torch'))"
    out = _run_once(images["adapter"], "values-cpu.yaml", "adapter", ["python", "-c", probe], volumes)
    assert "torch None" in out, out
