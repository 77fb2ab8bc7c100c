"""Loading without random initialisation (predictor/engine/weights.py, `load_model`): the same tensors as
upstream's way when the checkpoint covers every parameter, and upstream's way again when it does not.
On the real variants, the conformance tests (tests/integration/test_conformance.py) compare a predictor
that loads this way with upstream's generate(), sample for sample, for all three."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from predictor.engine.weights import load_model


class Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.lstm = torch.nn.LSTM(4, 4)


def write_checkpoint(folder: Path, leave_out: str | None = None) -> None:
    state = {k: v for k, v in Small().state_dict().items() if k != leave_out}
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "small.safetensors")


def from_local(folder: Path, device: str) -> Small:
    """As upstream's from_local: build, then load (strict=False, as standard's S3Gen)."""
    model = Small()
    model.load_state_dict(load_file(folder / "small.safetensors"), strict=False)
    return model.to(device).eval()


def test_a_complete_checkpoint_gives_the_tensors_it_holds(tmp_path):
    write_checkpoint(tmp_path)
    loaded = load_model(from_local, tmp_path, "cpu", "small")
    expected = load_file(tmp_path / "small.safetensors")
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())


def test_the_weights_are_not_drawn_at_all(tmp_path, monkeypatch):
    """What makes it quick: no init function runs while the model is built."""
    write_checkpoint(tmp_path)
    calls = []
    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", lambda *a, **k: calls.append("kaiming_uniform_"))
    from_local(tmp_path, "cpu")
    assert calls, "the double should have been called without the context"
    calls.clear()
    load_model(from_local, tmp_path, "cpu", "small")
    assert calls == []


def test_a_checkpoint_that_leaves_a_parameter_out_is_loaded_again_as_upstream_does(tmp_path, caplog):
    write_checkpoint(tmp_path, leave_out="linear.bias")
    torch.manual_seed(0)
    expected_bias = Small().linear.bias.detach().clone()  # what upstream's initialisation draws from seed 0
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="predictor.engine.weights"):
        loaded = load_model(from_local, tmp_path, "cpu", "small")
    assert "small: the checkpoint leaves tensors out (Small lacks 1: ['linear.bias'])" in caplog.text
    # Built again with upstream's initialisation (the first build drew nothing from the generator):
    # the bias the checkpoint lacks is the one upstream's init draws, not raw memory.
    assert torch.equal(loaded.linear.bias, expected_bias)
    assert torch.nn.Module.load_state_dict.__qualname__ == "Module.load_state_dict"  # the patch is undone
