"""Training-loop throughput: images per second of data loading + training step, and the share of
time the step waits for data, for the demo setting and for EQUISeg-B0/B2 at 512×512 on RGB-D-E-L.

    python benchmarks/train_throughput.py                    # demo, b0@512, b2@512
    python benchmarks/train_throughput.py --settings demo --iters 20 --workers 0,1

Data are synthetic DeLiVER-layout scenes generated once into a temporary folder at each setting's size
and read back through the real loader and training transform, exactly as ``equiseg train`` does, under
the CPU allocator setting that command applies (:func:`equiseg.configure_cpu_allocator`:
``EQUISEG_CPU_ALLOCATOR``, default ``retain``; forked workers switch to ``system``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import equiseg
from equiseg.config import load_experiment
from equiseg.engine import build_optimizer
from equiseg.engine.builders import ResumableSampler, build_train_dataset, collate

SETTINGS = {
    # name: (model, crop, batch, generated image size)
    "demo": ("equiseg_b0", 128, 8, 128),
    "b0@512": ("equiseg_b0", 512, 2, 512),
    "b2@512": ("equiseg_b2", 512, 2, 512),
}


def run(name: str, root: Path, workers: int, iters: int, warmup: int) -> dict:
    model_name, crop, batch, _ = SETTINGS[name]
    cfg = load_experiment(
        {
            "model": {"name": model_name},
            "data": {
                "root": str(root),
                "crop_size": [crop, crop],
                "batch_size": batch,
                "num_workers": workers,
            },
            "train": {"seed": 0},
        }
    )
    ds = build_train_dataset(cfg)
    model = equiseg.create_model(model_name, num_classes=ds.base.num_classes, modalities=cfg.data.modalities)
    model.train()
    opt = build_optimizer(model)
    sampler = ResumableSampler(ds, num_replicas=1, rank=0, seed=0)
    gen = torch.Generator().manual_seed(0)
    done, wait, t_start = 0, 0.0, None
    epoch = 0
    while done < warmup + iters:
        sampler.set_epoch(epoch)
        loader = DataLoader(
            ds,
            batch_size=batch,
            sampler=sampler,
            num_workers=workers,
            collate_fn=collate,
            drop_last=True,
            generator=torch.Generator().manual_seed(epoch),
        )
        t = time.perf_counter()
        for inputs, labels in loader:
            if done == warmup:  # start the clock after warm-up (worker start-up, allocator, caches)
                t_start, wait = time.perf_counter(), 0.0
            wait += time.perf_counter() - t
            out = model.compute_loss(inputs, labels, generator=gen)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            done += 1
            if done >= warmup + iters:
                break
            t = time.perf_counter()
        epoch += 1
    total = time.perf_counter() - t_start
    return {
        "setting": name,
        "workers": workers,
        "img_s": iters * batch / total,
        "wait": wait / total,
        "step_s": total / iters,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settings", default="demo,b0@512,b2@512")
    p.add_argument("--workers", default="0,2")
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    allocator = equiseg.configure_cpu_allocator()  # as `equiseg train` runs; importing applies nothing
    from equiseg.data.synth import generate

    print(
        f"# training-loop throughput — cpu, {torch.get_num_threads()} threads, fp32, RGB-D-E-L, SGM on, "
        f"CPU allocator {allocator}\n"
    )
    print("| setting | model | crop | batch | workers | img/s | s/step | waiting for data |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        made: dict[int, Path] = {}
        for name in args.settings.split(","):
            model_name, crop, batch, size = SETTINGS[name]
            if size not in made:
                made[size] = Path(tmp) / f"synth{size}"
                n = max(4 * batch * (args.iters + args.warmup) // 4, 16)
                generate(
                    made[size],
                    layout="deliver",
                    splits={"train": n},
                    size=(size, size),
                    seed=0,
                    progress=False,
                )
            for w in (int(k) for k in args.workers.split(",")):
                r = run(name, made[size], w, args.iters, args.warmup)
                print(
                    f"| {name} | {model_name} | {crop} | {batch} | {w} | {r['img_s']:.2f} | {r['step_s']:.2f} | "
                    f"{100 * r['wait']:.0f} % |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
