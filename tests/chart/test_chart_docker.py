"""Dockerfiles, compose files and the adapter's requirements, checked against the chart and the code.

The files are parsed and compared with what the chart renders (the source of truth for commands, ports,
environment names, mount paths and images) and with the environment names the code reads. The images
themselves are built and run by tests/e2e/test_images.py.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import re
import shlex
import sys
import typing
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import chart_render as cr

ROOT = cr.ROOT
DOCKER = ROOT / "docker"
DOCKERFILES = {
    "predictor-cpu": DOCKER / "predictor.Dockerfile",
    "predictor-cuda": DOCKER / "predictor-cuda.Dockerfile",
    "adapter": DOCKER / "adapter.Dockerfile",
}
COMPOSE = {"cpu": ROOT / "docker-compose.yml", "gpu": ROOT / "docker-compose.gpu.yml"}
VALUES = {"cpu": ("values-cpu.yaml",), "gpu": ("values-gpu.yaml",)}

# The environment interface agreed for the two processes (docs/predictor-api.md and the seed's table).
# The chart may only set these; the code check below compares them with what the code reads.
PREDICTOR_ENV = {
    "DEVICE",
    "DTYPE",
    "BATCH_VOCODER",
    "SAMPLER",
    "CUDA_GRAPHS",
    "CUDA_GRAPH_BATCH_CAPACITY",
    "WARM_UP",
    "PROMPT_PREFIX_CACHE_SIZE",
    "LOAD_STANDARD",
    "LOAD_TURBO",
    "LOAD_MULTILINGUAL",
    "MODEL_DIR",
    "HF_HOME",
    "HF_TOKEN",
    "VOICES_DIR",
    "MAX_CONCURRENT_REQUESTS",
    "MAX_TEXT_LENGTH",
    "MAX_NEW_TOKENS",
    "LOG_LEVEL",
    "DRAIN_TIMEOUT_S",
    "STORAGE_URI",
}
ADAPTER_ENV = {
    "HOST",
    "PORT",
    "PREDICTOR_URL",
    "PREDICTOR_TIMEOUT_S",
    "FIRST_CHUNK_TIMEOUT_S",
    "CHUNK_GAP_TIMEOUT_S",
    "VOICES_DIR",
    "DEFAULT_VOICE",
    "API_TOKEN",
    "MAX_CONCURRENT_REQUESTS",
    "MAX_TEXT_LENGTH",
    "MAX_UPLOAD_BYTES",
    "LOG_LEVEL",
    "DRAIN_TIMEOUT_S",
    "INFERENCESERVICE_NAME",
    "WYOMING_PORT",
    "POD_NAMESPACE",
}
# Read by libraries or by KServe's webhook, not by our code.
LIBRARY_ENV = {"HF_HOME", "HF_TOKEN", "STORAGE_URI"}
# Set by the images for a read-only root filesystem (caches under /tmp) and Python's behaviour.
IMAGE_ENV = {
    "PATH",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "NUMBA_CACHE_DIR",
    "XDG_CACHE_HOME",
    "MPLCONFIGDIR",
    "TRITON_CACHE_DIR",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "DEBIAN_FRONTEND",
    "NVIDIA_DRIVER_CAPABILITIES",  # the CUDA image: what the NVIDIA container toolkit mounts (compute, utility)
}
# Rendered only with some values: render once with all of them on, to see every name the chart can set.
FULL = {"apiToken.value": "x", "huggingface.token": "y", "adapter.defaultVoice": "v.wav"}


def chart_pods(files=(), values=None) -> dict[str, dict]:
    return cr.pod_specs(cr.render(files, values or {}))


@pytest.fixture(scope="module")
def charts() -> dict[str, dict[str, dict]]:
    """variant -> component -> container, for cpu/gpu values with every optional env var switched on."""
    return {variant: chart_pods(files, FULL) for variant, files in VALUES.items()}


# ------------------------------------------------------------------------------------ Dockerfiles


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; continuation lines joined, comments dropped."""
    return instructions_of(path.read_text(), str(path))


