"""bf16 where the CPU has it: how ``auto`` resolves, bf16 evaluation / analysis /
robustness / prediction against fp32 on tiny models, ``train.amp: bf16`` on the CPU, and the fp32 losses.

Every test passes on CPUs without bf16 units as well (bf16 autocast runs there, emulated and slowly; the
models are tiny): the hardware checks are monkeypatched where a test depends on them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from model_utils import rand_inputs, tiny_model
from study_utils import make_synth, tiny_config_dict, write_config

import equiseg
from equiseg.cli import main
from equiseg.config import EvalConfig, load_experiment
from equiseg.engine import precision as P
from equiseg.engine import train as train_mod
from equiseg.engine.evaluate import evaluate
from equiseg.engine.inference import infer_logits
from equiseg.models.sgm import sgm_loss
from equiseg.tasks.analysis import modality_contributions

MODS = ["rgb", "depth", "event", "lidar"]


_CACHED = (P._cpuinfo, P.cpu_bf16_support, P.cpu_model_name, P.bf16_probe)  # the real, cached functions


@pytest.fixture(autouse=True)
def _hardware_decides(monkeypatch):
    """``auto`` is decided by the (faked) hardware here, even where the suite fixes it for other tests."""
    monkeypatch.delenv(P.AUTO_ENV, raising=False)


@pytest.fixture
def fresh_caches():
    """Forget the cached CPU facts and probe before and after a test that fakes them."""
    for fn in _CACHED:
        fn.cache_clear()
    yield
    for fn in _CACHED:
        fn.cache_clear()


def _fake_cpu(monkeypatch, flags: tuple[str, ...], speedup: float | None) -> list[str]:
    """Pretend the CPU has ``flags`` and the probe measures ``speedup``; returns the probe's call log."""
    calls: list[str] = []

    def probe(device_type: str = "cpu") -> P.ProbeResult:
        calls.append(device_type)
        assert speedup is not None, "the probe must not run on a CPU without bf16 units"
        return P.ProbeResult(fp32_s=1.0, bf16_s=1.0 / speedup)

    monkeypatch.setattr(P, "cpu_bf16_support", lambda: flags)
    monkeypatch.setattr(P, "bf16_probe", probe)
    return calls


# ------------------------------------------------------------------------------ resolving "auto"


def test_auto_is_fp32_without_bf16_units(monkeypatch) -> None:
    calls = _fake_cpu(monkeypatch, (), None)
    assert P.resolve_precision("auto", "cpu") == "fp32"
    assert calls == []  # emulated bf16 is never probed (it would take seconds)
    assert "no bf16 units" in P.describe_precision("fp32", "auto", "cpu")


def test_auto_is_bf16_with_units_and_a_faster_probe(monkeypatch) -> None:
    calls = _fake_cpu(monkeypatch, ("avx512_bf16", "amx_bf16"), 4.0)
    assert P.resolve_precision("auto", "cpu") == "bf16"
    assert calls == ["cpu"]
    note = P.describe_precision("bf16", "auto", "cpu")
    assert note.startswith("precision bf16 (auto: avx512_bf16, amx_bf16") and "4.0×" in note


def test_auto_is_fp32_when_the_probe_is_not_clearly_faster(monkeypatch) -> None:
    _fake_cpu(monkeypatch, ("avx512_bf16",), 1.1)  # under MIN_SPEEDUP
    assert P.resolve_precision("auto", "cpu") == "fp32"
    assert "needs >= 1.2×" in P.describe_precision("fp32", "auto", "cpu")


class _Timed(torch.nn.Module):
    """A 'model' whose forward takes ``fp32_s`` seconds in fp32 and ``bf16_s`` under bf16 autocast."""

    def __init__(self, fp32_s: float, bf16_s: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(3))
        self.times = {"fp32": fp32_s, "bf16": bf16_s}
        self.calls: list[tuple[str, bool]] = []

    def forward(self, xs):
        import time

        precision = "bf16" if torch.is_autocast_enabled("cpu") else "fp32"
        self.calls.append((precision, self.training))
        time.sleep(self.times[precision])
        return xs[0]


@pytest.fixture
def no_workload_cache(monkeypatch):
    monkeypatch.setattr(P, "_WORKLOAD_PROBES", {})


