"""Atomic, weights_only-safe checkpoints and exact RNG restore (for an exact resume)."""

from __future__ import annotations

import io
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from equiseg.engine import (
    CorruptCheckpointError,
    DiskFullError,
    UnsafeCheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]


def _draw(gen: torch.Generator) -> tuple:
    return (
        torch.rand(5),
        torch.randn(3, generator=gen),
        np.random.rand(4),
        np.random.randn(2),  # exercises numpy's cached-gaussian slot
        [random.random() for _ in range(3)],
        random.gauss(0.0, 1.0),  # exercises python's gauss_next slot
    )


def _assert_draws_equal(a: tuple, b: tuple) -> None:
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3])
    assert a[4] == b[4] and a[5] == b[5]


def test_round_trip_restores_tensors_and_rngs_exactly(tmp_path: Path) -> None:
    sgm_gen = torch.Generator().manual_seed(123)
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn(1)  # leave a cached gaussian in numpy's state
    random.gauss(0.0, 1.0)  # and one in python's
    torch.randn(3, generator=sgm_gen)

    model = torch.nn.Linear(4, 3)
    state = {
        "model": model.state_dict(),
        "iteration": 17,
        "best_miou": 12.5,
        "config": {"name": "demo", "lambdas": [1, 40, 60]},
        "rng": capture_rng_state({"sgm": sgm_gen}),
    }
    path = save_checkpoint(tmp_path / "ckpt" / "last.pt", state)
    expected = _draw(sgm_gen)  # what the run would draw next

    # Scramble every generator, then restore from disk.
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    sgm_gen.manual_seed(99)
    loaded = load_checkpoint(path, required_keys=("model", "rng"))
    restore_rng_state(loaded["rng"], {"sgm": sgm_gen})
    _assert_draws_equal(_draw(sgm_gen), expected)

    assert loaded["iteration"] == 17 and loaded["best_miou"] == 12.5
    assert loaded["config"] == {"name": "demo", "lambdas": [1, 40, 60]}
    for k, v in model.state_dict().items():
        assert torch.equal(loaded["model"][k], v)


def test_restore_checks_generator_names() -> None:
    state = capture_rng_state({"sgm": torch.Generator()})
    with pytest.raises(KeyError, match="sgm"):
        restore_rng_state(state, {})
    restore_rng_state(state, {}, strict=False)


def test_save_refuses_non_plain_types_naming_the_entry(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"state\['meta'\]\['step'\].*numpy"):
        save_checkpoint(tmp_path / "x.pt", {"meta": {"step": np.int64(3)}})
    assert not any(tmp_path.iterdir())


def test_missing_required_key(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", {"model": {}})
    with pytest.raises(CorruptCheckpointError, match="optimizer"):
        load_checkpoint(path, required_keys=("model", "optimizer"))


@pytest.mark.parametrize("keep", [0, 100, 0.5, -10])
def test_truncated_file_gives_clear_error(tmp_path: Path, keep: float) -> None:
    full = save_checkpoint(tmp_path / "full.pt", {"w": torch.randn(256, 64), "it": 3}).read_bytes()
    cut = tmp_path / "cut.pt"
    n = int(len(full) * keep) if isinstance(keep, float) else keep
    cut.write_bytes(full[:n])
    with pytest.raises(CorruptCheckpointError) as info:
        load_checkpoint(cut)
    msg = str(info.value)
    assert str(cut) in msg
    assert "expected a PyTorch zip checkpoint" in msg
    assert "empty" in msg or "truncated" in msg or "corrupt" in msg


def test_flipped_byte_in_tensor_data_is_detected(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.randn(256, 64)})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the tensor record; torch.load alone would not notice
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="CRC-32") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_random_bytes_are_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CorruptCheckpointError, match="noise.pt"):
        load_checkpoint(path)


def _side_effect(marker: str) -> str:
    """What a malicious pickle would run: here, create ``marker``."""
    Path(marker).write_text("code ran")
    return "payload"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (_side_effect, (self.marker,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pickled_code_is_refused_and_never_runs(tmp_path: Path, writer: str) -> None:
    bad, control = tmp_path / "bad.pt", tmp_path / "control.pt"
    bad_marker, control_marker = tmp_path / "ran-on-load", tmp_path / "ran-on-unsafe-load"
    for path, marker in ((bad, bad_marker), (control, control_marker)):
        state = {"model": {"w": torch.ones(2)}, "extra": _Payload(marker)}
        if writer == "torch.save":
            torch.save(state, path)
        else:
            path.write_bytes(pickle.dumps(state))

    # Positive control: unsafe loading of the same content does run the payload.
    if writer == "torch.save":
        torch.load(control, weights_only=False)
    else:
        pickle.loads(control.read_bytes())
    assert control_marker.exists()

    with pytest.raises((UnsafeCheckpointError, CorruptCheckpointError)) as info:
        load_checkpoint(bad)
    assert str(bad) in str(info.value)
    assert not bad_marker.exists(), "loading executed code from the checkpoint"
    if writer == "torch.save":
        assert isinstance(info.value, UnsafeCheckpointError)
        assert "_side_effect" in str(info.value)  # names the refused global


def test_crash_mid_write_keeps_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "last.pt", {"iteration": 1, "w": torch.zeros(8)})
    before = path.read_bytes()

    def crashing_save(obj: object, f: io.BufferedWriter, *args: object, **kwargs: object) -> None:
        f.write(b"PK\x03\x04 partial bytes of a new checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(DiskFullError, match="no space left on device while writing .*last.pt; the previous"):
        save_checkpoint(path, {"iteration": 2, "w": torch.ones(8)})
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert load_checkpoint(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_sigkill_mid_write_leaves_previous_checkpoint(tmp_path: Path) -> None:
    """A real SIGKILL while the new file is half written: the old checkpoint stays loadable."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"iteration": 1, "w": torch.zeros(1000)})
    child = textwrap.dedent(
        f"""
        import sys, time, torch
        from equiseg.engine import save_checkpoint
        real_save = torch.save
        def slow_save(obj, f, *a, **k):
            f.write(b"PK\\x03\\x04" + bytes(1 << 16))
            f.flush()
            print("MIDWRITE", flush=True)
            time.sleep(60)
        torch.save = slow_save
        save_checkpoint({str(path)!r}, {{"iteration": 2, "w": torch.ones(1000)}})
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "MIDWRITE"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    state = load_checkpoint(path)
    assert state["iteration"] == 1 and torch.equal(state["w"], torch.zeros(1000))
    # The stray temporary file is beside it, under a hidden name that never shadows the checkpoint.
    strays = [p.name for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert len(strays) == 1 and strays[0].startswith(".last.pt.") and strays[0].endswith(".tmp")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