def instructions_of(text: str, path: str = "<text>") -> list[tuple[str, str]]:
    instructions, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        instructions.append((word.upper(), rest.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return instructions


def final_stage(instructions):
    start = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[start:]


def env_of(instructions) -> dict[str, str]:
    env = {}
    for word, rest in instructions:
        if word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def args_of(instructions) -> dict[str, str]:
    out = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            out[key] = value
    return out


def base_images(instructions) -> list[str]:
    args = args_of(instructions)
    images = []
    for word, rest in instructions:
        if word == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image))
    return images


def cmd_of(instructions) -> list[str]:
    cmd = [rest for word, rest in instructions if word == "CMD"][-1]
    return json.loads(cmd)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_runs_what_the_chart_runs(name, charts):
    instructions = dockerfile(DOCKERFILES[name])
    final = final_stage(instructions)
    component = name.split("-")[0]
    variant = "gpu" if name.endswith("cuda") else "cpu"
    container = charts[variant][component]
    assert cmd_of(final) == cr.container_command(container)
    exposed = {int(p) for word, rest in final if word == "EXPOSE" for p in rest.split()}
    assert exposed == {p["containerPort"] for p in container["ports"]}
    # Non-root, with the chart's uid/gid (the pod's runAsUser must own the image's writable folders).
    user = [rest for word, rest in final if word == "USER"][-1]
    sc = container["securityContext"]
    assert user == f"{sc['runAsUser']}:{sc['runAsGroup']}"
    # Image defaults agree with the chart's settings and mount paths.
    env, chart_env = env_of(final), cr.env_values(container)
    for key in ("HF_HOME", "VOICES_DIR", "PORT", "HOST"):
        if key in env and key in chart_env:
            assert env[key] == chart_env[key], key
    assert set(env) <= IMAGE_ENV | set(chart_env), set(env) - IMAGE_ENV - set(chart_env)
    created = " ".join(rest for word, rest in final if word == "RUN")
    for mount in cr.volume_mounts(container):
        if mount != "/tmp":
            assert mount in created, f"{name}: the image should create {mount} owned by the app user"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_layers_requirements_before_code(name):
    instructions = dockerfile(DOCKERFILES[name])
    copies = [(i, rest) for i, (word, rest) in enumerate(instructions) if word == "COPY"]
    req = [i for i, rest in copies if "requirements" in rest]
    code = [
        i
        for i, rest in copies
        if re.search(r"\b(contract|predictor|adapter)/", rest.split("--from=build")[-1]) and "requirements" not in rest
    ]
    assert req and code and max(req) < min(code), "requirements must be copied (and installed) before the code"
    # Every COPY source exists (the build context is the repository root).
    for _, rest in copies:
        parts = [p for p in rest.split() if not p.startswith("--")]
        if "--from=" in rest:
            continue
        for src in parts[:-1]:
            assert (ROOT / src).exists(), f"{name}: COPY source {src} missing"


def test_predictor_images_install_the_lock_and_chatterbox():
    makefile = (ROOT / "Makefile").read_text()
    pin = re.search(r"chatterbox-tts==([0-9][^\s]*)", makefile).group(1)
    for name in ("predictor-cpu", "predictor-cuda"):
        instructions = dockerfile(DOCKERFILES[name])
        runs = " && ".join(rest for word, rest in instructions if word == "RUN")
        assert "requirements.lock" in runs
        assert f"pip install --no-deps chatterbox-tts=={pin}" in runs, name
    # Both flavours on the slim Python base: torch's PyPI wheels bring CUDA, the toolkit brings the driver.
    for name in ("predictor-cpu", "predictor-cuda"):
        instructions = dockerfile(DOCKERFILES[name])
        stages = {rest.split()[-1] for word, rest in instructions if word == "FROM" and " AS " in rest.upper()}
        bases = [b for b in base_images(instructions) if b not in stages]
        assert bases and all(b.startswith("python:3.11-slim") for b in bases), (name, bases)