def test_auto_keeps_fp32_where_the_model_itself_gains_nothing(monkeypatch, no_workload_cache) -> None:
    _fake_cpu(monkeypatch, ("avx512_bf16", "amx_bf16"), 4.0)  # the matmul says bf16 ...
    model = _Timed(fp32_s=0.01, bf16_s=0.03).train()  # ... the model's forward says no
    xs = [torch.zeros(1, 3, 8, 8)]
    assert P.resolve_precision("auto", "cpu", model=model, inputs=xs) == "fp32"
    note = P.describe_precision("fp32", "auto", "cpu")
    assert "bf16 matmul at 4.0×" in note and "this model's forward at 0.3" in note and "needs >= 1.1×" in note
    assert [c[0] for c in model.calls] == [
        "fp32",
        "bf16",
        "fp32",
        "fp32",
        "bf16",
        "bf16",
    ]  # warm-ups, best of 2
    assert not any(training for _, training in model.calls) and model.training  # eval for the probe, restored
    assert P.resolve_precision("auto", "cpu", model=model, inputs=xs) == "fp32"
    assert len(model.calls) == 6  # the verdict is cached per model and input shapes
    assert P.resolve_precision("auto", "cpu", model=model, inputs=[torch.zeros(2, 3, 8, 8)]) == "fp32"
    assert len(model.calls) == 12  # another shape: probed again
    assert P.resolve_precision("auto", "cpu") == "bf16"  # no model given: the hardware rule alone
    assert "this model's forward" not in P.describe_precision("bf16", "auto", "cpu")
    assert P.resolve_precision("fp32", "cpu", model=model, inputs=xs) == "fp32"


def test_auto_takes_bf16_where_the_model_gains(monkeypatch, no_workload_cache) -> None:
    _fake_cpu(monkeypatch, ("amx_bf16",), 4.0)
    model = _Timed(fp32_s=0.03, bf16_s=0.005)
    assert P.resolve_precision("auto", "cpu", model=model, inputs=[torch.zeros(1, 3, 8, 8)]) == "bf16"
    note = P.describe_precision("bf16", "auto", "cpu")
    assert "this model's forward at" in note and "needs" not in note
    _fake_cpu(monkeypatch, (), None)  # no bf16 units: the model is never timed
    model = _Timed(fp32_s=0.03, bf16_s=0.005)
    assert P.resolve_precision("auto", "cpu", model=model, inputs=[torch.zeros(1, 3, 9, 9)]) == "fp32"
    assert model.calls == []


def test_the_probe_sample_is_read_from_data_only_when_it_runs(monkeypatch, no_workload_cache) -> None:
    class Data:
        reads = 0

        def __len__(self):
            return 1

        def __getitem__(self, i):
            Data.reads += 1
            return [torch.zeros(3, 16, 12)], torch.zeros(16, 12)

    _fake_cpu(monkeypatch, ("amx_bf16",), 4.0)
    model = _Timed(fp32_s=0.02, bf16_s=0.0)
    assert P.resolve_precision("fp32", "cpu", model=model, data=Data()) == "fp32"
    monkeypatch.setenv(P.AUTO_ENV, "fp32")
    assert P.resolve_precision("auto", "cpu", model=model, data=Data()) == "fp32"
    assert Data.reads == 0 and model.calls == []  # nothing to probe: the data are not touched
    monkeypatch.delenv(P.AUTO_ENV)
    assert P.resolve_precision("auto", "cpu", model=model, data=Data(), crop=(8, 8)) == "bf16"
    assert Data.reads == 1
    (key,) = P._WORKLOAD_PROBES
    assert key[-1] == ((1, 3, 8, 8),)  # the window the forward runs on, batch of one


def test_sample_inputs_is_a_batch_of_one() -> None:
    x = torch.randn(3, 8, 8)
    data = [([x, None], torch.zeros(8, 8))]
    got = P.sample_inputs(data)
    assert got[0].shape == (1, 3, 8, 8) and torch.equal(got[0][0], x) and got[1] is None
    assert P.sample_inputs([]) is None
    loader = torch.utils.data.DataLoader(data, batch_size=1, collate_fn=lambda b: b)
    assert P.sample_inputs(loader) is None  # not indexable: auto keeps the hardware rule


def test_explicit_values_are_honoured(monkeypatch) -> None:
    _fake_cpu(monkeypatch, (), None)
    assert P.resolve_precision("bf16", "cpu") == "bf16"  # slow without units, but asked for
    assert "emulated" in P.describe_precision("bf16", "bf16", "cpu")
    _fake_cpu(monkeypatch, ("amx_bf16",), 5.0)
    assert P.resolve_precision("fp32", "cpu") == "fp32"
    assert P.describe_precision("fp32", "fp32", "cpu") == "precision fp32 (asked for)"


