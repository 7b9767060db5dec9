"""Typed configuration machinery: dataclasses that round-trip to YAML and reject unknown keys.

One mechanism for every config in the project (model, data, training): defaults live in
dataclasses, a YAML file or dict overrides them, dotted ``a.b=c`` strings override those, and
:func:`to_dict` writes the resolved result back out. A misspelt key is an error that names the key,
the section it was found in, and the closest valid key -- never a silently ignored setting.

Fields may also declare the values they accept (:func:`_field`: bounds such as ``ge=1`` / ``gt=0``, or a
``check`` function); :func:`from_dict` enforces them after coercion, so a YAML file and a ``--set``
override get the same one-line error naming the dotted key and what was expected, e.g.
``train.lr: expected a number > 0, got -0.1``. A config class's ``__post_init__`` calls :func:`_validate`,
which applies the same constraints, and the field's ``Literal`` choices, to a config built directly in
Python -- so each accepted range or set of values is written once, on its field.

Other YAML files (the folder data-set spec) read their values with the same checks: :func:`coerce` and
:func:`get_typed` for one value, :func:`check_keys` for the keys of a mapping, :func:`check_value` with
the ``check`` functions here (:func:`one_of`, :func:`finite`) for a value built directly.

The schemas built on it: :class:`equiseg.models.config.ModelConfig` (the network, with the models) and
:mod:`equiseg.config` (the experiment: data, model choice, training, evaluation), which imports it --
so neither the models nor this module import the experiment config.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from equiseg.utils import bounded_repr, bounded_text

T = TypeVar("T")

__all__ = [
    "apply_overrides",
    "check_expanded_size",
    "check_keys",
    "check_value",
    "coerce",
    "field",
    "finite",
    "from_dict",
    "get_typed",
    "load_yaml",
    "one_of",
    "save_yaml",
    "suggest",
    "to_dict",
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
        raise ValueError(f"{where}: cannot interpret {bounded_repr(value)} as {tp} ({'; '.join(errors)})")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: {bounded_repr(value)} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ValueError(
                f"{where}: expected a mapping for section {tp.__name__}, got {bounded_repr(value)}"
            )
        return from_dict(tp, value, prefix=where)
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {bounded_repr(value)}")
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
            raise ValueError(f"{where}: expected a mapping, got {bounded_repr(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"{where}: expected true/false, got {bounded_repr(value)}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"{where}: expected an integer, got {bounded_repr(value)}")
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{where}: expected an integer, got {bounded_repr(value)}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {bounded_repr(value)}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected a number, got {bounded_repr(value)}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"{where}: expected a string, got {bounded_repr(value)}")
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
            raise ValueError(f"{where}: expected {expected}, got {bounded_repr(value)}")
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
        raise ValueError(f"{where}: expected {noun} {bounds}{extra}, got {bounded_repr(value)}")


def coerce(value: Any, tp: Any, where: str, **constraints: Any) -> Any:
    """Convert ``value`` to type ``tp`` as config fields are, then apply :func:`check_value`'s constraints.

    The entry point for other YAML schemas (the folder data-set spec), so that every file a user
    writes reports a bad value the same way: ``modalities.rgb.bgr: expected true/false, got 'flase'``.
    """
    out = _coerce(value, tp, where)
    if constraints:
        check_value(out, where, **constraints)
    return out


def get_typed(
    data: typing.Mapping[str, Any], key: str, tp: Any, default: Any, where: str = "", **constraints: Any
) -> Any:
    """``data[key]`` converted by :func:`coerce` (with its constraints), or ``default`` when the key is
    absent or null; errors name ``where.key``. For YAML mappings read key by key (the folder data-set
    spec), whose keys are not a dataclass's fields."""
    value = data.get(key)
    if value is None:
        return default
    return coerce(value, tp, f"{where}.{key}" if where else key, **constraints)


def check_keys(data: Any, valid: typing.Sequence[str], where: str) -> None:
    """Refuse a value that is not a mapping, or a key not in ``valid`` (with the closest one suggested).

    Raises:
        ValueError: ``{where}: expected a mapping, got ...`` or ``{where}: unknown key 'x' (did you mean
            'y'?)``.
    """
    if not isinstance(data, typing.Mapping):
        raise ValueError(f"{where}: expected a mapping, got {data!r}")
    for key in data:
        if key not in valid:
            raise ValueError(f"{where}: unknown key '{key}'{suggest(str(key), valid)}")


