"""Typed configuration: dataclasses that round-trip to YAML and reject unknown keys.

One mechanism for every config in the project (model, data, training): defaults live in
dataclasses, a YAML file or dict overrides them, dotted ``a.b=c`` strings override those, and
:func:`to_dict` writes the resolved result back out. A misspelt key is an error that names the key,
the section it was found in, and the closest valid key -- never a silently ignored setting.

Fields may also declare the values they accept (:func:`_field`: bounds such as ``ge=1`` / ``gt=0``, or a
``check`` function); :func:`from_dict` enforces them after coercion, so a YAML file and a ``--set``
override get the same one-line error naming the dotted key and what was expected, e.g.
``train.lr: expected a number > 0, got -0.1``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

__all__ = [
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
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


def suggest(key: str, valid: typing.Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest valid key, or a list of valid keys."""
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f"; valid keys: {', '.join(valid)}"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated field type ``tp`` (lists -> tuples, nested dataclasses)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise ValueError(f"{where}: cannot interpret {value!r} as {tp} ({'; '.join(errors)})")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=where)
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            if len(args) != len(value):
                raise ValueError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        seq = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple else seq
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _fmt_bound(b: float) -> str:
    """A bound as users write it: ``32``, ``0.5``, ``1e-06``."""
    return str(b) if isinstance(b, int) else f"{b:g}"


def check_value(
    value: Any,
    where: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    check: typing.Callable[[Any], str | None] | None = None,
    note: str | None = None,
) -> None:
    """Check an already-coerced value against bounds and/or a ``check`` function.

    Lists and tuples are checked entry by entry (``where[i]``); ``None`` (an optional field left unset)
    always passes. ``check(value)`` returns ``None`` when the value is fine, otherwise the text of what
    was expected. ``note`` explains a sentinel inside the accepted range (``"0: use train.epochs"``)
    and is shown in the error, so the user learns both the limit and what the special value means.

    Raises:
        ValueError: ``"<where>: expected an integer >= 1, got 0"``-style, one line.
    """
    if value is None:
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_value(v, f"{where}[{i}]", ge=ge, gt=gt, le=le, lt=lt, check=check, note=note)
        return
    if check is not None:
        expected = check(value)
        if expected is not None:
            raise ValueError(f"{where}: expected {expected}, got {value!r}")
    if ge is None and gt is None and le is None and lt is None:
        return
    # (bracket, operator, bound) of each side: "in [0, 1)" for two sides, ">= 1" for one
    low = ("[", ">=", ge) if ge is not None else ("(", ">", gt) if gt is not None else None
    high = ("]", "<=", le) if le is not None else (")", "<", lt) if lt is not None else None
    if low and high:
        bounds = f"in {low[0]}{_fmt_bound(low[2])}, {_fmt_bound(high[2])}{high[0]}"
    else:
        _, op, bound = low or high
        bounds = f"{op} {_fmt_bound(bound)}"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (ge is None or value >= ge) and (gt is None or value > gt)
    ok = ok and (le is None or value <= le) and (lt is None or value < lt)
    if not ok:
        noun = "an integer" if isinstance(value, int) and not isinstance(value, bool) else "a number"
        extra = f" ({note})" if note else ""
        raise ValueError(f"{where}: expected {noun} {bounds}{extra}, got {value!r}")


def coerce(value: Any, tp: Any, where: str, **constraints: Any) -> Any:
    """Convert ``value`` to type ``tp`` as config fields are, then apply :func:`check_value`'s constraints.

    The entry point for other YAML schemas (the folder data-set spec), so that every file a user
    writes reports a bad value the same way: ``modalities.rgb.bgr: expected true/false, got 'flase'``.
    """
    out = _coerce(value, tp, where)
    if constraints:
        check_value(out, where, **constraints)
    return out


_CONSTRAINTS = "equiseg.constraints"  # dataclass field metadata key