SHARED_START, SHARED_END = "# ---- From here", "# ---- end of the shared part"


def _shared_part(path: Path) -> list[tuple[str, str]]:
    text = path.read_text()
    return instructions_of(text[text.index(SHARED_START) : text.index(SHARED_END)], str(path))


def test_predictor_flavours_share_their_package_and_venv_layers():
    """Everything up to the final stage's copy of the code is the same instructions in both predictor
    Dockerfiles: with the same build arguments (`make images` passes them), building one flavour builds
    the other's layers, and the second build is a cache hit up to its ENV lines."""
    cpu, cuda = (_shared_part(DOCKERFILES[name]) for name in ("predictor-cpu", "predictor-cuda"))
    assert cpu == cuda
    froms = [rest for word, rest in cpu if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS packages", "packages AS code", "packages"]
    # The image is the packages stage itself: the venv (several GB) is never copied from stage to stage,
    # so a change to the code rebuilds only the code stage and the last layer.
    copies = [rest for word, rest in cpu if word == "COPY" and "--from=" in rest]
    assert copies == ["--from=code /opt/app/ /opt/venv/lib/python3.11/site-packages/"]
    assert cpu[-1] == ("COPY", copies[0])
    for name in ("predictor-cpu", "predictor-cuda"):
        instructions = dockerfile(DOCKERFILES[name])
        assert [w for w, _ in instructions[: instructions.index(cpu[0])]] == ["ARG", "ARG"], name
        assert args_of(instructions)["TORCH_INDEX_URL"]


def test_adapter_image_installs_the_adapter_extra_without_torch():
    instructions = dockerfile(DOCKERFILES["adapter"])
    assert all(b.startswith("python:3.11-slim") for b in base_images(instructions))
    runs = " && ".join(rest for word, rest in instructions if word == "RUN")
    assert "extra_requirements.py /src/pyproject.toml adapter" in runs and "-c /src/requirements.lock" in runs
    assert 'pip install --no-deps "/src[adapter]"' in runs
    assert "torch" not in " ".join(rest for _, rest in instructions)
    # Only the shared contract and the adapter are copied: nothing of the predictor.
    copied = [rest for word, rest in instructions if word == "COPY" and "--from=" not in rest]
    assert not any("predictor/" in rest for rest in copied), copied


def test_dockerignore_keeps_the_context_small():
    rules = [
        r.strip()
        for r in (ROOT / ".dockerignore").read_text().splitlines()
        if r.strip() and not r.strip().startswith("#")
    ]
    assert rules[0] == "*", "an allow-list"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for path in DOCKERFILES.values():
        for word, rest in dockerfile(path):
            if word != "COPY" or "--from=" in rest:
                continue
            for src in rest.split()[:-1]:
                assert any(src == a or src.startswith(a + "/") for a in allowed), f"{src} is not in the context"


# -------------------------------------------------------------------------- adapter requirements


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def _adapter_closure() -> set[str]:
    """The adapter extra of pyproject.toml and everything it pulls in, from the installed metadata."""
    from scripts.extra_requirements import requirements

    pending = [Requirement(r) for r in requirements(str(ROOT / "pyproject.toml"), ["adapter"])]
    seen: set[str] = set()
    while pending:
        req = pending.pop()
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        for spec in metadata.distribution(name).requires or []:
            sub = Requirement(spec)
            env = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux"}
            if sub.marker and not any(sub.marker.evaluate({**env, "extra": e}) for e in ["", *req.extras]):
                continue
            pending.append(sub)
    return seen


def test_the_adapter_extra_pulls_in_no_torch_and_is_pinned_by_the_lock():
    closure, lock = _adapter_closure(), _lock()
    assert not closure & {"torch", "torchaudio", "chatterbox-tts", "librosa", "transformers", "kserve"}, closure
    unpinned = sorted(name for name in closure if name not in lock)
    assert not unpinned, f"in the adapter's dependency tree but not in requirements.lock: {unpinned}"


def _module_level_imports(path: Path) -> set[str]:
    """Top-level module names imported at module level (lazy imports inside functions are optional)."""
    tree = ast.parse(path.read_text())
    names = set()
    nodes = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, (ast.If, ast.Try)):
            nodes.extend(node.body)
            nodes.extend(getattr(node, "orelse", []))
            for handler in getattr(node, "handlers", []):
                nodes.extend(handler.body)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _adapter_sources() -> list[Path]:
    files = sorted((ROOT / "adapter").rglob("*.py"))
    return files + sorted((ROOT / "contract").rglob("*.py"))