def one_of(*allowed: Any) -> typing.Callable[[Any], str | None]:
    """A ``check`` (see :func:`check_value`) accepting exactly ``allowed``: ``expected one of a | b``."""
    text = " | ".join(map(str, allowed))

    def check(value: Any) -> str | None:
        return None if value in allowed else f"one of {text}"

    return check


def finite(value: Any) -> str | None:
    """A ``check`` accepting finite numbers only (nan or inf would silently spread through arithmetic)."""
    return None if math.isfinite(value) else "a finite number"


_CONSTRAINTS = "equiseg.constraints"  # dataclass field metadata key


def _field(default: Any = dataclasses.MISSING, **constraints: Any) -> Any:
    """A dataclass field with the constraints of :func:`check_value` (``ge``, ``gt``, ``le``, ``lt``,
    ``check``, ``note``), enforced by :func:`from_dict` and by :func:`_validate`."""
    return dataclasses.field(default=default, metadata={_CONSTRAINTS: constraints})


def _check_field(field: dataclasses.Field, value: Any, where: str) -> None:
    constraints = field.metadata.get(_CONSTRAINTS)
    if constraints:
        check_value(value, where, **constraints)


@functools.cache
def _literal_choices(cls: type) -> dict[str, tuple[Any, ...]]:
    """The fields of dataclass ``cls`` annotated ``Literal[...]``, with their choices."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: typing.get_args(hints[f.name])
        for f in dataclasses.fields(cls)
        if typing.get_origin(hints[f.name]) is typing.Literal
    }


def _validate(obj: Any, prefix: str) -> None:
    """Check every constrained field of a dataclass instance, and every ``Literal`` field against its
    choices (for directly constructed configs; :func:`from_dict` has checked both already).

    Raises:
        ValueError: as :func:`check_value`, e.g. ``train.modality_dropout.mode: expected one of none |
            subset | independent, got 'often'``.
    """
    choices = _literal_choices(type(obj))
    for f in dataclasses.fields(obj):
        value, where = getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name
        _check_field(f, value, where)
        if f.name in choices:
            check_value(value, where, check=one_of(*choices[f.name]))


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
        where = f"{prefix}.{bounded_text(key)}" if prefix else bounded_text(key)
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


# A config's size once YAML anchors/aliases are expanded: real configs hold a few hundred values; an
# "alias bomb" (each list repeating the previous one nine times) holds billions in a few hundred bytes,
# and walking, copying or quoting it in an error message takes the machine's memory.
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 64


def check_expanded_size(data: Any, where: str) -> None:
    """Refuse a parsed YAML value whose expanded size or nesting is absurd (an alias bomb, a recursive
    alias), before anything walks it. The count stops at the limit, so the check itself is cheap.

    Raises:
        ValueError: ``{where}: the config expands to more than 100000 values ...``.
    """
    count, stack = 0, [(data, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES or depth > MAX_CONFIG_DEPTH:
            what = (
                f"more than {MAX_CONFIG_VALUES} values"
                if count > MAX_CONFIG_VALUES
                else f"more than {MAX_CONFIG_DEPTH} levels of nesting"
            )
            raise ValueError(
                f"{where}: the config expands to {what} (YAML anchors/aliases repeated inside each other, "
                "or an alias that contains itself); refused"
            )
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
            count += len(node)  # the keys
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Apply dotted ``a.b=value`` strings to a nested dict (values parsed as YAML scalars/lists)."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {bounded_repr(item)} must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            problem = _yaml_problem(e)
            raise ValueError(f"--set {bounded_text(key)}: not a valid YAML value: {problem}") from None
        check_expanded_size(value, f"--set {bounded_text(key)}")
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
    check_expanded_size(data, str(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level, got {type(data).__name__}")
    return data


def save_yaml(data: Any, path: str | Path) -> None:
    """Write a config (dataclass or dict) as YAML, keys in declaration order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(data), f, sort_keys=False)


# the public name of the field helper (``field(default, ge=..., check=...)``); ``_field`` is kept for the
# config modules that declare their fields with it
field = _field
