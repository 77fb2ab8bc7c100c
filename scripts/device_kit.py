"""The device kit: what a bare GPU host lacks to run scripts/device_check.sh, as wheels (`make device-kit`).

The GPU host we borrow has Python 3.12, torch 2.11 (CUDA 13), numpy 2.5, triton 3.6, transformers 5.x and
the usual scientific packages (scipy, pandas, Pillow, ...), no network, and room for 64 MiB of files
brought along (the git tree plus carried ignored paths). This script builds, into an ignored folder, the
wheels of everything else the predictor, the bench and the profile import, and installs them there:

    python scripts/device_kit.py build [--out build/device-kit] [--python-version 3.12] [--torchaudio 2.11.0] [--xz-preset 6]
    python scripts/device_kit.py install --kit build/device-kit --target DIR [--report FILE]
    python scripts/device_kit.py size --kit build/device-kit [--limit-mib 64]

Standard library only: `install` runs before anything of the kit is importable.

What the kit holds (versions from requirements.lock, so the device runs what CI runs):
- CORE: installed always, ahead of the device's own copies on PYTHONPATH. transformers is here on
  purpose: the engine imports its internals (masking_utils, cache_utils' DynamicLayer, sdpa_attention),
  which move between 5.x releases; the pinned 5.2.0 wheel (10 MB) keeps behaviour identical to CI.
  torchaudio must match the device's torch exactly (2.11.0 there), so its version is an option.
- FALLBACK: wheels installed only when the device cannot import the module already (onnx, only
  imported by s3tokenizer; pandas, only imported by kserve; Pillow, imported by diffusers; scikit-learn,
  imported by librosa.effects).
- DEVICE: never brought, too big or the device's own: torch, numpy, triton, the nvidia libraries, scipy
  (35 MB), numba with llvmlite (64 MB: librosa imports and calls it) and torch's own small dependencies.
  `install` fails at once when one of REQUIRED_ON_DEVICE is missing.

Each group's wheels are unpacked at build time and packed again as one tar.xz (site-packages as it
will be): 51 MB of core wheels become about 26 MB. resemble-perth's wheel is 33 MB of it, nearly all
the watermarker's pretrained checkpoint: the kit leaves it out and `install` writes a random-weight
checkpoint of the same network in its place (same shapes, same cost; every other weight on the
device is random as well).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
CHATTERBOX = "chatterbox-tts==0.1.7"  # as the Makefile installs it (--no-deps: it pins gradio)
SETUPTOOLS = "setuptools==80.10.2"  # resemble-perth imports pkg_resources, gone from 81 on (the Makefile: <81)
DEFAULT_TORCHAUDIO = "2.11.0"  # the device's torch is 2.11; torchaudio pins torch exactly
LIMIT_MIB = 64

# Distribution names as requirements.lock spells them. Each is imported by the predictor server (kserve,
# uvicorn, grpc), the engine (chatterbox and its models), the bench clients or random_weights.
CORE = [
    # the predictor server: kserve and what it imports at start-up
    "kserve",
    "fastapi",
    "starlette",
    "uvicorn",
    "h11",
    "httptools",  # uvicorn's fast HTTP parser and uvloop, as the images have (uvicorn[standard])
    "uvloop",
    "watchfiles",  # kserve imports it
    "anyio",
    "sniffio",
    "idna",
    "click",
    "pydantic",
    "pydantic_core",
    "pydantic-settings",
    "python-dotenv",
    "typing-inspection",
    "annotated-types",
    "annotated-doc",
    "typing_extensions",
    "opentelemetry-api",
    "importlib_metadata",
    "zipp",
    "cloudevents",
    "deprecation",
    "packaging",
    "grpcio",
    "grpc-interceptor",
    "protobuf",
    "httpx",
    "httpcore",
    "certifi",
    "orjson",
    "prometheus_client",
    "psutil",
    "python-dateutil",
    "six",
    "python-multipart",
    "PyYAML",
    "tabulate",
    "timing-asgi",
    "urllib3",
    "kubernetes",
    "requests",
    "requests-oauthlib",
    "oauthlib",
    "websocket-client",
    "durationpy",
    "charset-normalizer",
    "pytz",
    "tzdata",
    # the engine: chatterbox and its models
    "transformers",
    "tokenizers",
    "huggingface_hub",
    "typer-slim",
    "safetensors",
    "regex",
    "tqdm",
    "diffusers",
    "librosa",
    "audioread",
    "decorator",
    "joblib",
    "cloudpickle",  # joblib's loky imports it
    "lazy-loader",
    "msgpack",
    "pooch",
    "platformdirs",
    "soundfile",
    "cffi",
    "pycparser",
    "soxr",
    "s3tokenizer",
    "einops",
    "conformer",
    "resemble-perth",
    "omegaconf",
    "pyloudnorm",
    "greenlet",
]
# module to import -> the wheels that provide it when the device has none
FALLBACK = {
    "onnx": ["onnx", "ml_dtypes"],
    "pandas": ["pandas"],
    "PIL": ["pillow"],
    "sklearn": ["scikit-learn", "threadpoolctl", "narwhals"],  # librosa.effects (chatterbox's trim) imports it
}
# Never brought: the device has them (REQUIRED must import, or the check cannot run).
REQUIRED_ON_DEVICE = ["torch", "numpy", "scipy", "numba"]
# resemble-perth's pretrained watermarker (33 MB): replaced on the device by random weights
PERTH_CHECKPOINT = "perth/perth_net/pretrained/implicit/perth_net_250000.pth.tar"
RANDOM_PERTH = """
import sys, torch
from perth.perth_net.perth_net_implicit.checkpoint_manager import CheckpointManager
from perth.perth_net.perth_net_implicit.model.perth_net import PerthNet
folder, step = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
net = PerthNet(CheckpointManager(folder, "implicit").hp)
torch.save({"model": net.state_dict(), "step": step}, sys.argv[3])
"""


def locked_versions() -> dict[str, str]:
    versions = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            versions[normalize(name)] = version.strip()
    return versions


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(names: list[str], locked: dict[str, str]) -> list[str]:
    missing = [n for n in names if normalize(n) not in locked]
    if missing:
        raise SystemExit(f"error: not in requirements.lock: {', '.join(missing)}")
    return [f"{n}=={locked[normalize(n)]}" for n in names]


# ---- build -------------------------------------------------------------------------------------
def download(requirements: list[str], dest: Path, python_version: str) -> None:
    """Binary wheels for CPython `python_version` on manylinux x86_64 (pure-Python ones as py3-none-any)."""
    dest.mkdir(parents=True, exist_ok=True)
    abi = "cp" + python_version.replace(".", "")
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", python_version, "--implementation", "cp"]
    command += ["--abi", abi, "--abi", "abi3", "--abi", "none"]
    for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux2014_x86_64"):
        command += ["--platform", tag]
    command += ["--platform", "any", "--dest", str(dest), *requirements]
    env = dict(os.environ)
    env.pop("PIP_FIND_LINKS", None)  # a local wheel folder may hold other builds: take PyPI's
    env.pop("PIP_NO_INDEX", None)
    subprocess.run(command, check=True, env=env)


def pack(wheels: list[Path], archive: Path, drop: tuple[str, ...], xz_preset: int) -> None:
    """Unpack `wheels` as site-packages, leave out the `drop` paths, and write one tar.xz of the tree."""
    with tempfile.TemporaryDirectory(prefix="device-kit-") as tmp:
        tree = Path(tmp) / "site"
        for wheel in wheels:
            unpack_wheel(wheel, tree)
        for relative in drop:
            (tree / relative).unlink(missing_ok=True)
        for cache in tree.rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(tree), "-cf", "-", "."], stdout=subprocess.PIPE)
        with open(archive, "wb") as sink:
            subprocess.run(["xz", "-T0", f"-{xz_preset}"], stdin=tar.stdout, stdout=sink, check=True)
        if tar.wait() != 0:
            raise SystemExit(f"error: tar failed for {archive}")


def build(out: Path, python_version: str, torchaudio: str, xz_preset: int) -> dict:
    locked = locked_versions()
    started = time.monotonic()
    cache = out.with_name(out.name + "-cache") / ("cp" + python_version.replace(".", ""))
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    core = pins(CORE, locked) + [CHATTERBOX, SETUPTOOLS, f"torchaudio=={torchaudio}"]
    print(f"[device-kit] {len(core)} core wheels for CPython {python_version} (cache {cache}) ...", flush=True)
    download(core, cache / "core", python_version)
    print(f"[device-kit] packing core.tar.xz (xz -{xz_preset}) ...", flush=True)
    pack(sorted((cache / "core").glob("*.whl")), staging / "core.tar.xz", (PERTH_CHECKPOINT,), xz_preset)
    fallback = {}
    for module, names in FALLBACK.items():
        requirements = pins(names, locked)
        print(f"[device-kit] fallback for `import {module}`: {' '.join(requirements)}", flush=True)
        download(requirements, cache / module, python_version)
        pack(sorted((cache / module).glob("*.whl")), staging / f"fallback-{module}.tar.xz", (), xz_preset)
        fallback[module] = requirements
    manifest = {
        "python_version": python_version,
        "core": core,
        "fallback": fallback,
        "required_on_device": REQUIRED_ON_DEVICE,
        "random_perth_checkpoint": PERTH_CHECKPOINT,
        "built": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    print(f"[device-kit] built {out} in {time.monotonic() - started:.0f} s", flush=True)
    return manifest


# ---- size --------------------------------------------------------------------------------------
def tree_bytes() -> int:
    """What the device tool copies besides carried paths: tracked files, and untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    total = 0
    for name in listed.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def size(kit: Path, limit_mib: float) -> int:
    mib = 1024 * 1024
    kit_size, tree = folder_bytes(kit), tree_bytes()
    print(f"[device-kit] kit {kit}: {kit_size / mib:.1f} MiB", flush=True)
    for archive in sorted(kit.glob("*.tar.xz")):
        print(f"[device-kit]   {archive.stat().st_size / mib:5.1f} MiB  {archive.name}")
    total = kit_size + tree
    print(
        f"[device-kit] kit + git tree ({tree / mib:.1f} MiB) = {total / mib:.1f} MiB of the {limit_mib:g} MiB a device run may carry",
        flush=True,
    )
    if total > limit_mib * mib:
        print(f"[device-kit] error: over the {limit_mib:g} MiB limit", file=sys.stderr)
        return 1
    return 0


