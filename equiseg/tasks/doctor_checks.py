"""The self-checks of ``equiseg doctor --check``: every accelerator path on a tiny EQUISeg, each a
:class:`CheckResult` (PASS, FAIL with the error, SKIPPED with the reason). The order they run in and
what each row is called: :func:`equiseg.tasks.doctor.run_checks`."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import os
import sys
import tempfile
import time
from typing import Any, Literal

from equiseg.tasks.doctor_report import OPTIONAL_PACKAGES, _package_version

Status = Literal["PASS", "FAIL", "SKIPPED"]


@dataclasses.dataclass
class CheckResult:
    """One accelerator path's verdict.

    Attributes:
        name: A stable id, ``cpu.fp32_train_step``, ``cuda.nccl`` ...
        device: ``CPU`` or ``CUDA``.
        label: What was checked, for people.
        status: ``PASS``, ``FAIL`` or ``SKIPPED``.
        detail: What was measured (PASS), the error (FAIL) or why it did not run (SKIPPED).
        seconds: How long it took (None when skipped).
    """

    name: str
    device: str
    label: str
    status: Status
    detail: str
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Skip(Exception):
    """Raised inside a check: it does not apply here (the message says why)."""


NUM_CLASSES = 5
MODALITIES = ("rgb", "depth")
SIZE = 64
BATCH = 2
CHECK_MODEL = dict(
    embed_dims=(32, 64, 160, 256),
    depths=(1, 1, 1, 1),
    decoder_dim=64,
    drop_path_rate=0.0,
    head_dropout=0.0,
    lambda_sgm=1.0,
)
"""The tiny EQUISeg of the checks: MiT-B0's widths (attention head dimension 32, as every MiT variant),
one block per stage, no dropout (so the losses of two paths compare: only their arithmetic differs)."""
CHECK_DESCRIPTION = (
    f"a tiny EQUISeg (MiT-B0 widths, one block per stage, {len(MODALITIES)} modalities, batch {BATCH}, "
    f"{SIZE}×{SIZE})"
)
LOSS_RTOL = {"fp16": 0.05, "bf16": 0.05}  # autocast's loss against fp32's at the same weights and data
# channels-last and compiled against the eager fp32 result, relative: other kernels round differently,
# and on a GPU cuDNN's fp32 convolutions run in TF32 by default (10-bit mantissa), so they may differ more
SAME_RTOL = {"cpu": 1e-3, "cuda": 2e-2}


def _tiny_model():
    import torch

    from equiseg.models import create_model

    with torch.random.fork_rng(devices=[]):  # the caller's RNG stream does not move
        torch.manual_seed(0)
        return create_model("equiseg_b0", num_classes=NUM_CLASSES, modalities=MODALITIES, **CHECK_MODEL)


def _batch(device) -> tuple[list, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(BATCH, 3, SIZE, SIZE, generator=g).to(device) for _ in MODALITIES]
    labels = torch.randint(0, NUM_CLASSES, (BATCH, SIZE, SIZE), generator=g)
    labels[:, :4] = 255  # a band of ignored pixels, as real labels have
    return inputs, labels.to(device)


def _pairing():
    """The SGM's pairing generator, seeded alike for every check, so their losses compare."""
    import torch

    return torch.Generator().manual_seed(0)


def _finite_grads(model) -> bool:
    import torch

    return all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _train_step(model, device, *, dtype=None, scaler=None, channels_last=False, steps=1) -> dict[str, Any]:
    """``steps`` optimiser steps of ``model`` on the fixed batch; returns the first loss, whether the
    gradients were finite and whether the weights moved."""
    import torch

    inputs, labels = _batch(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = [x.contiguous(memory_format=torch.channels_last) for x in inputs]
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    first, finite = None, True
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(inputs, labels, generator=_pairing()).loss
        if first is None:
            first = float(loss.detach().float())
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            finite = finite and _finite_grads(model)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            finite = finite and _finite_grads(model)
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    moved = any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))
    return {"loss": first, "finite": finite, "moved": moved}


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise AssertionError(message)


def _check_fp32(model, device) -> tuple[str, float]:
    import math

    r = _train_step(copy.deepcopy(model), device)
    _expect(math.isfinite(r["loss"]), f"loss is {r['loss']}")
    _expect(r["finite"], "non-finite gradients")
    _expect(r["moved"], "the optimiser step left every weight unchanged")
    return f"loss {r['loss']:.4f}, finite gradients, weights updated", r["loss"]