def test_auto_on_cuda_follows_bf16_support(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert P.resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert P.resolve_precision("auto", "cuda") == "fp32"
    assert P.resolve_precision("auto", "mps") == "fp32"


def test_environment_fixes_what_auto_means(monkeypatch) -> None:
    _fake_cpu(monkeypatch, ("amx_bf16",), 5.0)
    monkeypatch.setenv(P.AUTO_ENV, "fp32")
    assert P.resolve_precision("auto", "cpu") == "fp32"
    assert P.resolve_precision("bf16", "cpu") == "bf16"  # explicit values are not affected
    assert P.describe_precision("fp32", "auto", "cpu") == f"precision fp32 (auto: {P.AUTO_ENV}=fp32)"
    _fake_cpu(monkeypatch, (), None)
    monkeypatch.setenv(P.AUTO_ENV, "bf16")
    assert P.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv(P.AUTO_ENV, "half")
    with pytest.raises(ValueError, match=rf"^{P.AUTO_ENV}: expected fp32 or bf16"):
        P.resolve_precision("auto", "cpu")


@pytest.mark.parametrize("bad", ["fp16", "BF16", "", None])
def test_bad_values_name_the_key(bad) -> None:
    with pytest.raises(ValueError, match=r"^eval\.precision: expected one of auto \| fp32 \| bf16"):
        P.resolve_precision(bad, "cpu")
    with pytest.raises(ValueError, match=r"^--precision: "):
        P.resolve_precision(bad, "cpu", key="--precision")


def test_bad_config_values_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"^eval\.precision: 'fp16' is not one of"):
        load_experiment(None, ["eval.precision=fp16"])
    with pytest.raises(ValueError, match=r"^eval\.precision: expected one of auto \| fp32 \| bf16"):
        EvalConfig(precision="half")
    assert EvalConfig().precision == "auto"
    assert load_experiment(None, ["eval.precision=bf16"]).eval.precision == "bf16"


def test_cpuinfo_flags_are_parsed(monkeypatch, fresh_caches) -> None:
    text = (
        "processor : 0\nmodel name : Test CPU 9000\nflags : fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
    )
    monkeypatch.setattr(P, "_cpuinfo", lambda: text)
    assert P.cpu_bf16_support() == ("avx512_bf16", "amx_bf16")
    assert P.cpu_model_name() == "Test CPU 9000"
    P.cpu_bf16_support.cache_clear()
    monkeypatch.setattr(P, "_cpuinfo", lambda: "flags : fpu sse avx2 avx512f\n")
    assert P.cpu_bf16_support() == ()
    P.cpu_bf16_support.cache_clear()
    monkeypatch.setattr(P, "_cpuinfo", lambda: "Features : fp asimd bf16 i8mm\n")  # aarch64
    assert P.cpu_bf16_support() == ("bf16",)


def test_probe_is_short_and_leaves_the_global_rng_alone(monkeypatch, fresh_caches) -> None:
    monkeypatch.setattr(P, "PROBE_SIZE", 64)  # fast on any CPU, emulated bf16 included
    state = torch.get_rng_state()
    result = P.bf16_probe("cpu")
    assert torch.equal(torch.get_rng_state(), state)
    assert result.fp32_s > 0 and result.bf16_s > 0 and result.speedup > 0
    assert P.bf16_probe("cpu") is result  # cached


# ------------------------------------------------------------------------------ inference in bf16


def test_autocast_model_wraps_without_changing_the_interface() -> None:
    model = tiny_model(4).eval()
    net = P.with_precision(model, "bf16", "cpu")
    assert P.with_precision(model, "fp32", "cpu") is model
    assert isinstance(net, P.AutocastModel) and not net.training
    assert net.modalities == model.modalities and net.cfg is model.cfg  # attributes pass through
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        P.with_precision(model, "auto", "cpu")


def test_bf16_logits_are_fp32_and_close() -> None:
    model = tiny_model(4).eval()
    xs = rand_inputs(4, b=1, h=64, w=64)
    with torch.inference_mode():
        ref = infer_logits(model, xs)
        out = infer_logits(P.with_precision(model, "bf16", "cpu"), xs)
        with P.inference_autocast("bf16", "cpu"):
            raw = model(xs)
    assert raw.dtype == torch.bfloat16  # autocast did run
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.9


