"""Every registered model (EQUISeg and the peers, all six sizes): one interface.

Each name is built through the registry with a tiny MiT (the variant's own architecture and fields,
only the encoder width/depth shrunk so the whole set runs in seconds) and checked for: logits at an odd
input size, absent (``None``) modalities, a gradient in every parameter after one ``compute_loss`` step,
a state-dict round trip that reproduces the logits, ``encode`` shapes where the architecture has
per-modality features, and the robustness benchmark running on it.
"""

from __future__ import annotations

import pytest
import torch

import equiseg
from equiseg.models import list_architectures, list_models, model_config
from equiseg.robustness import run_benchmark

# 32 channels in stages 1-2 so that every peer's smallest layer (StitchFusion's SE gate, C // 16 units) has
# more than one unit: a single ReLU unit may be off for every sample at init and rightly get no gradient
TINY = dict(embed_dims=(32, 32, 40, 64), depths=(1, 1, 1, 1), decoder_dim=16, drop_path_rate=0.0)
K = 5


def _modalities(name: str) -> list[str]:
    return ["rgb", "depth"] if model_config(name).arch == "cmx" else ["rgb", "depth", "event"]


def _build(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return equiseg.create_model(name, num_classes=K, modalities=_modalities(name), **TINY, **kw)


def test_every_architecture_has_all_six_sizes():
    names = list_models()
    for arch in list_architectures():
        prefix = {"equiseg": "equiseg"}.get(arch, arch)
        sizes = [n for n in names if model_config(n).arch == arch]
        assert len(sizes) == 6, (arch, sizes)
        assert {n.rsplit("_", 1)[1] for n in sizes} == {f"b{i}" for i in range(6)}, prefix
    for n in names:
        c = model_config(n)
        assert (
            c.depths
            == {
                "b0": (2, 2, 2, 2),
                "b1": (2, 2, 2, 2),
                "b2": (3, 4, 6, 3),
                "b3": (3, 4, 18, 3),
                "b4": (3, 8, 27, 3),
                "b5": (3, 6, 40, 3),
            }[n.rsplit("_", 1)[1]]
        ), n


@pytest.mark.parametrize("name", list_models())
def test_forward_none_gradients_roundtrip(name):
    model = _build(name)
    mods = model.modalities
    x = [torch.randn(2, 3, 65, 97) for _ in mods]
    model.eval()
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (2, K, 65, 97)
        assert torch.isfinite(logits).all()
        # any single modality may be absent
        for i in range(len(mods)):
            part = [None if j == i else t for j, t in enumerate(x)]
            out = model(part)
            assert out.shape == (2, K, 65, 97) and torch.isfinite(out).all(), (name, mods[i])
    # one training step reaches every parameter
    model.train()
    labels = torch.randint(0, K, (2, 64, 64))
    labels[:, :4] = 255
    out = model.compute_loss(
        [torch.randn(2, 3, 64, 64) for _ in mods], labels, torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(out.loss) and out.logits.shape == (2, K, 64, 64)
    out.loss.backward()
    dead = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not dead, f"{name}: no gradient in {dead[:5]}"
    # state-dict round trip
    model.eval()
    clone = _build(name)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))
        if model.has_modality_features:
            feats = model.encode(x)
            assert len(feats) == 4
            assert all(f.shape[:2] == (len(mods), 2) for f in feats), [f.shape for f in feats]


@pytest.mark.parametrize(
    "arch", ["equiseg", "segformer", "cmnext", "cmx", "stitchfusion", "magic", "magicpp"]
)
def test_robustness_benchmark_runs(arch):
    if arch not in list_architectures():
        pytest.fail(f"architecture {arch} is not registered")
    name = f"{arch}_b0"
    model = _build(name).eval()
    g = torch.Generator().manual_seed(1)
    data = [
        (
            [torch.randn(3, 64, 64, generator=g) for _ in model.modalities],
            torch.randint(0, K, (64, 64), generator=g),
        )
        for _ in range(2)
    ]
    r = run_benchmark(
        model, data, tests=("emm", "rmm", "nm"), rmm_rates=(0.5,), progress=False, num_classes=K
    )
    s = r["summary"]
    assert all(s[k] is not None for k in ("clean", "emm_avg", "rmm_avg[0.5]", "nm_low")), s