def test_adapter_imports_are_in_its_requirements():
    pins = _adapter_closure()
    providers = metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for path in _adapter_sources():
        for module in _module_level_imports(path):
            top = module.split(".")[0]
            if top in stdlib or top in ("adapter", "contract"):
                continue
            if top == "predictor":
                problems.append(f"{path.relative_to(ROOT)} imports {module} (not in the adapter image)")
                continue
            dists = {canonicalize_name(d) for d in providers.get(top, [])}
            if not dists & set(pins):
                problems.append(
                    f"{path.relative_to(ROOT)} imports {top}, provided by nothing the adapter extra installs"
                )
    assert not problems, problems


# ------------------------------------------------------------------- environment names vs the code


def _upper_literals(paths) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"[A-Z][A-Z0-9_]{2,}", node.value)
            ):
                names.add(node.value)
    return names


def settings_class(component: str):
    """The pydantic-settings class a service reads its environment with (contract.settings)."""
    if component == "predictor":
        from predictor.config import PredictorSettings

        return PredictorSettings
    from adapter.settings import Settings

    return Settings


def settings_env_names(component: str) -> set[str]:
    names = set()
    for name, field in settings_class(component).model_fields.items():
        aliases = getattr(field.validation_alias, "choices", None) or [name]
        names |= {str(alias).upper() for alias in aliases}
    return names


def code_env_names(component: str) -> set[str]:
    """Environment names the code reads: its settings class's fields, plus upper-case string literals."""
    files = sorted((ROOT / component).rglob("*.py"))
    return settings_env_names(component) | _upper_literals(files)


@pytest.mark.parametrize("component", ["predictor", "adapter"])
def test_chart_env_names_are_the_agreed_interface(component):
    agreed = PREDICTOR_ENV if component == "predictor" else ADAPTER_ENV
    seen = set()
    for values in (FULL, {"adapter.discoverPredictor": True}, {"models.source": "storageUri"}):
        for files in ((), *VALUES.values()):
            seen |= set(cr.env_values(chart_pods(files, values)[component]))
    assert seen <= agreed, seen - agreed


@pytest.mark.parametrize("component", ["predictor", "adapter"])
def test_code_reads_the_env_the_chart_sets(component, charts):
    code = code_env_names(component) | LIBRARY_ENV
    for variant, pods in charts.items():
        names = set(cr.env_values(pods[component]))
        assert names <= code, f"{variant}: the chart sets {sorted(names - code)}, which the {component} never reads"


def test_chart_defaults_match_code_defaults():
    """values.yaml's defaults are the code's defaults, so leaving a value out of the chart changes nothing."""
    pods = chart_pods()
    compared = 0
    for component in ("predictor", "adapter"):
        defaults = {name.upper(): field.default for name, field in settings_class(component).model_fields.items()}
        env = cr.env_values(pods[component])
        for name, default in defaults.items():
            if name not in env or not isinstance(env[name], str) or default is None:
                continue
            if name in ("VOICES_DIR", "HOST", "PREDICTOR_URL"):  # deployment paths/addresses, not tunables
                continue
            # The chart's own choices: the drain is sized to a whole long generation (the grace period is
            # derived from it), and Wyoming is off unless asked for, as it has no authentication.
            if name in ("DRAIN_TIMEOUT_S", "WYOMING_PORT"):
                continue
            expected = str(default).lower() if isinstance(default, bool) else str(default)
            got = env[name]
            if isinstance(default, float):
                got, expected = float(got), float(default)
            assert got == expected, f"{component} {name}: chart {got!r}, code {expected!r}"
            compared += 1
    assert compared >= 5