class _TinySet:
    """Four random 4-modality samples of 64² with labels in 0..4."""

    classes = [f"c{i}" for i in range(5)]
    ignore_index = 255

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.items = [
            (
                [torch.randn(3, 64, 64, generator=g) for _ in range(4)],
                torch.randint(0, 5, (64, 64), generator=g),
            )
            for _ in range(4)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def test_evaluate_records_the_precision_and_stays_close() -> None:
    model, ds = tiny_model(4), _TinySet()
    fp32 = evaluate(model, ds, EvalConfig(precision="fp32", per_case=False), progress=False)
    bf16 = evaluate(model, ds, EvalConfig(precision="bf16", per_case=False), progress=False)
    assert fp32["precision"] == "fp32" and bf16["precision"] == "bf16"
    assert bf16["precision_note"].startswith("precision bf16")
    assert abs(bf16["aAcc"] - fp32["aAcc"]) < 10.0  # random weights: near-ties flip a few pixels
    assert model.training  # mode restored


def test_multiscale_flip_and_slide_run_in_bf16() -> None:
    model, ds = tiny_model(4), _TinySet()
    cfg = EvalConfig(
        precision="bf16",
        per_case=False,
        mode="slide",
        crop_size=(48, 48),
        stride=(32, 32),
        scales=(0.75, 1.0),
        flip=True,
    )
    r = evaluate(model, ds, cfg, progress=False, max_samples=1)
    assert r["precision"] == "bf16" and 0.0 <= r["mIoU"] <= 100.0


def test_analysis_statistics_are_fp32_under_bf16() -> None:
    model, ds = tiny_model(4), _TinySet()
    ref = modality_contributions(model, ds, progress=False, max_samples=2)
    out = modality_contributions(model, ds, progress=False, max_samples=2, precision="bf16")
    assert ref["precision"] == "fp32" and out["precision"] == "bf16"
    for m in MODS:
        assert abs(out["similarity"]["last_stage"][m] - ref["similarity"]["last_stage"][m]) < 2.0


# ------------------------------------------------------------------------------ training and losses


def test_sgm_loss_is_fp32_under_bf16_autocast() -> None:
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(3, 2, 8, 8, 8, generator=g).bfloat16().requires_grad_() for _ in range(2)]
    labels = torch.randint(0, 4, (2, 32, 32), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = sgm_loss(feats, labels, 4, generator=torch.Generator().manual_seed(0))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert feats[0].grad is not None and feats[0].grad.dtype == torch.bfloat16


def test_training_losses_are_fp32_under_train_amp_bf16() -> None:
    model = tiny_model(4)
    xs = rand_inputs(4, b=2, h=64, w=64)
    labels = torch.randint(0, 5, (2, 64, 64))
    with P.autocast(torch.device("cpu"), "bf16"):  # the training forward's context (engine/train.py)
        out = model(xs, labels=labels, generator=torch.Generator().manual_seed(0))
    assert out.logits.dtype == torch.bfloat16  # the forward did run in bf16
    for name, value in out.as_dict().items():
        assert value.dtype == torch.float32 and torch.isfinite(value), name
    out.loss.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())


