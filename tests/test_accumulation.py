"""Gradient accumulation (``train.accumulate_steps``) in the trainer, and modality dropout through it:
the same gradients as one large batch, optimiser steps as the unit of everything, the effective batch
in the run record, exact resume (also after a failure inside an accumulated step), DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import equiseg
import equiseg.engine.train as train_mod
from equiseg.config import load_experiment
from equiseg.engine import load_checkpoint
from equiseg.engine.builders import EpochBatches, ResumableSampler, SeededTrainSet
from equiseg.engine.train import DataFileError

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


def config(root: Path, work: Path, batch: int = 2, model: dict | None = None, **train):
    return load_experiment(
        {
            "model": {**TINY_MODEL, **(model or {})},
            "data": {
                "root": str(root),
                "crop_size": [64, 64],
                "val_short_side": None,
                "batch_size": batch,
                "num_workers": 0,
            },
            "train": {
                "max_iters": 4,
                "warmup_iters": 1,
                "lr": 1e-3,
                "val_interval": 100,
                "log_interval": 1,
                "seed": 0,
                **train,
            },
            "work_dir": str(work),
        }
    )


def _log(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]


def _same_state(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["iter"] == cb["iter"]
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ca["scheduler"] == cb["scheduler"]


def test_accumulated_micro_batches_give_the_gradients_of_one_large_batch(synth_root, tmp_path, monkeypatch):
    """K = 2 at batch 1 equals K = 1 at batch 2 (fp32 tolerance), where nothing depends on the batch
    as a whole: BatchNorm in eval mode, no drop-path / dropout, no SGM (its "spec" prototypes are
    batch statistics), and no ignored pixels (the CE is a mean over a batch's labelled pixels)."""
    monkeypatch.setattr(
        torch.nn.BatchNorm2d, "train", lambda self, mode=True: torch.nn.Module.train(self, False)
    )
    original = SeededTrainSet.__getitem__

    def no_ignore(self, key):
        inputs, label = original(self, key)
        return inputs, torch.where(label == 255, torch.zeros_like(label), label)

    monkeypatch.setattr(SeededTrainSet, "__getitem__", no_ignore)
    grads: dict[str, list[dict[str, torch.Tensor]]] = {}
    real_norm = train_mod._grad_norm

    def recording(model, opt, scaler, clip):
        grads.setdefault(run, []).append({k: p.grad.clone() for k, p in model.named_parameters()})
        return real_norm(model, opt, scaler, clip)

    monkeypatch.setattr(train_mod, "_grad_norm", recording)
    model = {"drop_path_rate": 0.0, "head_dropout": 0.0, "sgm": False}
    for run, batch, k in (("large", 2, 1), ("accumulated", 1, 2)):
        equiseg.train(
            config(synth_root, tmp_path / run, batch, model, max_iters=2, accumulate_steps=k), progress=False
        )
    assert len(grads["large"]) == len(grads["accumulated"]) == 2  # one optimiser step each
    for step in range(2):
        for name, g in grads["large"][step].items():
            diff = (g - grads["accumulated"][step][name]).norm()
            assert diff <= 1e-5 * g.norm() + 1e-9, (step, name, float(diff), float(g.norm()))
    # (not the weights: AdamW's first steps move each weight by about ±lr whatever the gradient's size,
    # so a gradient that is 0 in exact arithmetic -- the attention's key bias -- moves by rounding noise)
    la = [r["loss"] for r in _log(tmp_path / "large") if "loss" in r]
    lb = [r["loss"] for r in _log(tmp_path / "accumulated") if "loss" in r]
    assert la == pytest.approx(lb, rel=1e-5)  # the logged loss: the mean over the micro-batches


def test_iterations_are_optimiser_steps_and_the_effective_batch_is_recorded(
    synth_root, tmp_path, monkeypatch
):
    from equiseg.models import EQUISeg

    calls = {"n": 0}
    original = EQUISeg.compute_loss

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EQUISeg, "compute_loss", counting)
    work = tmp_path / "run"
    result = equiseg.train(config(synth_root, work, 2, max_iters=3, accumulate_steps=2), progress=False)
    assert result.iterations == 3 and calls["n"] == 6  # 3 steps × 2 micro-batches
    ckpt = load_checkpoint(work / "last.pt")
    # 8 samples, 2 × 2 per step: 2 steps per epoch, so step 3 is in epoch 1
    assert ckpt["iter"] == 3 and ckpt["epoch"] == 1 and ckpt["scheduler"]["last_epoch"] == 3
    record = {"batch_size": 2, "accumulate_steps": 2, "world_size": 1, "effective_batch": 4}
    assert ckpt["batch"] == record
    summary = json.loads((work / "train_summary.json").read_text())
    assert {k: summary[k] for k in record} == record
    assert summary["modality_dropout"] == {"mode": "none", "p": 0.5, "fill": "zero"}
    log = _log(work)
    assert log[0] == {"iter": 0, "run": {**record, "modality_dropout": summary["modality_dropout"]}}
    assert [r["iter"] for r in log if "loss" in r] == [1, 2, 3]
    assert [r["epoch"] for r in log if "loss" in r] == [0, 0, 1]  # the epoch each step ran in