def _check_autocast(model, device, precision: str, reference: float | None) -> str:
    import math

    import torch

    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    r = _train_step(copy.deepcopy(model), device, dtype=dtype, scaler=scaler, steps=2 if scaler else 1)
    _expect(math.isfinite(r["loss"]), f"loss is {r['loss']}")
    if scaler is None:
        _expect(r["finite"], "non-finite gradients")
    _expect(r["moved"], "no optimiser step was taken (the grad scaler skipped every step)")
    text = f"loss {r['loss']:.4f}"
    if reference is not None:
        rel = abs(r["loss"] - reference) / max(abs(reference), 1e-6)
        _expect(
            rel <= LOSS_RTOL[precision], f"loss {r['loss']:.4f} vs fp32 {reference:.4f} ({rel:.1%} apart)"
        )
        text += f" (fp32 {reference:.4f}, {rel:.2%} apart)"
    if scaler is not None:
        text += f", GradScaler scale now {scaler.get_scale():g}"
    return text + ", weights updated"


def _check_channels_last(model, device) -> str:
    import torch

    inputs, _ = _batch(device)
    net = copy.deepcopy(model).eval()
    with torch.inference_mode():
        ref = net(inputs).float()
        net = net.to(memory_format=torch.channels_last)
        out = net([x.contiguous(memory_format=torch.channels_last) for x in inputs]).float()
    diff = float((out - ref).abs().max())
    scale = float(ref.abs().max())
    tol = SAME_RTOL[device.type] * max(scale, 1.0)
    _expect(diff <= tol, f"logits differ from the contiguous forward by {diff:.2e} (tolerance {tol:.1e})")
    r = _train_step(copy.deepcopy(model), device, channels_last=True)
    _expect(r["finite"] and r["moved"], "the channels-last training step gave non-finite or no updates")
    return f"logits match the contiguous forward (max |Δ| {diff:.1e}); a training step ran"