# Choices the code takes that the chart leaves out on purpose: the seed's RUST_LOG spellings of log levels.
SPELLINGS_LEFT_OUT = {"warn", "trace"}


def test_chart_schema_enums_are_the_settings_choices():
    """Each value the schema restricts to a list is the settings field's `Literal`, so that the chart
    neither refuses a choice the code takes nor lets through one the code refuses at start-up; and
    each integer's range lies within the field's bounds."""
    schema = json.loads((cr.CHART / "values.schema.json").read_text())
    template = (cr.CHART / "templates" / "inferenceservice.yaml").read_text()
    env_of_value = {value: name for name, value in re.findall(r"- name: (\w+)\n\s+value: \{\{ \$p\.(\w+)", template)}
    fields = settings_class("predictor").model_fields
    compared = 0
    for key, spec in schema["properties"]["predictor"]["properties"].items():
        env = env_of_value.get(key)
        if env is None:  # deploymentMode and the like: KServe's or the pod's, not the predictor's
            continue
        field = fields[env.lower()]
        if spec.get("type") == "integer":
            bounds = {type(b).__name__: b for b in field.metadata}
            if "Ge" in bounds:
                assert spec["minimum"] >= bounds["Ge"].ge, f"predictor.{key}: schema lets {spec['minimum']} through"
            if "Le" in bounds:
                assert spec["maximum"] <= bounds["Le"].le, f"predictor.{key}: schema lets {spec['maximum']} through"
        if "enum" not in spec:
            continue
        choices = set(typing.get_args(field.annotation))
        assert set(spec["enum"]) <= choices, f"predictor.{key}: schema {spec['enum']}, {env} {choices}"
        left_out = choices - set(spec["enum"])
        assert left_out <= SPELLINGS_LEFT_OUT, f"predictor.{key}: the schema refuses {left_out}, which {env} takes"
        compared += 1
    assert compared >= 5  # device, dtype, sampler, cudaGraphs, warmUp


# ------------------------------------------------------------------------------------ compose files


def compose(variant: str) -> dict:
    return yaml.safe_load(COMPOSE[variant].read_text())


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _mounts(service: dict) -> dict[str, tuple[str, bool]]:
    out = {}
    for spec in service.get("volumes", []):
        source, target, *mode = spec.split(":")
        out[target] = (source, "ro" in mode)
    return out


@pytest.mark.parametrize("variant", COMPOSE)
def test_compose_runs_what_the_chart_runs(variant, charts):
    services = compose(variant)["services"]
    assert set(services) == {"predictor", "adapter"}
    for component, service in services.items():
        container = charts[variant][component]
        assert service["command"] == cr.container_command(container)
        # The same image reference as the chart renders with this variant's values.
        assert service["image"] == container["image"]
        dockerfile_path = ROOT / service["build"]["dockerfile"]
        assert dockerfile_path.exists() and service["build"]["context"] == "."
        expected = {
            "cpu": {"predictor": "predictor.Dockerfile", "adapter": "adapter.Dockerfile"},
            "gpu": {"predictor": "predictor-cuda.Dockerfile", "adapter": "adapter.Dockerfile"},
        }
        assert dockerfile_path.name == expected[variant][component]
        # Same user and hardening as the pods.
        sc = container["securityContext"]
        assert service["user"] == f"{sc['runAsUser']}:{sc['runAsGroup']}"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "/tmp" in service["tmpfs"]


