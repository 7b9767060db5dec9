"""``equiseg doctor``: the bug-report screen (fields, one screen, JSON) and ``--check``: the CPU rows run
and pass here, the CUDA rows say SKIPPED with the reason (CI has no GPU), a failing path is a FAIL row
and exit 1, never a traceback."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist

import equiseg
from equiseg.cli import main
from equiseg.engine.precision import cpu_bf16_support
from equiseg.tasks import doctor

CPU_ROWS = ["model", "cpu.fp32_train_step", "cpu.bf16_autocast", "cpu.channels_last", "cpu.sdpa"]
CPU_ROWS += ["cpu.compile", "cpu.gloo", "cpu.peak_memory"]
CUDA_ROWS = ["cuda.fp32_train_step", "cuda.fp16_autocast", "cuda.bf16_autocast", "cuda.channels_last"]
CUDA_ROWS += ["cuda.sdpa", "cuda.compile", "cuda.nccl", "cuda.peak_memory"]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA rows run where a GPU is visible")


@pytest.fixture(scope="module")
def checks() -> dict[str, doctor.CheckResult]:
    return {r.name: r for r in doctor.run_checks()}


def test_report_fields(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    r = doctor.environment_report()
    assert r["equiseg"]["version"] == equiseg.__version__
    assert r["torch"]["version"] == torch.__version__ and {"cuda", "cudnn", "nccl"} <= set(r["torch"])
    assert r["cuda_available"] == torch.cuda.is_available() and len(
        r["gpus"]
    ) == torch.cuda.device_count() * (torch.cuda.is_available())
    assert r["threads"]["intra_op"] == torch.get_num_threads()
    assert r["allocator"]["cpu"] in ("retain", "system")
    assert r["env"]["OMP_NUM_THREADS"] == "3" and r["env"]["MKL_NUM_THREADS"] is None
    assert r["bf16"]["cpu_units"] == list(cpu_bf16_support())
    assert {"onnx", "onnxruntime", "tensorboard", "transformers", "matplotlib", "cv2"} <= set(r["packages"])
    assert r["packages"]["numpy"] and r["packages"]["yaml"]  # required: always there
    assert r["cpu"]["model"] and r["cpu"]["logical_cpus"] >= 1
    json.dumps(r)  # JSON-ready as it is

    text = doctor.format_report(r)
    labels = ["equiseg", "python", "platform", "torch", "CPU", "bf16", "threads", "allocator", "packages"]
    starts = {line.split()[0] for line in text.splitlines() if not line.startswith(" ")}
    assert set(labels) <= starts and ("GPUs" in starts or "GPU" in starts), text
    assert len(text.splitlines()) <= 24  # one screen
    assert "OMP_NUM_THREADS=3, MKL_NUM_THREADS unset" in text
    assert "onnxruntime " in text and "opencv (cv2) " in text


def test_absent_package_is_reported_absent() -> None:
    assert doctor._package_version("equiseg_no_such_module", ("equiseg-no-such-dist",)) is None
    assert doctor._package_version("numpy", ("numpy",)) == __import__("numpy").__version__


def test_cpu_rows_pass(checks) -> None:
    assert list(checks)[: len(CPU_ROWS)] == CPU_ROWS
    for name in CPU_ROWS:
        r = checks[name]
        if name == "cpu.compile":  # opt-in on the CPU: minutes of C++ compilation on a few cores
            assert r.status == "SKIPPED" and "--compile" in r.detail, r
        elif name == "cpu.bf16_autocast" and not cpu_bf16_support():
            assert r.status == "SKIPPED" and "no bf16 units" in r.detail, r
        else:
            assert r.status == "PASS", r
    assert "weights updated" in checks["cpu.fp32_train_step"].detail
    assert "vs math" in checks["cpu.sdpa"].detail
    assert "all_reduce ran" in checks["cpu.gloo"].detail
    assert not dist.is_initialized()  # the group was destroyed again


@no_gpu
def test_cuda_rows_are_skipped_with_the_reason(checks) -> None:
    assert list(checks)[len(CPU_ROWS) :] == CUDA_ROWS
    for name in CUDA_ROWS:
        assert checks[name].status == "SKIPPED" and checks[name].detail.startswith("no CUDA"), checks[name]
        assert checks[name].seconds is None


def test_checks_leave_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    doctor.run_checks()
    assert torch.equal(torch.rand(3), expected)


def test_cli_text_and_json(capsys) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("equiseg ") and "checks on" not in out
    assert main(["doctor", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["equiseg"]["version"] == equiseg.__version__ and "checks" not in data


def test_cli_check_json(capsys) -> None:
    assert main(["doctor", "--check", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {c["name"]: c for c in data["checks"]}
    assert list(rows) == CPU_ROWS + CUDA_ROWS
    assert rows["cpu.fp32_train_step"]["status"] == "PASS"
    assert set(rows["cpu.gloo"]) == {"name", "device", "label", "status", "detail", "seconds"}


def test_a_failing_path_is_a_fail_row_and_exit_1(monkeypatch, capsys) -> None:
    def broken(model, device):
        raise RuntimeError("channels-last kernel missing\nsecond line")

    monkeypatch.setattr(doctor, "_check_channels_last", broken)
    assert main(["doctor", "--check"]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "channels-last" in line and "CPU" in line)
    assert row.startswith("FAIL") and "RuntimeError: channels-last kernel missing second line" in row
    assert "1 failed" in out.splitlines()[-1]
    assert "fp32 training step" in out and "checks on a tiny EQUISeg" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["doctor", "--compile"], "--compile: only with --check (it adds the CPU torch.compile row)"),
        (["doctor", "--check", "--device", "gpu0"], "--device: expected cuda or cuda:N, got 'gpu0'"),
    ],
)
def test_cli_usage_errors(argv, message, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"equiseg doctor: error: {message}\n"


def test_compile_row_compares_with_the_eager_step() -> None:
    """The compile row's plumbing, with dynamo's cheapest backend (inductor on the CPU takes minutes)."""
    model, cpu = doctor._tiny_model(), torch.device("cpu")
    _, loss = doctor._check_fp32(model, cpu)
    assert "loss matches eager" in doctor._check_compile(model, cpu, loss, backend="eager")