# ---- install (on the device) -------------------------------------------------------------------
def unpack_wheel(wheel: Path, target: Path) -> None:
    """A wheel is a zip laid out as site-packages; its .data/purelib and platlib go there too (scripts
    and headers are not needed). No pip: the device may lack it, and this is faster."""
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            parts = info.filename.split("/")
            if len(parts) > 2 and parts[0].endswith(".data"):
                if parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            destination = target.joinpath(*parts)
            if info.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(destination, "wb") as sink:
                shutil.copyfileobj(source, sink)
            mode = (info.external_attr >> 16) & 0o777
            if mode & 0o111:
                destination.chmod(mode)


def device_has(modules: list[str]) -> dict[str, str | None]:
    """The version of each module the device's own Python imports (without the kit), None where it cannot.
    One child process for all: importing torch alone takes seconds."""
    code = (
        "import importlib, json, sys\nfound = {}\nfor name in sys.argv[1:]:\n"
        "    try:\n        m = importlib.import_module(name)\n"
        "        found[name] = str(getattr(m, '__version__', None) or '?')\n"
        "    except Exception:\n        found[name] = None\nprint(json.dumps(found))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", code, *modules], capture_output=True, text=True, env=env, cwd="/", check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def unpack_archive(archive: Path, target: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(target, filter="data")


def install(kit: Path, target: Path, report_path: Path | None) -> int:
    started = time.monotonic()
    manifest = json.loads((kit / "manifest.json").read_text())
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    report: dict = {"python": sys.version.split()[0], "kit_python": manifest["python_version"], "device": {}}
    if here != manifest["python_version"]:
        print(
            f"[device-kit] error: this Python is {here}, the kit is built for {manifest['python_version']} "
            f"(build it with `make device-kit KIT_PYTHON_VERSION={here}`)",
            file=sys.stderr,
        )
        return 2
    found = device_has(manifest["required_on_device"] + list(manifest["fallback"]))
    report["device"] = found
    missing = []
    for module in manifest["required_on_device"]:
        print(f"[device-kit] device {module}: {found[module] or 'MISSING'}", flush=True)
        if found[module] is None:
            missing.append(module)
    if missing:
        print(
            f"[device-kit] error: the device lacks {', '.join(missing)}; the kit does not bring them", file=sys.stderr
        )
        return 2
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    unpack_archive(kit / "core.tar.xz", target)
    report["core"] = manifest["core"]
    report["fallbacks_installed"] = {}
    for module, requirements in manifest["fallback"].items():
        version = found[module]
        if version is None:
            unpack_archive(kit / f"fallback-{module}.tar.xz", target)
            report["fallbacks_installed"][module] = requirements
            print(f"[device-kit] device has no {module}: installed {' '.join(requirements)}", flush=True)
        else:
            print(f"[device-kit] device {module}: {version} (kept)", flush=True)
    checkpoint = target / manifest["random_perth_checkpoint"]
    step = int(checkpoint.name.split("_")[-1].split(".")[0])
    env = dict(os.environ, PYTHONPATH=str(target))
    subprocess.run(
        [sys.executable, "-c", RANDOM_PERTH, str(checkpoint.parent.parent), str(step), str(checkpoint)],
        check=True,
        env=env,
        cwd="/",
        stdout=subprocess.DEVNULL,
    )
    print(f"[device-kit] watermarker: random-weight checkpoint written ({checkpoint.stat().st_size >> 20} MiB)")
    report["install_s"] = round(time.monotonic() - started, 1)
    report["platform"] = platform.platform()
    print(f"[device-kit] installed into {target} in {report['install_s']} s", flush=True)
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/device_kit.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="download the kit's wheels")
    build_parser.add_argument("--out", type=Path, default=ROOT / "build" / "device-kit")
    build_parser.add_argument("--python-version", default="3.12", help="the device's Python (default 3.12)")
    build_parser.add_argument("--torchaudio", default=DEFAULT_TORCHAUDIO, help="matches the device's torch")
    build_parser.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    build_parser.add_argument("--xz-preset", type=int, default=6, help="0 (fast) to 9 (small); default 6")
    size_parser = commands.add_parser("size", help="the kit's size, and whether kit + tree fit the limit")
    size_parser.add_argument("--kit", type=Path, default=ROOT / "build" / "device-kit")
    size_parser.add_argument("--limit-mib", type=float, default=LIMIT_MIB)
    install_parser = commands.add_parser("install", help="install the kit into a folder (no network, no pip)")
    install_parser.add_argument("--kit", type=Path, default=ROOT / "build" / "device-kit")
    install_parser.add_argument("--target", type=Path, required=True)
    install_parser.add_argument("--report", type=Path, default=None, help="also write what was installed here (JSON)")
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args.out, args.python_version, args.torchaudio, args.xz_preset)
        return size(args.out, args.limit_mib)
    if args.command == "size":
        return size(args.kit, args.limit_mib)
    return install(args.kit, args.target, args.report)


if __name__ == "__main__":
    sys.exit(main())
