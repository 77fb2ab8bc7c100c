"""The chaos soak's own parts (scripts/chaos.py) that decide breaches: its seeded schedule and its checks
of the voice folder and of the default voice, each shown to catch what it is there to catch."""

from __future__ import annotations

import json

import soundfile as sf

from adapter.voice_library import DEFAULT_FILE, TEMP_PREFIX
from scripts.chaos import (
    FAULT_KINDS,
    ChaosConfig,
    Fault,
    Outcome,
    check_default,
    check_folder,
    rss_figures,
    schedule,
    settle_recoveries,
)
from scripts.random_weights import write_reference_wav


def test_the_schedule_is_seeded_and_every_round_has_every_kind():
    config = ChaosConfig(duration_s=600.0, seed=5)
    plan = schedule(config)
    assert plan == schedule(ChaosConfig(duration_s=600.0, seed=5))
    assert plan != schedule(ChaosConfig(duration_s=600.0, seed=6))
    rounds = [plan[i : i + len(FAULT_KINDS)] for i in range(0, len(plan), len(FAULT_KINDS))]
    assert len(rounds) >= 2 and all(sorted(f.kind for f in r) == sorted(FAULT_KINDS) for r in rounds)
    stops = [f.stop_s for f in plan if f.kind == "predictor-stop"]
    assert all(5.0 <= s <= 30.0 for s in stops)
    assert [f.kind for f in schedule(ChaosConfig(duration_s=1.0))] != []  # a short run still gets a round


def test_the_folder_check_catches_partial_hidden_truncated_and_cut_uploads(tmp_path):
    whole = write_reference_wav(tmp_path / "whole.wav", seconds=2.0, seed=1)
    frames = sf.info(str(whole)).frames
    assert check_folder(tmp_path, {"whole.wav": frames}, killed=[]) == []
    (tmp_path / DEFAULT_FILE).write_text('{"voice_path": "whole.wav"}')
    assert check_folder(tmp_path, {"whole.wav": frames}, killed=[]) == []

    (tmp_path / f"{TEMP_PREFIX}abc.tmp.wav").write_bytes(b"RIFF")
    (tmp_path / "cut.wav").write_bytes(whole.read_bytes())
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00")
    problems = check_folder(tmp_path, {"whole.wav": frames + 1, "gone.wav": 10}, killed=["cut.wav"])
    text = "\n".join(problems)
    assert f"left in the voice folder: {TEMP_PREFIX}abc.tmp.wav" in text
    assert "an upload cut by kill -9 was kept: cut.wav" in text
    assert "broken.wav does not decode" in text
    assert f"whole.wav has {frames} frames, {frames + 1} were sent" in text
    assert "gone.wav does not decode" in text


def test_the_default_voice_check(tmp_path):
    assert check_default(tmp_path) is None  # no default set
    write_reference_wav(tmp_path / "a.wav", seconds=2.0, seed=1)
    (tmp_path / DEFAULT_FILE).write_text(json.dumps({"voice_path": "a.wav"}))
    assert check_default(tmp_path) is None
    (tmp_path / DEFAULT_FILE).write_text(json.dumps({"voice_path": "missing.wav"}))
    assert "missing.wav does not decode" in (check_default(tmp_path) or "")
    (tmp_path / DEFAULT_FILE).write_text('{"voice_pa')
    assert "is not JSON" in (check_default(tmp_path) or "")


def test_recovery_is_the_first_synthesis_that_succeeds_after_ready():
    fault = Fault("predictor-stop", gap_s=1.0, stop_s=5.0, injected=10.0, ready=15.0, recovered=17.0, served=19.0)
    outcomes = [
        Outcome(0, "plain", 9.0, 14.0, "ok"),  # before ready: does not count
        Outcome(1, "upload", 15.0, 15.2, "ok"),  # needs no predictor: does not count
        Outcome(2, "websocket", 8.0, 16.5, "ok"),  # waited through the freeze, then served
        Outcome(0, "streamed", 15.1, 16.0, "refused"),
    ]
    settle_recoveries([fault], outcomes)
    # The stream in flight through the freeze succeeded: requests succeed again from `ready`.
    assert (fault.recovery_s, fault.served_s) == (0.0, 1.5)
    after_restart = Fault("predictor-kill", gap_s=1.0, injected=10.0, ready=15.0)
    settle_recoveries([after_restart], [Outcome(0, "plain", 16.0, 24.0, "ok"), Outcome(1, "openai", 18.0, 21.0, "ok")])
    assert (after_restart.recovery_s, after_restart.served_s) == (1.0, 6.0)


def test_rss_growth_leaves_out_a_reloading_predictor_but_catches_a_leak():
    config = ChaosConfig(warmup_s=10.0, rss_bound_mib=64.0)
    fault = Fault("predictor-kill", gap_s=1.0, injected=40.0, ready=60.0, recovered=60.5, served=62.0)

    def samples(mib) -> list[dict]:
        return [{"t": float(t), "predictor_mib": mib(t), "adapter_mib": 100.0} for t in range(100)]

    # A reload holds twice the weights until it is ready, then RSS is back where it was.
    reload = rss_figures(samples(lambda t: 6000.0 if 40 <= t <= 62 else 3000.0), [fault], config)
    assert reload["predictor"]["growth_mib"] == 0 and reload["predictor"]["peak_mib"] == 6000.0
    leak = rss_figures(samples(lambda t: 3000.0 + 3 * t), [fault], config)
    assert leak["predictor"]["growth_mib"] > config.rss_bound_mib
    assert leak["adapter"]["growth_mib"] == 0
