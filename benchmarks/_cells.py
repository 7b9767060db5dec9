"""One benchmark cell: a model (ours, or the public reference implementation from a checkout) built,
FLOP-counted and timed for a forward pass and a training step, with the fp32 matmul rate measured in the
same process. Shared by ``model_speed.py`` and ``compare_references.py``.

A cell is described by a :class:`Cell` (JSON-serialisable). :func:`run_cell` measures it in this process;
:func:`run_fresh` runs this file as a fresh Python process on the cell's JSON and reads back the one JSON
line it prints, so the process's peak RSS (``ru_maxrss``) belongs to that cell alone — and the public
references, which each register a top-level package named ``semseg``, never meet in one process.

    python benchmarks/_cells.py '{"model": "segformer_b0", "modalities": ["rgb"], "size": 64, "batch": 1}'

Training step: ours = ``model.compute_loss`` (with the SGM for EQUISeg) + backward + AdamW; the public
code = cross-entropy on its logits + backward + AdamW (same optimiser builder, same inputs and labels).
FLOPs: one eval-mode forward from :func:`equiseg.engine.profile.forward_flops` (``torch.utils.flop_counter``,
a multiply-add = 2 FLOPs, as in the matmul rate); a training step is counted as 3× the forward.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # reference_models is a sibling script, not a package module
    sys.path.insert(0, str(HERE))

NUM_CLASSES = 25  # DeLiVER's
EXTRA_MODALITIES = ("m5", "m6", "m7", "m8")  # names for N > 4 (model_speed's --n)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
TRAIN_FLOPS_PER_FORWARD = 3  # forward + backward ≈ 3 forwards


@dataclass
class Cell:
    """What one cell measures. ``impl``: ``"ours"`` (``equiseg.create_model(model)``) or ``"public"``
    (:func:`reference_models.build_reference` of the model's architecture from the checkout ``root``)."""

    model: str
    modalities: list[str]
    size: int = 512
    batch: int = 2
    repeats: int = 3
    impl: str = "ours"
    root: str | None = None
    device: str = "cpu"
    threads: int | None = None
    flops: int | None = None  # forward FLOPs to rate the times against (None: this cell's own count)
    matmul_size: int = 2048
    matmul_repeats: int = 5
    # the CPU allocator mode the cell runs under (None: $EQUISEG_CPU_ALLOCATOR, default retain, as the
    # `equiseg` command applies it; see equiseg.engine.allocator)
    allocator: str | None = None
    extra: dict = field(default_factory=dict)  # free-form, copied into the result

    @classmethod
    def from_json(cls, text: str) -> Cell:
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


# ---------------------------------------------------------------------------------------------------------
# measurements


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """fp32 ``n×n @ n×n`` rate in GFLOP/s, best of ``repeats`` (after two warm-up products)."""
    from equiseg.engine.profile import timeit

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = min(timeit(lambda: a @ b, device, 1, warmup=2 if i == 0 else 0) for i in range(repeats))
    return 2 * n**3 / (best / 1e3) / 1e9


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA: allocator stats; Linux: VmHWM through ``clear_refs``)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    clear = Path("/proc/self/clear_refs")
    if clear.exists():
        try:
            clear.write_text("5")  # resets VmHWM (peak RSS) on Linux
        except OSError:
            pass


def peak_mb(device: torch.device) -> float:
    """Peak memory in MiB since :func:`reset_peak` (falls back to the process's lifetime peak RSS)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return max_rss_mb()


def max_rss_mb() -> float:
    """The process's lifetime peak resident set in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def cpu_info() -> dict:
    """CPU model name, the flags that matter for fp32/bf16 kernels, core count, torch version/capability."""
    info = {"cpu": "unknown", "flags": {f: None for f in CPU_FLAGS}, "cores": os.cpu_count()}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
        flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
        info["cpu"] = names[0] if names else "unknown"
        info["flags"] = {f: f in flags for f in CPU_FLAGS}
    info["torch"] = torch.__version__
    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    info["threads"] = torch.get_num_threads()
    return info


# ---------------------------------------------------------------------------------------------------------
# models and steps


def build_model(cell: Cell) -> torch.nn.Module:
    """The cell's model, random init (seed 0), on the cell's device."""
    import equiseg

    torch.manual_seed(0)
    if cell.impl == "public":
        from reference_models import build_reference

        kind = equiseg.models.model_config(cell.model).arch
        size = cell.model.rsplit("_", 1)[1]
        model = build_reference(kind, cell.root, size, NUM_CLASSES, len(cell.modalities))
    elif cell.impl == "ours":
        model = equiseg.create_model(cell.model, num_classes=NUM_CLASSES, modalities=list(cell.modalities))
    else:
        raise ValueError(f"unknown implementation {cell.impl!r}; choose from ours, public")
    return model.to(cell.device)