def _field(default: Any = dataclasses.MISSING, **constraints: Any) -> Any:
    """A dataclass field with the constraints of :func:`check_value` (``ge``, ``gt``, ``le``, ``lt``,
    ``check``, ``note``), enforced by :func:`from_dict` and by :func:`_validate`."""
    return dataclasses.field(default=default, metadata={_CONSTRAINTS: constraints})


def _check_field(field: dataclasses.Field, value: Any, where: str) -> None:
    constraints = field.metadata.get(_CONSTRAINTS)
    if constraints:
        check_value(value, where, **constraints)


def _validate(obj: Any, prefix: str) -> None:
    """Check every constrained field of a dataclass instance (for directly constructed configs)."""
    for f in dataclasses.fields(obj):
        _check_field(f, getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name)


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _device_form(value: Any) -> str | None:
    """``train.device`` check: what :func:`equiseg.engine.train.resolve_device` accepts."""
    if isinstance(value, str) and _DEVICE.fullmatch(value):
        return None
    return "one of auto | cpu | cuda | cuda:N | mps (N = 0, 1, ...)"


def _precision_form(value: Any) -> str | None:
    """``eval.precision`` check (also for configs built directly, where the ``Literal`` is not enforced)."""
    return None if value in ("auto", "fp32", "bf16") else "one of auto | fp32 | bf16"


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, filling defaults and checking every key, type and constraint.

    Raises:
        ValueError: an unknown key (with the closest valid one suggested), a value of the wrong type,
            or one outside what the field accepts (see :func:`_field`), naming the dotted key.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            section = f" in section '{prefix}'" if prefix else ""
            raise ValueError(f"unknown config key '{where}'{section}{suggest(key, fields)}")
        kwargs[key] = _coerce(value, hints[key], where)
        _check_field(fields[key], kwargs[key], where)
    obj = cls(**kwargs)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-python (YAML-safe) view of a config dataclass: tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Apply dotted ``a.b=value`` strings to a nested dict (values parsed as YAML scalars/lists)."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override '{item}' must look like key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            child = node.get(p)
            child = dict(child) if isinstance(child, dict) else {}
            node[p] = child
            node = child
        node[parts[-1]] = value
    return data


def _yaml_problem(e: yaml.YAMLError) -> str:
    """PyYAML's multi-line error (problem, context, a quoted snippet) as one line with line/column."""
    if isinstance(e, yaml.MarkedYAMLError):
        text = ": ".join(p for p in (e.context, e.problem) if p) or "malformed YAML"
        mark = e.problem_mark or e.context_mark
        if mark is not None:
            text += f" (line {mark.line + 1}, column {mark.column + 1})"
    else:
        text = str(e)
    return " ".join(text.split())


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a clear error names the file when it is missing or not a mapping.

    A syntax error is one line -- ``cfg.yaml: not valid YAML: mapping values are not allowed here
    (line 3, column 8)`` -- so the CLI's one-line error report stays one line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {_yaml_problem(e)}") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not valid YAML: not UTF-8 text (byte {e.start})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    return data