def test_train_amp_warnings(monkeypatch) -> None:
    cpu = torch.device("cpu")
    with pytest.warns(UserWarning, match=r"train.amp=fp16 ignored on cpu.*use train.amp=bf16"):
        P.warn_precision(cpu, "fp16", "train.amp")
    a = torch.ones(4, 4)
    with P.autocast(cpu, "fp16"):
        assert (a @ a).dtype == torch.float32  # ignored: fp32
    with P.autocast(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    monkeypatch.setattr(P, "cpu_bf16_support", lambda: ())
    with pytest.warns(UserWarning, match="no bf16 units.*emulated"):
        P.warn_precision(cpu, "bf16", "train.amp")
    monkeypatch.setattr(P, "cpu_bf16_support", lambda: ("amx_bf16",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P.warn_precision(cpu, "bf16", "train.amp")
        P.warn_precision(cpu, "none", "train.amp")
        P.warn_precision(cpu, "fp32", "train.amp")


# ------------------------------------------------------------------------------ one vocabulary


def test_the_config_spells_the_vocabulary_of_engine_precision() -> None:
    """equiseg/config.py sits below the engine, so it spells the names; they must be these."""
    import typing

    from equiseg.config import TrainConfig

    assert typing.get_args(typing.get_type_hints(TrainConfig)["amp"]) == P.AMP_CHOICES
    assert typing.get_args(typing.get_type_hints(EvalConfig)["precision"]) == P.PRECISIONS
    for name in P.AMP_CHOICES:
        assert load_experiment(None, [f"train.amp={name}"]).train.amp == name
    with pytest.raises(ValueError, match=r"^train\.amp: expected one of none \| fp32 \| fp16 \| bf16"):
        TrainConfig(amp="half")


def test_none_and_fp32_are_one_training_precision() -> None:
    cpu = torch.device("cpu")
    a = torch.ones(4, 4)
    for name in ("none", "fp32"):
        assert P.canonical_precision(name) == "fp32" and P.precision_applies(cpu, name)
        assert not P.grad_scaler_enabled("cuda", name)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with P.autocast(cpu, name):  # fp32 means fp32, also inside an outer autocast
                assert (a @ a).dtype == torch.float32


def test_where_each_precision_runs() -> None:
    """bf16 on the CPU and CUDA, fp16 on CUDA only, neither on MPS; the grad scaler with fp16 alone."""
    runs = {(d, p): P.precision_applies(d, p) for d in ("cpu", "cuda", "mps") for p in ("fp16", "bf16")}
    assert runs == {
        ("cpu", "fp16"): False,
        ("cpu", "bf16"): True,
        ("cuda", "fp16"): True,
        ("cuda", "bf16"): True,
        ("mps", "fp16"): False,
        ("mps", "bf16"): False,
    }
    assert P.grad_scaler_enabled("cuda", "fp16") and not P.grad_scaler_enabled("cuda", "bf16")
    assert not P.grad_scaler_enabled("cpu", "fp16")
    for bad in ("auto", "half", None):
        with pytest.raises(ValueError, match="resolve 'auto' first"):
            P.autocast("cpu", bad)


def test_training_and_inference_share_one_autocast(monkeypatch) -> None:
    """The training step, AutocastModel and inference_autocast all enter precision.autocast."""
    assert train_mod.autocast is P.autocast  # what Trainer.run_step enters around the forward
    calls: list[tuple[str, str]] = []
    real = P.autocast

    def recording(device, precision):
        calls.append((torch.device(device).type, precision))
        return real(device, precision)

    monkeypatch.setattr(P, "autocast", recording)
    model = tiny_model(4)
    xs = rand_inputs(4, b=1, h=32, w=32)
    with torch.no_grad():
        P.with_precision(model, "bf16", "cpu")(xs)
        with P.inference_autocast("fp32", "cpu"):
            pass
    assert calls == [("cpu", "bf16"), ("cpu", "fp32")]


def test_eval_precision_names_what_it_does_not_take() -> None:
    """fp16 is a training precision only (docs/design.md §3.6): eval.precision says so and points to bf16."""
    with pytest.raises(ValueError, match=r"got 'fp16' \(fp16 is for training only, train\.amp; use bf16\)"):
        P.resolve_precision("fp16", "cuda")
    with pytest.raises(ValueError, match=r"got 'none' \(use fp32\)"):
        P.check_precision("none")


def test_an_explicit_precision_that_does_not_run_on_the_device_says_so() -> None:
    with pytest.warns(UserWarning, match=r"eval\.precision=bf16 ignored on mps: running in fp32"):
        assert P.resolve_precision("bf16", "mps") == "fp32"
    assert (
        P.describe_precision("fp32", "bf16", "mps")
        == "precision fp32 (bf16 asked for, which does not run on mps)"
    )


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two training iterations with ``train.amp: bf16`` on the CPU: ``(config, checkpoint, work dir)``."""
    tmp = tmp_path_factory.mktemp("precision")
    root = make_synth(tmp / "data")
    data = tiny_config_dict(root, tmp / "run", max_iters=2)
    data["train"]["amp"] = "bf16"
    cfg = write_config(data, tmp / "tiny_bf16.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no bf16 units" on CPUs without them
        result = equiseg.train(cfg, progress=False)
    assert result.iterations == 2
    return cfg, result.work_dir / "last.pt", result.work_dir


def test_train_amp_bf16_runs_on_cpu(bf16_run) -> None:
    _, _, work = bf16_run
    records = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["iter"] for r in steps] == [1, 2]
    for r in steps:
        for key in ("loss", "loss_ce", "loss_sgm"):
            assert isinstance(r[key], float) and r[key] == r[key] and abs(r[key]) < 1e6, (key, r)
    metrics = json.loads((work / "metrics.json").read_text())  # validation: eval.precision auto
    assert metrics["precision"] in ("fp32", "bf16")


def test_train_amp_fp32_trains_as_none_and_resumes_a_none_run(tmp_path: Path) -> None:
    """``train.amp: fp32`` is ``none``: the same weights, and a run started with one resumes with the other."""
    from equiseg.engine import load_checkpoint

    root = make_synth(tmp_path / "data")
    cfgs = {}
    for name in ("none", "fp32"):
        data = tiny_config_dict(root, tmp_path / name, max_iters=2)
        data["train"]["amp"] = name
        cfgs[name] = write_config(data, tmp_path / f"{name}.yaml")
    equiseg.train(cfgs["fp32"], progress=False)
    equiseg.train(cfgs["none"], progress=False, stop_after=1)
    resumed = equiseg.train(cfgs["fp32"], work_dir=tmp_path / "none", resume=True, progress=False)
    assert resumed.iterations == 2
    a, b = (load_checkpoint(tmp_path / name / "last.pt")["model"] for name in ("fp32", "none"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ the commands


def test_eval_command_precision_flag(bf16_run, tmp_path: Path, capsys) -> None:
    cfg, ckpt, _ = bf16_run
    results = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        argv = ["--quiet", "eval", str(cfg), "--checkpoint", str(ckpt), "--out", str(out)]
        assert main([*argv, "--precision", precision]) == 0
        assert f"precision {precision} (asked for" in capsys.readouterr().out
        results[precision] = json.loads((out / "metrics.json").read_text())
        assert results[precision]["precision"] == precision
        assert f"precision {precision}" in (out / "metrics.md").read_text()
    assert abs(results["bf16"]["aAcc"] - results["fp32"]["aAcc"]) < 10.0


def test_eval_command_rejects_a_bad_precision(bf16_run, capsys) -> None:
    cfg, ckpt, _ = bf16_run
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main(["eval", str(cfg), "--checkpoint", str(ckpt), "--precision", "fp16"])
    assert "--precision" in capsys.readouterr().err
    assert main(["eval", str(cfg), "--checkpoint", str(ckpt), "--set", "eval.precision=fp16"]) == 2
    assert "eval.precision: 'fp16' is not one of" in capsys.readouterr().err


def test_robustness_analyze_predict_commands_record_bf16(bf16_run, tmp_path: Path, capsys) -> None:
    cfg, ckpt, _ = bf16_run
    common = [str(cfg), "--checkpoint", str(ckpt), "--max-samples", "1", "--precision", "bf16"]
    rob = tmp_path / "rob"
    assert main(["--quiet", "robustness", *common, "--tests", "nm", "--out", str(rob)]) == 0
    assert json.loads((rob / "robustness.json").read_text())["precision"] == "bf16"
    ana = tmp_path / "ana"
    assert main(["--quiet", "analyze", *common, "--out", str(ana)]) == 0
    assert json.loads((ana / "analysis.json").read_text())["precision"] == "bf16"
    out = capsys.readouterr().out
    assert out.count("precision bf16 (asked for") == 2

    data = Path(load_experiment(cfg).data.root)
    rgb = next((data / "img").rglob("*_rgb_*.png"))
    pred = tmp_path / "pred"
    argv = ["--quiet", "predict", "--checkpoint", str(ckpt), "--input", f"rgb={rgb}", "--out", str(pred)]
    assert main([*argv, "--device", "cpu", "--precision", "bf16"]) == 0
    assert "precision bf16 (asked for" in capsys.readouterr().out
    assert (pred / f"{rgb.stem}_pred.png").is_file()

    from equiseg.tasks.predict import iter_predict

    (ref,) = iter_predict(ckpt, {"rgb": rgb}, precision="fp32")
    (half,) = iter_predict(ckpt, {"rgb": rgb}, precision="bf16")
    (auto,) = iter_predict(ckpt, {"rgb": rgb})  # default auto, as the command
    assert ref.precision == "fp32" and half.precision == "bf16"
    assert auto.precision == P.resolve_precision("auto", "cpu")
    assert (ref.pred == half.pred).float().mean() > 0.9