def _check_sdpa(device) -> str:
    """The backend torch picks for stage 1's attention of a MiT (head dim 32, spatial reduction 8),
    and its output against the math backend."""
    import torch
    import torch.nn.functional as F

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    g = torch.Generator().manual_seed(0)
    tokens = (SIZE // 4) ** 2
    q = torch.randn(BATCH * len(MODALITIES), 1, tokens, 32, generator=g).to(device, dtype)
    kv = torch.randn(2, BATCH * len(MODALITIES), 1, max(tokens // 64, 1), 32, generator=g).to(device, dtype)
    chosen = "not exposed by this torch"
    choice = getattr(torch, "_fused_sdp_choice", None)
    if choice is not None:
        try:
            from torch.nn.attention import SDPBackend

            chosen = SDPBackend(int(choice(q, kv[0], kv[1]))).name.lower()
        except Exception as e:  # the query is private: report, do not fail on it
            chosen = f"unknown ({type(e).__name__})"
    out = F.scaled_dot_product_attention(q, kv[0], kv[1])
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            ref = F.scaled_dot_product_attention(q.float(), kv[0].float(), kv[1].float())
    except ImportError:
        ref = torch.softmax(q.float() @ kv[0].float().transpose(-2, -1) / 32**0.5, -1) @ kv[1].float()
    diff = float((out.float() - ref).abs().max())
    tol = 1e-2 if dtype == torch.float16 else 1e-4
    _expect(diff <= tol, f"{chosen} backend differs from the math backend by {diff:.2e}")
    shape = "×".join(map(str, q.shape))
    return f"{chosen} for {str(dtype).removeprefix('torch.')} q {shape} (max |Δ| vs math {diff:.1e})"


def _check_compile(model, device, reference: float, backend: str = "inductor") -> str:
    """One training step through ``torch.compile`` (``backend``: inductor, what users get; the tests
    use a cheaper one), its loss against the eager fp32 step's."""
    import torch

    try:
        import torch._dynamo as dynamo
    except ImportError:
        dynamo = None
    if device.type == "cuda" and _package_version("triton", OPTIONAL_PACKAGES["triton"]) is None:
        raise AssertionError("triton is not installed: torch.compile cannot generate GPU kernels")
    net = copy.deepcopy(model)
    compiled = torch.compile(net, backend=backend)
    inputs, labels = _batch(device)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    start = time.perf_counter()
    try:
        loss = compiled(inputs, labels, generator=_pairing()).loss
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    finally:
        if dynamo is not None:
            dynamo.reset()  # drop the compiled graphs
    took = time.perf_counter() - start
    value = float(loss.detach())
    rel = abs(value - reference) / max(abs(reference), 1e-6)
    _expect(rel <= SAME_RTOL[device.type], f"compiled loss {value:.5f} vs eager {reference:.5f}")
    _expect(_finite_grads(net), "non-finite gradients")
    return f"one training step compiled and run in {took:.1f} s, loss matches eager ({rel:.1e} apart)"


def _check_process_group(backend: str, device) -> str:
    """A one-process group joined through a file store (no network port), one all-reduce, destroyed."""
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise _Skip("this torch build has no torch.distributed")
    if backend == "nccl" and not dist.is_nccl_available():
        raise AssertionError("this torch build has no NCCL: multi-GPU training (DDP) cannot run")
    if backend == "gloo" and not dist.is_gloo_available():
        raise AssertionError("this torch build has no gloo: CPU DDP cannot run")
    if dist.is_initialized():
        raise _Skip("a process group already runs in this process")
    with tempfile.TemporaryDirectory(prefix="equiseg_doctor_") as tmp:
        store = dist.FileStore(os.path.join(tmp, "store"), 1)
        kwargs: dict[str, Any] = {"timeout": datetime.timedelta(seconds=60)}
        if backend == "nccl":
            kwargs["device_id"] = device
        dist.init_process_group(backend, store=store, rank=0, world_size=1, **kwargs)
        try:
            t = torch.full((4,), 2.0, device=device)
            dist.all_reduce(t)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            _expect(bool((t == 2.0).all()), f"all_reduce over one process changed the tensor to {t.tolist()}")
        finally:
            dist.destroy_process_group()
    version = ""
    if backend == "nccl":
        v = torch.cuda.nccl.version()
        version = " " + (".".join(map(str, v)) if isinstance(v, tuple) else str(v))
    return f"{backend}{version}: a one-process group joined, all_reduce ran, destroyed"


def _peak_cpu() -> str:
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if sys.platform == "darwin":
        kib //= 1024  # bytes there
    return f"peak resident memory of this process {kib / 1024:.0f} MiB"


def _peak_cuda(device) -> str:
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    alloc, reserved = torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)
    return (
        f"peak {alloc / 2**20:.0f} MiB allocated, {reserved / 2**20:.0f} MiB reserved by these checks "
        f"(of {total / 2**30:.1f} GiB on {torch.cuda.get_device_name(device)})"
    )


def check_cuda_device(device: str, where: str = "cuda_device") -> str:
    """``device`` if it names a GPU (``cuda`` or ``cuda:N``) this process can see -- or any GPU where
    none is visible (the CUDA rows are then SKIPPED).

    Raises:
        ValueError: one line naming ``where``: not ``cuda[:N]``, or ``N`` beyond the visible GPUs.
    """
    import re

    import torch

    m = re.fullmatch(r"cuda(?::(\d+))?", str(device).strip())
    if m is None:
        raise ValueError(f"{where}: expected cuda or cuda:N, got {device!r}")
    if m.group(1) is not None and torch.cuda.is_available() and int(m.group(1)) >= torch.cuda.device_count():
        raise ValueError(
            f"{where}: {device} asked for, but only {torch.cuda.device_count()} GPU(s) are visible"
        )
    return str(device).strip()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, AssertionError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= 300 else text[:300] + " ..."


def format_checks(results: list[CheckResult]) -> str:
    """The check rows as text, then a one-line summary (no trailing newline)."""
    lines = [format_check(r) for r in results]
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIPPED")}
    lines.append(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIPPED']} skipped")
    return "\n".join(lines)


def format_check(r: CheckResult) -> str:
    """``PASS     CPU   fp32 training step           0.41 s  loss 1.79 ...``"""
    took = f"{r.seconds:6.2f} s" if r.seconds is not None else " " * 8
    return f"{r.status:<8} {r.device:<5} {r.label:<27} {took}  {r.detail}"
