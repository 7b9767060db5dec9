"""The SGM's two conventions side by side on the demo model's real stage features (loss value and the
gradient norm it puts on each stage's features), next to the cross-entropy's gradient at the same
features -- what a given λ means under each convention.

    # the demo model at its init and after training (e.g. a `study` or `equiseg demo` checkpoint)
    python benchmarks/sgm_conventions.py --data-root demo_out/data --checkpoint demo_out/run/best.pt
    # smoke test (seconds)
    python benchmarks/sgm_conventions.py --data-root DIR --sizes 64 --batch 1

For every model (``init``: ``configs/demo.yaml``'s EQUISeg-B0 as initialised with ``--seed``; then each
``--checkpoint``) and every input size (``128``: the demo's own; ``1024``: the same samples resized to
1024², the paper's crop, whose stage grids are 256² ... 32²), one forward pass of the first ``--batch``
val samples gives the four post-LN stage features (the SGM's default reading). They are then treated as
leaves: per stage, ``L_s`` under each convention with the same teacher/student pairs (generator
``--pair-seed``), ``‖∂L_s/∂f_i‖`` at that stage's features, and ``‖∂L_CE/∂f_i‖`` of the head's
cross-entropy through the decoder. Everything in fp32, in eval mode (no dropout).

Writes ``OUT/sgm_conventions.json`` and ``.md`` and prints the table with the CPU model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import equiseg
from equiseg.config import load_experiment
from equiseg.engine.builders import build_val_dataset
from equiseg.engine.precision import cpu_model_name
from equiseg.models import build_model
from equiseg.models.sgm import SGM_CONVENTIONS, sgm_loss

DEMO_CONFIG = Path(equiseg.__file__).parent / "configs" / "demo.yaml"


def _batch(dataset: Any, n: int, size: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The first ``n`` samples, inputs resized (bilinear) and labels (nearest) to ``size``²."""
    items = [dataset[i] for i in range(n)]
    mods = len(items[0][0])
    inputs = [torch.stack([it[0][m] for it in items]) for m in range(mods)]
    labels = torch.stack([it[1] for it in items])
    if inputs[0].shape[-1] != size or inputs[0].shape[-2] != size:
        inputs = [F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False) for x in inputs]
        labels = F.interpolate(labels[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
    return inputs, labels


def measure(model: torch.nn.Module, inputs: list[torch.Tensor], labels: torch.Tensor, pair_seed: int) -> list:
    """Per stage: each convention's loss and feature-gradient norm, and the CE's feature-gradient norm."""
    model.eval()
    cfg = model.cfg
    with torch.no_grad():
        xs, present = model.prepare(inputs)
        feats = model._encode(xs, present)
    leaves = [f.detach().float().contiguous().requires_grad_(True) for f in feats]
    logits = model._decode(leaves, xs[0].shape[-2:])
    ce = model.segmentation_loss(logits, labels)
    ce_grads = torch.autograd.grad(ce, leaves)
    rows = []
    for i, leaf in enumerate(leaves):
        row: dict[str, Any] = {
            "stage": i + 1,
            "grid": list(leaf.shape[-2:]),
            "channels": leaf.shape[2],
            "ce_grad_norm": ce_grads[i].norm().item(),
        }
        for conv in SGM_CONVENTIONS:
            loss = sgm_loss([leaf], labels, cfg.num_classes, convention=conv,
                            generator=torch.Generator().manual_seed(pair_seed))  # fmt: skip
            (grad,) = torch.autograd.grad(loss, leaf)
            row[f"{conv}_loss"] = loss.item()
            row[f"{conv}_grad_norm"] = grad.norm().item()
        row["loss_ratio"] = row["spec_loss"] / max(row["reference_loss"], 1e-30)
        row["grad_ratio"] = row["spec_grad_norm"] / max(row["reference_grad_norm"], 1e-30)
        rows.append(row)
    return rows


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def markdown(result: dict[str, Any]) -> str:
    lam = result["lambda"]
    lines = [
        "# The SGM's two conventions on the demo model's stage features",
        "",
        f"CPU: {result['cpu']}; torch {result['torch']}; batch {result['batch']} val samples of "
        f"`{result['data_root']}`, teacher/student pairs from seed {result['pair_seed']} (the same for both "
        "conventions). Per stage: `L_s` and `‖∂L_s/∂f‖` at the post-LN stage features under each "
        f"convention, their ratio spec/reference, and λ·‖∂L_s/∂f‖ (λ = {lam}) against the cross-entropy's "
        "‖∂L_CE/∂f‖ through the head.",
    ]
    for block in result["blocks"]:
        lines += [
            "",
            f"## {block['model']}, input {block['size']}²",
            "",
            "| Stage | grid | L_s spec | L_s reference | ratio | ‖∂L_s/∂f‖ spec | ‖∂L_s/∂f‖ reference | ratio | "
            "λ·grad spec / CE grad | λ·grad reference / CE grad |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in block["stages"]:
            ce = max(r["ce_grad_norm"], 1e-30)
            lines.append(
                f"| {r['stage']} | {r['grid'][0]}×{r['grid'][1]} | {_fmt(r['spec_loss'])} | "
                f"{_fmt(r['reference_loss'])} | {_fmt(r['loss_ratio'])} | {_fmt(r['spec_grad_norm'])} | "
                f"{_fmt(r['reference_grad_norm'])} | {_fmt(r['grad_ratio'])} | "
                f"{_fmt(lam * r['spec_grad_norm'] / ce)} | {_fmt(lam * r['reference_grad_norm'] / ce)} |"
            )
        tot = {k: sum(r[k] for r in block["stages"]) for k in ("spec_loss", "reference_loss")}
        lines.append(
            f"| all | | {_fmt(tot['spec_loss'])} | {_fmt(tot['reference_loss'])} | "
            f"{_fmt(tot['spec_loss'] / max(tot['reference_loss'], 1e-30))} | | | | | |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, help="a DeLiVER-layout root (e.g. `equiseg demo`'s data)")
    ap.add_argument("--checkpoint", nargs="*", default=[], help="trained checkpoints to measure too")
    ap.add_argument("--sizes", default="128,1024", help="comma-separated input sizes")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1, help="seed of the initialised model")
    ap.add_argument("--pair-seed", type=int, default=0)
    ap.add_argument("--lambda-sgm", type=float, default=60.0, help="λ for the gradient comparison")
    ap.add_argument("--out", default="runs/sgm_conventions")
    args = ap.parse_args()

    cfg = load_experiment(DEMO_CONFIG, [f"data.root={args.data_root}"])
    val = build_val_dataset(cfg.data)
    models: list[tuple[str, torch.nn.Module]] = []
    torch.manual_seed(args.seed)
    models.append((f"init (seed {args.seed})", build_model(cfg.model_config(val.num_classes))))
    for path in args.checkpoint:
        models.append((f"trained: {path}", equiseg.load_model(path)))
    blocks = []
    t0 = time.perf_counter()
    for size in (int(s) for s in args.sizes.split(",")):
        inputs, labels = _batch(val, args.batch, size)
        for name, model in models:
            blocks.append({"model": name, "size": size, "stages": measure(model, inputs, labels, args.pair_seed)})
            print(f"  {name} at {size}²: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    result = {
        "cpu": cpu_model_name(),
        "torch": torch.__version__,
        "data_root": args.data_root,
        "batch": args.batch,
        "pair_seed": args.pair_seed,
        "lambda": args.lambda_sgm,
        "blocks": blocks,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sgm_conventions.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (out / "sgm_conventions.md").write_text(text)
    print(text)
    print(f"written: {out / 'sgm_conventions.md'}, {out / 'sgm_conventions.json'}")


if __name__ == "__main__":
    main()
