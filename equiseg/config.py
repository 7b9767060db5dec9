"""The experiment config: the schema of ``configs/*.yaml`` (data, model choice, training, evaluation).

Built on the typed-config machinery of :mod:`equiseg.schema` (re-exported here: ``from_dict``,
``to_dict``, ``load_yaml`` ...): defaults live in dataclasses, a YAML file or dict overrides them, dotted
``a.b=c`` strings override those, and :func:`to_dict` writes the resolved result back out. A misspelt key
is an error that names the key, the section it was found in, and the closest valid key; a value out of
range names the dotted key and what was expected, e.g. ``train.lr: expected a number > 0, got -0.1``.

The network's own config, :class:`~equiseg.models.config.ModelConfig`, lives with the models; this
module imports it (and the registry, to resolve ``model.name``), so there is no import cycle.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

from equiseg.models.config import ModelConfig
from equiseg.models.registry import model_config
from equiseg.schema import (
    _coerce,
    _field,
    _validate,
    apply_overrides,
    check_expanded_size,
    check_value,
    coerce,
    from_dict,
    load_yaml,
    save_yaml,
    suggest,
    to_dict,
)
from equiseg.utils import bounded_repr, check_channels

__all__ = [
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ModalityDropoutConfig",
    "ModelConfig",
    "TrainConfig",
    "load_experiment",
    "from_dict",
    "to_dict",
    "apply_overrides",
    "coerce",
    "check_value",
    "load_yaml",
    "save_yaml",
    "suggest",
]

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _device_form(value: Any) -> str | None:
    """``train.device`` check: what :func:`equiseg.engine.device.resolve_device` accepts."""
    if isinstance(value, str) and _DEVICE.fullmatch(value):
        return None
    return "one of auto | cpu | cuda | cuda:N | mps (N = 0, 1, ...)"


# The precision names are equiseg/engine/precision.py's (PRECISIONS, AMP_CHOICES; docs/design.md §3.6);
# the config sits below the engine, so it spells them here, and tests/test_precision.py checks they agree.
def _precision_form(value: Any) -> str | None:
    """``eval.precision`` check (also for configs built directly, where the ``Literal`` is not enforced)."""
    return None if value in ("auto", "fp32", "bf16") else "one of auto | fp32 | bf16"


def _amp_form(value: Any) -> str | None:
    """``train.amp`` check (also for configs built directly); ``none`` and ``fp32`` are synonyms."""
    return None if value in ("none", "fp32", "fp16", "bf16") else "one of none | fp32 | fp16 | bf16"


# --------------------------------------------------------------------------------------------------
# Experiment config (data + model + training + evaluation), the schema of configs/*.yaml
# --------------------------------------------------------------------------------------------------


# Inputs smaller than 32 px vanish in the last encoder stage (its stride is 32; docs/design.md §1.2).
MIN_SIZE = 32


@dataclasses.dataclass
class DataConfig:
    """Which data set, where, which modalities, and the crop/resize of the recipe (docs/design.md §3).

    Constrained fields (see :func:`_field`) and ``Literal`` fields are checked by :func:`from_dict` and
    on construction (:func:`equiseg.schema._validate`).
    """

    dataset: typing.Literal["deliver", "muses", "folder"] = "deliver"
    root: str = "data/DELIVER"
    spec: str | None = None  # YAML spec of a folder data set (dataset: folder)
    modalities: tuple[str, ...] = ("rgb", "depth", "event", "lidar")
    train_split: str = "train"
    val_split: str = "val"
    depth_folder: str = "hha"  # DeLiVER: read depth from hha/ (the reference) or depth/
    crop_size: tuple[int, int] = _field((1024, 1024), ge=MIN_SIZE)  # (h, w), each >= 32
    val_short_side: int | None = _field(1024, ge=MIN_SIZE)  # >= 32; None: evaluate at the stored size
    val_align: int = _field(32, ge=1)  # val sides rounded up to a multiple of this; 1: no rounding
    batch_size: int = _field(2, ge=1)  # per process (per GPU)
    num_workers: int = _field(2, ge=0)  # 0: load in the main process
    cases: tuple[str, ...] | None = None  # per-case evaluation; None: all cases the data set defines
    # input channels of modalities that do not have 3, e.g. {depth: 1, multispectral: 20}; each such
    # modality gets its own input stem in the network, initialised from the 3-channel pretrained one
    channels: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self, "data")
        self.channels = check_channels(self.channels, self.modalities, "data.channels", "data.modalities")


@dataclasses.dataclass
class ModalityDropoutConfig:
    """``train.modality_dropout``: train with random subsets of the modalities (any-modal training, as
    the robust peers do), so the network learns to segment from whatever sensors are left.

    ``mode``: ``none`` (off); ``subset`` -- each sample keeps a random non-empty subset, its size
    uniform in 1..N, then a uniform subset of that size; ``independent`` -- each modality is dropped
    with probability ``p``, never all (the keep pattern is drawn conditioned on at least one kept).
    ``fill``: a dropped modality becomes a zero tensor (the robustness benchmark's missing modality,
    per sample) or is absent (``None``: one pattern per micro-batch, since an absent input is absent
    for the whole batch; only for models that accept ``None``). See
    :mod:`equiseg.engine.modality_dropout`.
    """

    # the Literal choices are checked for a config built directly too (schema._validate)
    mode: typing.Literal["none", "subset", "independent"] = "none"
    p: float = _field(0.5, ge=0, lt=1)  # independent: drop probability of each modality
    fill: typing.Literal["zero", "absent"] = "zero"

    def __post_init__(self) -> None:
        _validate(self, "train.modality_dropout")


@dataclasses.dataclass
class TrainConfig:
    """Optimisation recipe (docs/design.md §3.1): AdamW, linear warm-up then poly decay per iteration.

    Sentinels keep their meaning and are the only values allowed below the normal range:
    ``max_iters: 0`` (use ``epochs``), ``warmup_iters: -1`` (use ``warmup_epochs``), ``val_interval: 0``
    (once per epoch), ``checkpoint_interval: 0`` (at every validation), ``grad_clip: 0`` (no clipping).
    """

    epochs: int = _field(200, ge=1)
    max_iters: int = _field(0, ge=0, note="0: use train.epochs")  # > 0 overrides epochs
    lr: float = _field(6e-5, gt=0)
    betas: tuple[float, float] = _field((0.9, 0.999), ge=0, lt=1)  # AdamW's, each in [0, 1)
    weight_decay: float = _field(0.01, ge=0)
    warmup_epochs: float = _field(10.0, ge=0)
    warmup_iters: int = _field(-1, ge=-1, note="-1: use train.warmup_epochs")  # >= 0 overrides warmup_epochs
    warmup_ratio: float = _field(0.1, ge=0, le=1)  # warm-up starts at lr * warmup_ratio
    power: float = _field(0.9, gt=0)  # poly decay exponent
    grad_clip: float = _field(0.0, ge=0, note="0: no clipping")  # max gradient norm; 0 disables clipping
    # mixed precision of the training forward (docs/design.md §3.6): none or fp32 (synonyms: no autocast);
    # fp16 or bf16 on CUDA; bf16 on the CPU (fast with bf16 units, docs/design.md §10; emulated and slow
    # without, with a warning); fp16 on the CPU and anything on MPS is ignored (fp32, with a warning)
    amp: typing.Literal["none", "fp32", "fp16", "bf16"] = _field("none", check=_amp_form)
    seed: int = _field(3407, ge=0, lt=2**32)  # numpy's limit
    log_interval: int = _field(10, ge=1)  # iterations
    # iterations between validations; 0: once per epoch
    val_interval: int = _field(0, ge=0, note="0: once per epoch")
    # iterations between `last` checkpoints; 0: at every validation
    checkpoint_interval: int = _field(0, ge=0, note="0: at every validation")
    device: str = _field("auto", check=_device_form)  # auto | cpu | cuda | cuda:N | mps
    # TensorBoard events in <work_dir>/tensorboard/ (loss terms, lr, img/s, val metrics, a prediction
    # panel per validation); needs the `tensorboard` package
    tensorboard: bool = False
    # gradient accumulation: one optimiser/scheduler step per this many micro-batches of
    # data.batch_size (effective batch = batch_size x accumulate_steps x processes); iterations,
    # max_iters, the schedule, logs and checkpoints count optimiser steps
    accumulate_steps: int = _field(1, ge=1)
    # random modality subsets during training (ModalityDropoutConfig); mode none: off
    modality_dropout: ModalityDropoutConfig = dataclasses.field(default_factory=ModalityDropoutConfig)

    def __post_init__(self) -> None:
        _validate(self, "train")
        if isinstance(self.modality_dropout, dict):  # built directly with a mapping
            self.modality_dropout = from_dict(
                ModalityDropoutConfig, self.modality_dropout, prefix="train.modality_dropout"
            )


@dataclasses.dataclass
class EvalConfig:
    """Inference and metric settings for validation / `equiseg eval`."""

    mode: typing.Literal["whole", "slide"] = "whole"
    crop_size: tuple[int, int] = _field((1024, 1024), ge=MIN_SIZE)  # slide window (h, w), each >= 32
    stride: tuple[int, int] = _field((768, 768), ge=1)  # slide step (h, w); at most crop_size
    scales: tuple[float, ...] = _field((1.0,), gt=0)  # multi-scale factors, each > 0
    flip: bool = False
    # round multi-scale sizes up to a multiple of this (CMNeXt: 32); None: no rounding
    align: int | None = _field(None, ge=1)
    window_batch: int = _field(1, ge=1)  # slide windows per forward (raise on a GPU)
    convention: typing.Literal["reference", "present"] = "reference"
    per_case: bool = True
    num_panels: int = _field(4, ge=0)  # prediction panels written by `eval --panels` and the demo
    # the network's forward in evaluation, robustness, analysis and prediction: "auto" runs bf16 autocast
    # where the hardware does it fast (CPU bf16 units + a short probe; equiseg/engine/precision.py), else
    # fp32; "fp32" / "bf16" as asked. Losses, SGM and metrics are fp32 either way.
    precision: typing.Literal["auto", "fp32", "bf16"] = _field("auto", check=_precision_form)

    def __post_init__(self) -> None:
        _validate(self, "eval")
        if not self.scales:
            raise ValueError("eval.scales: expected at least one scale, got []")
        if self.mode == "slide" and any(s > c for s, c in zip(self.stride, self.crop_size)):
            raise ValueError(
                f"eval.stride: expected entries <= eval.crop_size {list(self.crop_size)} in slide mode "
                f"(larger steps leave gaps), got {list(self.stride)}"
            )


@dataclasses.dataclass
class ExperimentConfig:
    """The whole experiment: what configs/*.yaml hold, validated key by key.

    ``model`` names a registered variant plus any :class:`ModelConfig` override (``num_classes`` and
    ``modalities`` come from the data section), and an optional ``pretrained`` weights path.
    """

    model: dict[str, Any] = dataclasses.field(default_factory=lambda: {"name": "equiseg_b0"})
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    work_dir: str = "runs/experiment"

    def __post_init__(self) -> None:
        self.model = dict(self.model)
        self.model.setdefault("name", "equiseg_b0")
        name = self.model["name"]
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"model.name: expected a model name such as equiseg_b0 (`equiseg models` lists them), "
                f"got {bounded_repr(name)}"
            )
        weights = self.model.get("pretrained")
        if weights is not None and (not isinstance(weights, str) or not weights):
            raise ValueError(
                "model.pretrained: expected the path of a weights file, or null for none, "
                f"got {bounded_repr(weights)}"
            )
        for key in ("num_classes", "modalities", "channels"):
            if key in self.model:
                raise ValueError(
                    f"model.{key} is set by the data section (data.modalities, data.channels / the data "
                    "set's classes); "
                    f"remove it from the model section"
                )
        self.model_config(num_classes=1)  # validates the name and every override now

    def model_config(self, num_classes: int) -> ModelConfig:
        """The :class:`ModelConfig` for a data set with ``num_classes`` classes."""
        _ = self.pretrained_strict  # validated here, so a bad value fails when the config is loaded
        opts = {k: v for k, v in self.model.items() if k not in ("name", "pretrained", "pretrained_strict")}
        try:
            return model_config(
                self.model["name"], num_classes, self.data.modalities, channels=self.data.channels, **opts
            )
        except ValueError as e:
            raise ValueError(f"model section: {e}") from None

    @property
    def pretrained(self) -> str | None:
        return self.model.get("pretrained")

    @property
    def pretrained_strict(self) -> bool:
        """``model.pretrained_strict`` (default true): refuse weights matching under
        :data:`~equiseg.models.weights.MIN_COVERAGE` of the encoder's keys; false loads them anyway."""
        return bool(_coerce(self.model.get("pretrained_strict", True), bool, "model.pretrained_strict"))

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def load_experiment(
    source: str | Path | dict[str, Any] | ExperimentConfig | None = None, overrides: typing.Iterable[str] = ()
) -> ExperimentConfig:
    """Defaults <- YAML file (or dict, or an existing config) <- dotted ``a.b=c`` overrides, validated.

    A YAML file may start with ``_base_: other.yaml`` (relative to itself) to extend another config;
    nested mappings are merged key by key.
    """
    overrides = list(overrides)
    if isinstance(source, ExperimentConfig):
        if not overrides:
            return source
        source = source.to_dict()
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, dict):
        check_expanded_size(source, "config")
        data = dict(source)
    else:
        data = _load_with_base(Path(source))
    data = apply_overrides(data, overrides)
    return from_dict(ExperimentConfig, data)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_with_base(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config with its ``_base_`` chain merged in (the base first, this file's keys on top).

    ``_base_`` names one file (a string, relative to this file); anything else is an error naming this
    file -- not a ``TypeError`` from joining a path with a list.
    """
    path = path.resolve()
    if path in _seen:
        raise ValueError(f"{path}: circular _base_ chain")
    data = load_yaml(path)
    base = data.pop("_base_", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ValueError(
            f"{path}: _base_: expected the file name of one config to extend (a string, relative to this "
            f"file), got {bounded_repr(base)}"
        )
    return _merge(_load_with_base(path.parent / base, _seen + (path,)), data)
