"""Trainer end to end on tiny synthetic data: exact resume, NaN guard, DDP, CLI, configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import equiseg
from equiseg.config import load_experiment
from equiseg.engine import CheckpointError, load_checkpoint
from equiseg.engine.train import NonFiniteLossError

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = {
    "name": "equiseg_b0",
    "embed_dims": [8, 16, 40, 64],
    "depths": [1, 1, 1, 1],
    "decoder_dim": 16,
    "drop_path_rate": 0.1,  # exercises the global RNG through resume
}


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from equiseg.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, layout="deliver", splits={"train": 8, "val": 4}, size=(64, 64), seed=0, progress=False)
    return root


def tiny_config(root: Path, work: Path, **train) -> equiseg.ExperimentConfig:
    return load_experiment(
        {
            "model": dict(TINY_MODEL),
            "data": {
                "root": str(root),
                "crop_size": [64, 64],
                "val_short_side": None,
                "batch_size": 2,
                "num_workers": 0,
            },
            "train": {
                "max_iters": 6,
                "warmup_iters": 2,
                "lr": 1e-3,
                "val_interval": 3,
                "log_interval": 1,
                "seed": 0,
                **train,
            },
            "work_dir": str(work),
        }
    )


def test_resume_is_bit_exact(synth_root, tmp_path):
    full = equiseg.train(tiny_config(synth_root, tmp_path / "full"), progress=False)
    assert full.iterations == 6
    part = equiseg.train(tiny_config(synth_root, tmp_path / "part"), progress=False, stop_after=4)
    assert part.iterations == 4  # stopped at the epoch boundary (4 iterations per epoch), off the val grid
    resumed = equiseg.train(tiny_config(synth_root, tmp_path / "part"), progress=False, resume=True)
    assert resumed.iterations == 6
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "part" / "last.pt")
    assert a["iter"] == b["iter"] == 6
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["scheduler"] == b["scheduler"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (tmp_path / "part" / "best.pt").exists() and (tmp_path / "part" / "config.yaml").exists()
    log = [json.loads(line) for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    assert log[0]["run"]["effective_batch"] == 2  # each start of the run records its batch
    steps = [r for r in log if "loss" in r]
    assert {"iter", "lr", "loss", "loss_ce", "loss_sgm"} <= set(steps[0])
    assert [r["iter"] for r in steps] == [1, 2, 3, 4, 5, 6]


def test_mid_epoch_resume_with_a_worker_matches_the_in_process_run(synth_root, tmp_path):
    # one loader with a worker process across epochs, resumed in the middle of epoch 0, gives the
    # same weights as the uninterrupted in-process run (augmentation depends on (seed, epoch, index) only)
    full = equiseg.train(tiny_config(synth_root, tmp_path / "full"), progress=False)
    cfg = tiny_config(synth_root, tmp_path / "part")
    cfg.data.num_workers = 1
    equiseg.train(cfg, progress=False, stop_after=3)
    equiseg.train(cfg, progress=False, resume=True)
    a = load_checkpoint(full.work_dir / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_epoch_batches_are_the_per_epoch_batches_from_any_start():
    from equiseg.engine.builders import EpochBatches, ResumableSampler

    order = ResumableSampler(range(10), num_replicas=1, rank=0, seed=5)  # 10 samples, batch 3: 3 per epoch
    expected = []
    for epoch in range(4):
        order.inner.set_epoch(epoch)
        perm = list(order.inner)
        expected += [[(epoch, i) for i in perm[b * 3 : (b + 1) * 3]] for b in range(3)]  # tail dropped
    for start in (0, 2, 3, 7):
        stream = iter(EpochBatches(order, 3, start=start))
        got = [next(stream) for _ in range(12 - start)]
        assert got == expected[start:]
        assert all(EpochBatches(order, 3).indices(start + k) == [i for _, i in b] for k, b in enumerate(got))


def test_nan_guard_stops_and_keeps_last_checkpoint(synth_root, tmp_path, monkeypatch):
    from equiseg.models import EQUISeg

    original = EQUISeg.compute_loss
    calls = {"n": 0}

    def poisoned(self, inputs, labels, generator=None):
        out = original(self, inputs, labels, generator)
        calls["n"] += 1
        if calls["n"] == 3:  # the third iteration (index 2) produces NaN
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(EQUISeg, "compute_loss", poisoned)
    with pytest.raises(
        NonFiniteLossError, match=r"non-finite loss at iteration 2 .*'loss_ce'.*samples \d+ \("
    ):
        equiseg.train(tiny_config(synth_root, tmp_path / "nan", val_interval=100), progress=False)
    ckpt = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert ckpt["iter"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    # the saved state is exactly that of a clean run stopped after 2 iterations
    monkeypatch.setattr(EQUISeg, "compute_loss", original)
    equiseg.train(tiny_config(synth_root, tmp_path / "clean", val_interval=100), progress=False, stop_after=2)
    clean = load_checkpoint(tmp_path / "clean" / "last.pt")
    for k, v in clean["model"].items():
        assert torch.equal(v, ckpt["model"][k]), k


def test_truncated_checkpoint_is_a_clear_error(synth_root, tmp_path):
    cfg = tiny_config(synth_root, tmp_path / "t", max_iters=1)
    equiseg.train(cfg, progress=False)
    path = tmp_path / "t" / "last.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="last.pt"):
        equiseg.train(cfg, progress=False, resume=True)


def test_checkpoint_of_other_architecture_is_refused(synth_root, tmp_path):
    cfg = tiny_config(synth_root, tmp_path / "a", max_iters=1)
    equiseg.train(cfg, progress=False)
    with pytest.raises(
        ValueError, match="model.hub is 'mean' in the config but 'selfquery' in the checkpoint"
    ):
        equiseg.evaluate(cfg, tmp_path / "a" / "last.pt", ["model.hub=mean"], progress=False)


def _run(*args, env=None, timeout=300):
    e = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    e.update(env or {})
    r = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=e, cwd=REPO, timeout=timeout
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _write_cfg(path: Path, root: Path, work: Path, **train) -> Path:
    import yaml

    cfg = tiny_config(root, work, **train)
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


@pytest.mark.slow
def test_ddp_two_processes_gloo(synth_root, tmp_path):
    cfg = _write_cfg(tmp_path / "ddp.yaml", synth_root, tmp_path / "ddp", max_iters=4, val_interval=4)
    _run(
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "equiseg",
        "--quiet",
        "train",
        str(cfg),
    )
    summary = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["iterations"] == 4
    assert summary["replicas_identical"] is True
    ddp_metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    single = equiseg.evaluate(cfg, tmp_path / "ddp" / "last.pt", progress=False)
    assert single["mIoU"] == pytest.approx(ddp_metrics["mIoU"], abs=1e-9)
    assert single["aAcc"] == pytest.approx(ddp_metrics["aAcc"], abs=1e-9)


def test_cli_synth_train_eval(tmp_path):
    data = tmp_path / "data"
    _run(
        "-m", "equiseg", "--quiet", "synth", "--out", str(data), "--train", "4", "--val", "2", "--size", "64"
    )
    cfg = _write_cfg(tmp_path / "c.yaml", data, tmp_path / "run", max_iters=2, val_interval=2)
    _run("-m", "equiseg", "--quiet", "train", str(cfg), "--set", "train.lr=5e-4")
    assert (tmp_path / "run" / "last.pt").exists()
    r = _run(
        "-m",
        "equiseg",
        "--quiet",
        "eval",
        str(cfg),
        "--checkpoint",
        str(tmp_path / "run" / "last.pt"),
        "--out",
        str(tmp_path / "ev"),
    )
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {"mIoU", "aAcc", "mAcc", "per_class", "per_case"} <= set(metrics)
    assert "| mIoU |" in (tmp_path / "ev" / "metrics.md").read_text()
    assert "mIoU" in r.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "equiseg", "train", str(cfg), "--set", "train.lrr=1"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert bad.returncode == 2 and "did you mean 'lr'" in bad.stderr and "Traceback" not in bad.stderr


def test_every_shipped_config_validates():
    files = sorted((REPO / "configs").rglob("*.yaml"))
    assert len(files) >= 13
    for f in files:
        cfg = load_experiment(f)
        cfg.model_config(num_classes=25)
    assert load_experiment(None).model["name"] == "equiseg_b0"
    tab3 = load_experiment(REPO / "configs" / "ablations" / "tab3_lambda40.yaml")
    assert tab3.model_config(25).lambda_sgm == 40.0 and tab3.model_config(25).depths == (2, 2, 2, 2)
    with pytest.raises(ValueError, match=r"unknown config key 'data.crop_szie'.*did you mean 'crop_size'"):
        load_experiment(REPO / "configs" / "demo.yaml", ["data.crop_szie=[64,64]"])


def test_ctrl_c_saves_a_resumable_checkpoint(synth_root, tmp_path, monkeypatch):
    """SIGINT mid-run finishes the iteration, saves last.pt, and resuming equals an uninterrupted run."""
    import signal

    from equiseg.models import EQUISeg

    original = EQUISeg.compute_loss
    calls = {"n": 0}

    def interrupting(self, inputs, labels, generator=None):
        calls["n"] += 1
        if calls["n"] == 3:  # during the third iteration, as a user pressing Ctrl-C would
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, inputs, labels, generator)

    monkeypatch.setattr(EQUISeg, "compute_loss", interrupting)
    cfg = tiny_config(synth_root, tmp_path / "int", val_interval=100)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup / `cmd &`
    result = equiseg.train(cfg, progress=False)
    assert result.iterations == 3  # the interrupted iteration was completed, then training stopped
    assert load_checkpoint(tmp_path / "int" / "last.pt")["iter"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored
    monkeypatch.setattr(EQUISeg, "compute_loss", original)
    equiseg.train(cfg, progress=False, resume=True)
    equiseg.train(tiny_config(synth_root, tmp_path / "ref", val_interval=100), progress=False)
    a = load_checkpoint(tmp_path / "int" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "ref" / "last.pt")["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())