@pytest.mark.parametrize("variant", COMPOSE)
def test_compose_env_matches_the_chart(variant, charts):
    services = compose(variant)["services"]
    for component, service in services.items():
        env = compose_env(service)
        chart_env = cr.env_values(charts[variant][component])
        assert set(env) <= set(chart_env) | {"PREDICTOR_URL"}, set(env) - set(chart_env)
        for name, value in env.items():
            if "${" in value or not isinstance(chart_env.get(name), str) or name == "PREDICTOR_URL":
                continue
            assert value == chart_env[name], (
                f"{variant} {component} {name}: compose {value!r}, chart {chart_env[name]!r}"
            )
    # The adapter reaches the predictor service on the predictor's REST container port.
    predictor = charts[variant]["predictor"]
    rest = next(p["containerPort"] for p in predictor["ports"] if p["name"] == "http1")
    assert compose_env(services["adapter"])["PREDICTOR_URL"] == f"http://predictor:{rest}"
    # Secrets come from the shell, never from the file.
    for component, name in (("adapter", "API_TOKEN"), ("predictor", "HF_TOKEN")):
        assert compose_env(services[component])[name] == f"${{{name}:-}}"


@pytest.mark.parametrize("variant", COMPOSE)
def test_compose_ports_volumes_and_health(variant, charts):
    doc = compose(variant)
    services = doc["services"]
    adapter, predictor = charts[variant]["adapter"], charts[variant]["predictor"]
    adapter_port = adapter["ports"][0]["containerPort"]
    assert services["adapter"]["ports"] == [f"{adapter_port}:{adapter_port}"]
    assert {int(p) for p in services["predictor"]["expose"]} == {p["containerPort"] for p in predictor["ports"]}
    assert "ports" not in services["predictor"], "the predictor is reached through the adapter"
    # Mount paths and read-only-ness as in the pods.
    p_mounts, a_mounts = _mounts(services["predictor"]), _mounts(services["adapter"])
    chart_p, chart_a = cr.volume_mounts(predictor), cr.volume_mounts(adapter)
    assert p_mounts["/app/voices"] == ("voices", True) and chart_p["/app/voices"]["readOnly"] is True
    assert a_mounts["/app/voices"] == ("voices", False) and not chart_a["/app/voices"].get("readOnly")
    assert "/cache" in p_mounts and "/cache" in chart_p
    assert cr.env_values(predictor)["HF_HOME"].startswith("/cache/")
    assert "/mnt/models" in p_mounts and "/mnt/models" in cr.container_command(predictor)
    assert set(doc["volumes"]) == {source for source, _ in list(p_mounts.values()) + list(a_mounts.values())}
    # Health checks use the chart's probe routes and ports.
    ready = predictor["readinessProbe"]["httpGet"]["path"]
    assert f"localhost:8080{ready}" in " ".join(services["predictor"]["healthcheck"]["test"])
    health = adapter["readinessProbe"]["httpGet"]["path"]
    assert f"localhost:{adapter_port}{health}" in " ".join(services["adapter"]["healthcheck"]["test"])


def test_gpu_compose_reserves_a_gpu():
    gpu = compose("gpu")["services"]["predictor"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert compose_env(gpu)["DEVICE"] == "cuda"
    assert "deploy" not in compose("cpu")["services"]["predictor"]
    assert compose_env(compose("cpu")["services"]["predictor"])["DEVICE"] == "cpu"


def test_the_images_version_is_the_code_version():
    """One version: contract.__version__ (pyproject.toml reads it); the chart's appVersion, which the
    image tags default to, must agree with it."""
    import contract

    chart = yaml.safe_load((cr.CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == contract.__version__


def test_compose_names_the_images_make_images_builds():
    """`make images` then `docker compose up`: the compose files name the tags scripts/images.sh gives."""
    import subprocess

    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "images.sh"), "tags"], capture_output=True, text=True, check=True
    ).stdout
    tags = dict(line.split(" ", 1) for line in out.strip().splitlines())
    for variant, predictor in (("cpu", "predictor"), ("gpu", "predictor-cuda")):
        services = compose(variant)["services"]
        assert services["predictor"]["image"] == tags[predictor], variant
        assert services["adapter"]["image"] == tags["adapter"], variant
    readme = (ROOT / "README.md").read_text()
    assert "make images" in readme and "tests/e2e/test_images.py" in readme
