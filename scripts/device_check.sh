#!/usr/bin/env bash
# The GPU check in one command (docs/engine.md, "A GPU check in one command"), from the repository root of a
# bare GPU host with no network: install the kit (`make device-kit`, carried as build/device-kit), make
# random weights, profile the engine, run the concurrency, lone-request and streaming benches, and write
# OUT/summary.md with the targets. Every phase has its own time budget (`timeout`), and a phase that ends
# early leaves its unused seconds to the next, so that a slow phase cannot eat the others; the whole
# check ends within DEVICE_CHECK_BUDGET_S (470 s by default: 8 minutes with room for the summary).
#
#     OUT=/some/folder bash scripts/device_check.sh        (the device tool sets OUT)
#
# Knobs (environment), with their defaults; the CPU dry run (tests/e2e/test_device_kit.py) makes them small:
#   DEVICE=cuda PYTHON=python3 KIT=build/device-kit DEVICE_CHECK_WORK=/tmp/device-check
#   DEVICE_CHECK_WEIGHTS=$DEVICE_CHECK_WORK/weights (random_weights skips variants already complete there)
#   DEVICE_CHECK_VARIANTS=turbo,standard PROFILE_VARIANTS=$DEVICE_CHECK_VARIANTS
#   TURBO_LEVELS=1,8,32,64 TURBO_TOKENS=200 TURBO_LONE=10     STANDARD_LEVELS=1,8,32 STANDARD_TOKENS=100 STANDARD_LONE=3
#   STREAM_TOKENS=200 STREAM_REPEATS=1 WARMUP_TOKENS=20
#   PROFILE_LONE_TOKENS=40 PROFILE_BATCH=32 PROFILE_BATCH_TOKENS=64
#   GRAPH_LEVELS=1,8,32,64 GRAPH_TOKENS=60 GRAPH_COMPARE=4 GRAPH_DTYPE=auto
#   phase budgets in seconds: BUDGET_KIT=60 BUDGET_WEIGHTS=70 BUDGET_PROFILE=80 BUDGET_GRAPHS=60
#   BUDGET_TURBO=130 BUDGET_STANDARD=80
set -u
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder for the results}"
STARTED=$(date +%s)
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
KIT=${KIT:-build/device-kit}
WORK=${DEVICE_CHECK_WORK:-/tmp/device-check}
SITE=$WORK/site
WEIGHTS=${DEVICE_CHECK_WEIGHTS:-$WORK/weights}
BUDGET=${DEVICE_CHECK_BUDGET_S:-470}
RESERVE=8  # seconds kept for the summary
VARIANTS=${DEVICE_CHECK_VARIANTS:-turbo,standard}
PROFILE_VARIANTS=${PROFILE_VARIANTS:-$VARIANTS}
mkdir -p "$OUT/logs" "$WORK"
: >"$OUT/phases.tsv"
DEADLINE=$((STARTED + BUDGET))
SLACK=0

log() { echo "[device-check $(($(date +%s) - STARTED))s] $*" >&2; }

# phase NAME BUDGET COMMAND...: run COMMAND under `timeout` for BUDGET seconds plus the slack earlier
# phases left (never past the deadline), its output in OUT/logs/NAME.log; one line in OUT/phases.tsv.
phase() {
  local name=$1 budget=$2
  shift 2
  local now allowed began rc spent
  now=$(date +%s)
  allowed=$((budget + SLACK))
  if ((now + allowed > DEADLINE - RESERVE)); then allowed=$((DEADLINE - RESERVE - now)); fi
  if ((allowed < 5)); then
    log "$name: skipped (no time left)"
    printf '%s\t%s\t%s\t%s\n' "$name" 124 0 "$budget" >>"$OUT/phases.tsv"
    return 124
  fi
  log "$name: up to ${allowed} s"
  began=$(date +%s)
  timeout -k 10 "$allowed" "$@" >"$OUT/logs/$name.log" 2>&1
  rc=$?
  spent=$(($(date +%s) - began))
  SLACK=$((allowed - spent > 0 ? allowed - spent : 0))
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$spent" "$allowed" >>"$OUT/phases.tsv"
  log "$name: exit $rc after ${spent} s"
  tail -n 3 "$OUT/logs/$name.log" >&2
  return "$rc"
}