def save_yaml(data: Any, path: str | Path) -> None:
    """Write a config (dataclass or dict) as YAML, keys in declaration order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(data), f, sort_keys=False)


# --------------------------------------------------------------------------------------------------
# Model config
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ModelConfig:
    """Everything that defines an EQUISeg network (SPEC §1). Variants fill the MiT fields.

    The CMTB and SGM switches are the ablations of the paper's Tab. 2 and Tab. 3.
    """

    # --- which network: the architecture class (registry.register_architecture) and, for the peers,
    # whether to reproduce the released code's behaviour exactly, defects included (SPEC §7/§8)
    arch: str = "equiseg"
    reference_compat: bool = False

    # --- task
    num_classes: int = 25
    modalities: tuple[str, ...] = ("rgb", "depth", "event", "lidar")
    ignore_index: int = 255

    # --- MiT encoder (SPEC §1.1); defaults are B0
    embed_dims: tuple[int, ...] = (32, 64, 160, 256)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    # eps of the block and stage LayerNorms. The original release uses 1e-6; Hugging Face's port
    # uses 1e-5 everywhere. Patch-embedding and spatial-reduction norms are 1e-5 in both.
    ln_eps: float = 1e-6
    share_encoder: bool = True

    # --- Cross-modal Transformer Block (SPEC §1.3, paper Tab. 2)
    hub: typing.Literal["selfquery", "mean"] = "selfquery"
    cross_attention: bool = True
    residual: bool = True
    ppx_layer_scale: float = 1e-2
    # PPX blocks per stage and their MLP ratios: the paper does not say; one block per stage and
    # CMNeXt's ratios (8, 8, 4, 4) by default (SPEC §1.3). CMNeXt itself stacks depths[s] blocks.
    ppx_depths: tuple[int, ...] = (1, 1, 1, 1)
    ppx_mlp_ratios: tuple[float, ...] = (8.0, 8.0, 4.0, 4.0)

    # --- head (SPEC §1.4)
    decoder_dim: int = 256
    head_dropout: float = 0.1

    # --- losses (SPEC §1.5, §2, paper Tab. 3)
    loss: typing.Literal["ce", "ohem"] = "ce"
    ohem_thresh: float = 0.7  # keep pixels whose probability of the true class is below this
    sgm: bool = True
    prototype: bool = True
    pairing: typing.Literal["random", "cosine"] = "random"
    lambda_sgm: float = 60.0
    # Which stage feature f_n^i the SGM prototypes are taken from (the paper admits three readings):
    # "post_ln", the stage output after its LayerNorm (SPEC §1.5's reading and the default: the feature
    # the next stage and the head see); "pre_ln", the CMTB output f' + f_c before it; "pre_cmtb", f'
    # before the CMTB (then L_s does not reach the CMTB). docs/reproduction.md reports each.
    sgm_features: typing.Literal["post_ln", "pre_ln", "pre_cmtb"] = "post_ln"

    # --- peers (SPEC §8): each architecture's own fields, one block per architecture, below this line

    # --- StitchFusion (arch "stitchfusion"; LiBingyu01/StitchFusion; equiseg/models/stitchfusion.py)
    # which adapter carries modality i into j: one per unordered pair ("every_one", the release's
    # default), one per direction ("every_two"), or one for all pairs ("shared")
    stitch_adapter: typing.Literal["every_one", "every_two", "shared"] = "every_one"
    stitch_adapter_dim: int = _field(8, ge=1)  # the adapters' bottleneck width (8 in the release)
    # stages whose MiT blocks carry adapters; the released DeLiVER checkpoint has them in stages 3-4 only
    stitch_adapter_stages: tuple[bool, ...] = (True, True, True, True)
    # per-stage fusion of the modality maps for the head: the model file's FeatureCross, or their sum
    # (what the released DeLiVER checkpoint was trained with: it holds no FeatureCross weights)
    stitch_fusion: typing.Literal["feature_cross", "sum"] = "feature_cross"

    # --- MAGIC / MAGIC++ (arch "magic", "magicpp"; arXiv 2407.11344, 2412.16876; no public code). What
    # the papers leave open is chosen and explained in equiseg/models/magic.py.
    # modalities the selection keeps per sample: the k most robust + the k most fragile (papers: Top-1
    # and Last-1, k = 1); all present ones when 2k >= their number
    magic_num_selected: int = _field(1, ge=1)
    # "stage": each stage ranks its modalities by its own similarity (SPEC §8); "shared": one ranking per
    # sample from the mean similarity over the four stages, used at every stage
    magic_rank_scope: typing.Literal["stage", "shared"] = "stage"
    # MAGIC++'s multi-scale selection (MASM) also measures the similarity on g×g average-pooled grids
    # (g in this tuple) besides the full map, and averages; ignored by "magic"
    magic_rank_grids: tuple[int, ...] = _field((1, 2, 4), ge=1)
    # total loss L = L_M + λ·L_S + β·L_C (papers' Eq.; their values not stated in the sources at hand)
    magic_lambda_select: float = _field(1.0, ge=0)
    magic_beta_consistency: float = _field(1.0, ge=0)
    # temperature of the class-wise similarity distributions of the consistency loss L_C
    magic_temperature: float = _field(0.1, gt=0)
    # MAM/MIM blocks (CMNeXt-style pooling mixer + conv MLP): MLP ratio and layer-scale init
    magic_mlp_ratio: float = _field(4.0, gt=0)
    magic_layer_scale: float = _field(1e-2, ge=0)

    def __post_init__(self) -> None:
        n = len(self.embed_dims)
        for name in ("depths", "num_heads", "sr_ratios", "ppx_depths", "ppx_mlp_ratios"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} entries, expected {n} (one per stage)"
                )
        if n != 4:
            raise ValueError(f"embed_dims must have 4 stages, got {n}")
        for c, h in zip(self.embed_dims, self.num_heads):
            if c % h:
                raise ValueError(f"embed dim {c} is not divisible by its number of heads {h}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if not self.modalities:
            raise ValueError("modalities must name at least one modality")
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be distinct, got {list(self.modalities)}")
        if self.hub not in ("selfquery", "mean"):
            raise ValueError(f"hub must be 'selfquery' or 'mean', got {self.hub!r}")
        if self.pairing not in ("random", "cosine"):
            raise ValueError(f"pairing must be 'random' or 'cosine', got {self.pairing!r}")
        if self.loss not in ("ce", "ohem"):
            raise ValueError(f"loss must be 'ce' or 'ohem', got {self.loss!r}")

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return from_dict(cls, data, prefix="")

    def to_yaml(self, path: str | Path) -> None:
        save_yaml(self, path)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ModelConfig:
        return from_dict(cls, load_yaml(path))


# --------------------------------------------------------------------------------------------------
# Experiment config (data + model + training + evaluation), the schema of configs/*.yaml
# --------------------------------------------------------------------------------------------------


# Inputs smaller than 32 px vanish in the last encoder stage (its stride is 32; SPEC §1.1).
MIN_SIZE = 32


@dataclasses.dataclass
class DataConfig:
    """Which data set, where, which modalities, and the crop/resize of SPEC §2.

    Constrained fields (see :func:`_field`) are checked by :func:`from_dict` and on construction.
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

    def __post_init__(self) -> None:
        _validate(self, "data")


