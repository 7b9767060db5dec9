"""NaN/Inf in a decoded modality file is an error naming the file: in the data set loader
(so training, evaluation and the robustness benchmark), in ``predict`` (folder, explicit files, raw
tensors) and through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import equiseg
from equiseg.cli import main
from equiseg.data import MUSES, MUSES_MODALITIES, MUSES_NORM_STATS, build_val_transform
from equiseg.data.io import check_finite
from equiseg.engine import save_checkpoint
from equiseg.engine.evaluate import evaluate
from equiseg.robustness import run_benchmark
from equiseg.tasks.predict import predict, predict_to_dir

MODS = list(MUSES_MODALITIES)
TINY = dict(embed_dims=(8, 16, 40, 64), depths=(1, 1, 1, 1), decoder_dim=32, drop_path_rate=0.0)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    """A 2-sample MUSES val split (32×32) whose first sample's lidar ``.npz`` holds one NaN and one
    Inf, and a checkpoint of a tiny model on the MUSES modalities."""
    root = tmp_path_factory.mktemp("nonfinite")
    data = root / "muses"
    equiseg.data.synth.generate(
        data, layout="muses", splits={"val": 2}, size=(32, 32), seed=0, progress=False
    )
    bad = MUSES(data, "val", labels=False).paths(0)["lidar"]
    assert bad.suffix == ".npz"
    with np.load(bad) as z:
        arr = z["arr_0"].astype(np.float32)
    arr[3, 4, 0] = np.nan
    arr[5, 6, 1] = np.inf
    np.savez_compressed(bad, arr)
    torch.manual_seed(0)
    model = equiseg.create_model("equiseg_b0", num_classes=19, modalities=MODS, **TINY).eval()
    meta = {"norm_stats": {m: MUSES_NORM_STATS[m].to_dict() for m in MODS}}
    ckpt = root / "best.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "model_config": model.cfg.to_dict(), "meta": meta})
    return {"data": data, "bad": bad, "model": model, "ckpt": ckpt}


def _val(data, **kw) -> MUSES:
    transform = build_val_transform(MODS, MUSES_NORM_STATS, short_side=None, align=None)
    return MUSES(data, "val", transform=transform, **kw)


def _assert_names_bad_file(msg: str, work: dict) -> None:
    assert str(work["bad"]) in msg and "'lidar'" in msg and "2 non-finite" in msg, msg
    assert "\n" not in msg


def test_check_finite_helper():
    check_finite(np.zeros((2, 2, 3), np.uint16), "f.png", "depth")  # integers: never looked at
    check_finite(np.ones((2, 2, 3), np.float32), "f.npz", "lidar")
    with pytest.raises(ValueError, match=r"f\.npy: modality 'lidar' has 1 non-finite value\(s\)"):
        check_finite(np.array([1.0, 1e300]), "f.npy", "lidar")  # beyond float32: inf for the model
    with pytest.raises(ValueError, match="has 2 non-finite"):
        check_finite(np.array([np.nan, -np.inf, 0], np.float16), "f.npy", "lidar")


def test_dataset_load_and_getitem_refuse(work):
    ds = _val(work["data"])
    for get in (ds.load, ds.__getitem__):
        with pytest.raises(ValueError) as e:
            get(0)
        _assert_names_bad_file(str(e.value), work)
    ds.load(1)  # the other sample is fine


def test_evaluate_refuses(work):
    with pytest.raises(ValueError) as e:
        evaluate(work["model"], _val(work["data"]), progress=False)
    _assert_names_bad_file(str(e.value), work)


def test_benchmark_refuses(work):
    with pytest.raises(ValueError) as e:
        run_benchmark(work["model"], _val(work["data"]), tests=("emm",), progress=False, num_classes=19)
    _assert_names_bad_file(str(e.value), work)


def test_predict_refuses_folder_files_and_tensors(work, tmp_path):
    with pytest.raises(ValueError) as e:
        predict_to_dir(work["ckpt"], work["data"], tmp_path / "out")
    _assert_names_bad_file(str(e.value), work)
    with pytest.raises(ValueError) as e:  # explicit files: predict's own decoder
        predict(work["ckpt"], {"lidar": work["bad"]})
    _assert_names_bad_file(str(e.value), work)
    x = torch.zeros(3, 32, 32, dtype=torch.bfloat16)
    x[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"sample 0: modality 'radar' has 1 non-finite value"):
        predict(work["ckpt"], {"radar": x})


def test_predict_cli_refuses(work, tmp_path, capsys):
    args = ["--quiet", "predict", "--checkpoint", str(work["ckpt"]), "--input", str(work["data"]),
            "--out", str(tmp_path / "out"), "--device", "cpu"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("equiseg predict: error:")
    _assert_names_bad_file(err, work)


def test_training_refuses_naming_the_file(work, tmp_path, capsys):
    """The trainer loads through the same data layer: `equiseg train` on the poisoned split is rc 2."""
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "name": "equiseg_b0",
                    **{k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()},
                },
                "data": {
                    "dataset": "muses",
                    "root": str(work["data"]),
                    "modalities": MODS,
                    "train_split": "val",
                    "crop_size": [32, 32],
                    "val_short_side": None,
                    "batch_size": 2,
                    "num_workers": 0,
                },
                "train": {"max_iters": 1, "warmup_iters": 0, "seed": 0},
                "work_dir": str(tmp_path / "run"),
            }
        )
    )
    assert main(["--quiet", "train", str(cfg)]) == 2
    err = capsys.readouterr().err
    _assert_names_bad_file(err.strip(), work)
    assert "then continue with --resume" in err
    # the first batch failed: last.pt, saved so that --resume works once the file is fixed, holds
    # the untrained state of iteration 0 (nothing was learnt from the bad file)
    from equiseg.engine import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "last.pt")["iter"] == 0