summary() {
  "$PYTHON" scripts/device_summary.py "$OUT" >/dev/null 2>"$OUT/logs/summary.log" || log "summary failed (logs/summary.log)"
  command -v nvidia-smi >/dev/null && nvidia-smi >"$OUT/logs/nvidia-smi.txt" 2>&1
  log "done in $(($(date +%s) - STARTED)) s: $OUT/summary.md"
}
trap summary EXIT
trap 'exit 143' TERM INT  # the summary is still written

# 1. The kit, into WORK/site, ahead of everything on PYTHONPATH (no network, no pip).
phase kit "${BUDGET_KIT:-60}" "$PYTHON" scripts/device_kit.py install --kit "$KIT" --target "$SITE" --report "$OUT/kit-install.json"
export PYTHONPATH="$SITE:$PWD" PYTHONNOUSERSITE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false BENCH_LOG_DIR="$OUT/logs"
# What runs, and proof that the kit's packages are the ones imported.
"$PYTHON" - "$SITE" "$DEVICE" >"$OUT/config.txt" 2>>"$OUT/logs/config.log" <<'PY' || log "config: failed (logs/config.log)"
import os, sys, platform
site, device = sys.argv[1], sys.argv[2]
import numpy, torch, transformers, kserve, chatterbox
for module in (transformers, kserve, chatterbox):
    assert module.__file__.startswith(site), f"{module.__name__} imported from {module.__file__}, not the kit ({site})"
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print(f"device={device} gpu={gpu} python={platform.python_version()} torch={torch.__version__} "
      f"cuda={torch.version.cuda} numpy={numpy.__version__} transformers={transformers.__version__} (kit) "
      f"cpus={os.cpu_count()}")
PY
cat "$OUT/config.txt" >&2

# 2. Random weights (only the variants measured), outside OUT: gigabytes that must not travel back.
phase weights "${BUDGET_WEIGHTS:-70}" "$PYTHON" -m scripts.random_weights --out "$WEIGHTS" --variants "$VARIANTS"

# 3. In-process profile: a lone request and one steady tick of a full T3 batch, per variant.
phase profile "${BUDGET_PROFILE:-80}" "$PYTHON" -m scripts.device_profile --weights "$WEIGHTS" --out "$OUT" \
  --variants "$PROFILE_VARIANTS" --device "$DEVICE" --lone-tokens "${PROFILE_LONE_TOKENS:-40}" \
  --batch "${PROFILE_BATCH:-32}" --batch-tokens "${PROFILE_BATCH_TOKENS:-64}"

# 4. CUDA_GRAPHS=on against the eager batch, in-process (turbo): the same tokens, and the step's time
#    at each level; what decides whether the graphs may become the default (docs/engine.md, "The GPU path").
if [[ ",$VARIANTS," == *,turbo,* ]]; then
  phase graphs "${BUDGET_GRAPHS:-60}" "$PYTHON" -m scripts.device_graph_check --weights "$WEIGHTS" --out "$OUT" \
    --device "$DEVICE" --levels "${GRAPH_LEVELS:-1,8,32,64}" --tokens "${GRAPH_TOKENS:-60}" \
    --compare "${GRAPH_COMPARE:-4}" --dtype "${GRAPH_DTYPE:-auto}"
fi

# 5. Per variant, over HTTP: warm-up, lone requests, streaming, then the concurrency levels.
for variant in ${VARIANTS//,/ }; do
  upper=${variant^^}
  levels_var=${upper}_LEVELS tokens_var=${upper}_TOKENS lone_var=${upper}_LONE budget_var=BUDGET_${upper}
  case $variant in
    turbo) default_levels=1,8,32,64 default_tokens=200 default_lone=10 default_budget=130 ;;
    *) default_levels=1,8,32 default_tokens=100 default_lone=3 default_budget=80 ;;
  esac
  phase "bench-$variant" "${!budget_var:-$default_budget}" "$PYTHON" -m scripts.device_bench --weights "$WEIGHTS" \
    --variant "$variant" --out "$OUT/bench-$variant.jsonl" --device "$DEVICE" \
    --levels "${!levels_var:-$default_levels}" --tokens "${!tokens_var:-$default_tokens}" \
    --lone "${!lone_var:-$default_lone}" --stream-tokens "${STREAM_TOKENS:-200}" \
    --stream-repeats "${STREAM_REPEATS:-1}" --warmup-tokens "${WARMUP_TOKENS:-20}"
done
exit 0