@dataclasses.dataclass
class TrainConfig:
    """Optimisation recipe (SPEC §2): AdamW, linear warm-up then poly decay per iteration.

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
    # mixed precision of the training forward: fp16 or bf16 on CUDA; bf16 on the CPU (fast with bf16
    # units, SPEC §7; emulated and slow without, with a warning); fp16 on the CPU is ignored (a warning)
    amp: typing.Literal["none", "fp16", "bf16"] = "none"
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

    def __post_init__(self) -> None:
        _validate(self, "train")


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
        for key in ("num_classes", "modalities"):
            if key in self.model:
                raise ValueError(
                    f"model.{key} is set by the data section (data.modalities / the data set's classes); "
                    f"remove it from the model section"
                )
        self.model_config(num_classes=1)  # validates the name and every override now

    def model_config(self, num_classes: int) -> ModelConfig:
        """The :class:`ModelConfig` for a data set with ``num_classes`` classes."""
        from equiseg.models.registry import model_config

        _ = self.pretrained_strict  # validated here, so a bad value fails when the config is loaded
        opts = {k: v for k, v in self.model.items() if k not in ("name", "pretrained", "pretrained_strict")}
        try:
            return model_config(self.model["name"], num_classes, self.data.modalities, **opts)
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
    path = path.resolve()
    if path in _seen:
        raise ValueError(f"{path}: circular _base_ chain")
    data = load_yaml(path)
    base = data.pop("_base_", None)
    if base is None:
        return data
    return _merge(_load_with_base(path.parent / base, _seen + (path,)), data)