def make_inputs(batch: int, size: int, n: int, device) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``n`` inputs ``batch×3×size×size`` and labels ``batch×size×size`` (fixed seed)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = [torch.randn(batch, 3, size, size, generator=g).to(device) for _ in range(n)]
    labels = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=g).to(device)
    return x, labels


def train_step_fn(model: torch.nn.Module, x: list[torch.Tensor], labels: torch.Tensor, public: bool):
    """A closure running one training step: loss, backward, AdamW step, zero grad."""
    from equiseg.engine import build_optimizer

    opt = build_optimizer(model, lr=6e-5)
    sgen = torch.Generator().manual_seed(0)

    def step():
        if public:
            loss = torch.nn.functional.cross_entropy(model(x), labels, ignore_index=255)
        else:
            loss = model.compute_loss(x, labels, generator=sgen).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def time_forward_and_step(
    model: torch.nn.Module, x, labels, *, public: bool, device: torch.device, repeats: int
) -> dict:
    """Median forward (eval, inference mode) and training-step times in ms, each with its peak memory."""
    from equiseg.engine.profile import timeit

    model.eval()

    def fwd():
        with torch.inference_mode():
            model(x)

    reset_peak(device)
    fwd_ms = timeit(fwd, device, repeats)
    fwd_mem = peak_mb(device)
    model.train()
    step = train_step_fn(model, x, labels, public)
    reset_peak(device)
    step_ms = timeit(step, device, repeats)
    step_mem = peak_mb(device)
    return dict(fwd_ms=fwd_ms, step_ms=step_ms, fwd_mem=fwd_mem, step_mem=step_mem)


def run_cell(cell: Cell) -> dict:
    """Measure ``cell`` in this process; returns a JSON-serialisable dict (times in s, memory in MiB)."""
    from equiseg.engine.allocator import configure_cpu_allocator, cpu_allocator
    from equiseg.engine.profile import count_params, forward_flops

    # first, as the `equiseg` command does: importing equiseg applies nothing
    configure_cpu_allocator(cell.allocator)
    if cell.threads:
        torch.set_num_threads(cell.threads)
    device = torch.device(cell.device)
    base_rss = max_rss_mb()  # after the imports: what any cell costs before it does anything
    mm_start = matmul_gflops(device, cell.matmul_size, cell.matmul_repeats)
    model = build_model(cell)
    x, labels = make_inputs(cell.batch, cell.size, len(cell.modalities), device)
    own_flops = forward_flops(model, x)
    flops = cell.flops if cell.flops is not None else own_flops
    t = time_forward_and_step(
        model, x, labels, public=cell.impl == "public", device=device, repeats=cell.repeats
    )
    mm_end = matmul_gflops(device, cell.matmul_size, cell.matmul_repeats)
    mm = max(mm_start, mm_end)  # the machine is shared: the better of the two is the nearer to its peak
    fwd_s, step_s = t["fwd_ms"] / 1e3, t["step_ms"] / 1e3
    fwd_rate = flops / 1e9 / fwd_s
    step_rate = TRAIN_FLOPS_PER_FORWARD * flops / 1e9 / step_s
    return dict(
        impl=cell.impl,
        model=cell.model,
        modalities=list(cell.modalities),
        n=len(cell.modalities),
        size=cell.size,
        batch=cell.batch,
        repeats=cell.repeats,
        device=cell.device,
        params_m=count_params(model) / 1e6,
        gflops=flops / 1e9,
        gflops_own=own_flops / 1e9,
        fwd_s=fwd_s,
        step_s=step_s,
        fwd_peak_mb=t["fwd_mem"],
        step_peak_mb=t["step_mem"],
        peak_rss_mb=max_rss_mb(),
        base_rss_mb=base_rss,
        fwd_gflops_s=fwd_rate,
        step_gflops_s=step_rate,
        matmul_gflops_s=mm,
        matmul_gflops_s_start=mm_start,
        matmul_gflops_s_end=mm_end,
        matmul_size=cell.matmul_size,
        fwd_pct_mm=100 * fwd_rate / mm,
        step_pct_mm=100 * step_rate / mm,
        threads=torch.get_num_threads(),
        allocator=cpu_allocator(),
        torch=torch.__version__,
        **cell.extra,
    )


def run_fresh(cell: Cell, timeout: float | None = None) -> dict:
    """Run ``cell`` in a fresh Python process (this file as a script) and return its result dict.

    With ``cell.threads`` the child also gets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``. Raises
    ``RuntimeError`` with the child's stderr tail when it fails."""
    env = dict(os.environ)
    if cell.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(cell.threads)
    if cell.allocator is not None:
        env["EQUISEG_CPU_ALLOCATOR"] = cell.allocator  # the child's environment says what run_cell applies
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), cell.to_json()],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"cell {cell.impl}/{cell.model} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1])


if __name__ == "__main__":
    print(json.dumps(run_cell(Cell.from_json(sys.argv[1]))), flush=True)