def test_a_step_never_straddles_epochs():
    order = ResumableSampler(range(11), num_replicas=1, rank=0, seed=5)  # 11 samples, 2 × 2 per step
    batches = EpochBatches(order, 2, accumulate=2)
    assert batches.per_epoch == 2  # 8 of 11 samples per epoch; 3 dropped
    stream = iter(batches)
    got = [next(stream) for _ in range(8)]  # 2 epochs × 2 steps × 2 micro-batches
    for epoch in range(2):
        order.inner.set_epoch(epoch)
        perm = list(order.inner)
        for step in range(2):
            micro = got[(epoch * 2 + step) * 2 : (epoch * 2 + step) * 2 + 2]
            assert [i for m in micro for _, i in m] == perm[step * 4 : step * 4 + 4]
            assert all(e == epoch for m in micro for e, _ in m)
            assert batches.indices(epoch * 2 + step) == perm[step * 4 : step * 4 + 4]
            assert batches.indices(epoch * 2 + step, micro=1) == perm[step * 4 + 2 : step * 4 + 4]
    # from any start: the stream of that step on
    assert [next(iter(EpochBatches(order, 2, start=s, accumulate=2))) for s in (1, 3)] == [got[2], got[6]]


@pytest.mark.parametrize("fill", ["zero", "absent"])
def test_resume_with_accumulation_and_modality_dropout_is_exact(synth_root, tmp_path, fill):
    drop = {"mode": "subset", "fill": fill}
    kw = dict(max_iters=5, accumulate_steps=2, modality_dropout=drop)
    equiseg.train(config(synth_root, tmp_path / "full", **kw), progress=False)
    part = config(synth_root, tmp_path / "part", **kw)
    assert equiseg.train(part, progress=False, stop_after=3).iterations == 3  # mid-epoch 1
    assert equiseg.train(part, progress=False, resume=True).iterations == 5
    _same_state(tmp_path / "full" / "last.pt", tmp_path / "part" / "last.pt")
    # and the dropout changed the training: not the run without it
    equiseg.train(config(synth_root, tmp_path / "plain", max_iters=5, accumulate_steps=2), progress=False)
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "plain" / "last.pt")["model"]
    assert any(not torch.equal(v, b[k]) for k, v in a.items())


def test_accumulate_steps_cannot_change_on_resume(synth_root, tmp_path):
    from equiseg.engine.rundir import RunDirError

    cfg = config(synth_root, tmp_path / "run", max_iters=4, accumulate_steps=2)
    equiseg.train(cfg, progress=False, stop_after=1)
    with pytest.raises(RunDirError, match="train.accumulate_steps"):
        equiseg.train(config(synth_root, tmp_path / "run", max_iters=4), progress=False, resume=True)


def test_a_data_error_inside_an_accumulated_step_keeps_the_step_boundary(synth_root, tmp_path, monkeypatch):
    """The file of the second micro-batch of step 2 fails: the first micro-batch's forward has already
    moved BN statistics and drawn drop-path numbers; last.pt must hold iteration 2 as a clean run has it,
    and resuming once the file is fixed must give the clean run's weights exactly."""
    kw = dict(max_iters=4, accumulate_steps=2)
    equiseg.train(config(synth_root, tmp_path / "clean", **kw), progress=False)
    order = ResumableSampler(range(8), num_replicas=1, rank=0, seed=0)
    bad_index = EpochBatches(order, 2, accumulate=2).indices(2, micro=1)[0]  # step 2 = epoch 1, step 0
    original = SeededTrainSet.__getitem__
    broken = {"on": True}

    def failing(self, key):
        if broken["on"] and key == (1, bad_index):
            raise OSError(5, "Input/output error", str(synth_root / "img" / "planted.png"))
        return original(self, key)

    monkeypatch.setattr(SeededTrainSet, "__getitem__", failing)
    work = tmp_path / "run"
    with pytest.raises(
        DataFileError, match=r"saved iteration 2 to .*last.pt.*planted.png, then continue with --resume"
    ):
        equiseg.train(config(synth_root, work, **kw), progress=False)
    broken["on"] = False
    ckpt, clean2 = load_checkpoint(work / "last.pt"), None
    assert ckpt["iter"] == 2
    equiseg.train(config(synth_root, tmp_path / "clean2", **kw), progress=False, stop_after=2)
    clean2 = load_checkpoint(tmp_path / "clean2" / "last.pt")
    for k, v in clean2["model"].items():  # BN running stats included: the half step was undone
        assert torch.equal(v, ckpt["model"][k]), k
    assert equiseg.train(config(synth_root, work, **kw), progress=False, resume=True).iterations == 4
    _same_state(tmp_path / "clean" / "last.pt", work / "last.pt")


@pytest.mark.slow
def test_ddp_with_accumulation_and_absent_modalities(synth_root, tmp_path):
    """Two gloo processes, 2 micro-batches per step (no_sync on the first), modalities dropped as
    absent inputs (parts of the network unused in some steps): the replicas stay identical."""
    cfg = config(
        synth_root,
        tmp_path / "ddp",
        1,
        max_iters=3,
        accumulate_steps=2,
        modality_dropout={"mode": "subset", "fill": "absent"},
    )
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "equiseg",
         "--quiet", "train", str(path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "train_summary.json").read_text())
    assert summary["iterations"] == 3 and summary["replicas_identical"] is True
    assert summary["effective_batch"] == 4 and summary["world_size"] == 2 and summary["accumulate_steps"] == 2
