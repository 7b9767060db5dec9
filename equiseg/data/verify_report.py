"""What ``equiseg data verify`` found: :class:`VerifyReport` (rows per split and condition, every
:class:`Problem`, notes), as a terminal table or as JSON. :func:`equiseg.data.verify.verify_dataset` fills it."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

PROBLEM_KINDS = ("split", "count", "missing", "decode", "nonfinite", "size", "label")
"""Kinds of :class:`Problem`: a required split with no frames, a count off the expected one, a missing
file, a file that does not decode, non-finite values, a size mismatch, label values out of range."""

_FILE_KINDS = PROBLEM_KINDS[2:]  # the kinds counted per file in the table
_HEADERS = {"missing": "missing", "decode": "undecodable", "nonfinite": "non-finite", "size": "size",
            "label": "label"}  # fmt: skip

_ALL = "(all)"  # the row of a whole split


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with the data set.

    Attributes:
        kind: one of :data:`PROBLEM_KINDS`.
        split: the split it was found in.
        message: one line naming the file (or the split / condition for counts) and what is wrong.
        file: the file concerned, when there is one.
        condition: the frame's condition (DeLiVER: the condition folder; MUSES: ``weather/time``).
        modality: the modality (or ``label``) concerned.
    """

    kind: str
    split: str
    message: str
    file: str | None = None
    condition: str | None = None
    modality: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Row:
    """The table row of one split and condition: frames found and expected, problems per kind."""

    frames: int = 0
    expected: int | None = None
    problems: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "expected": self.expected,
            **{k: self.problems[k] for k in _FILE_KINDS},
        }


@dataclasses.dataclass
class VerifyReport:
    """What :func:`verify_dataset` found.

    Attributes:
        root: the data set root.
        layout: ``deliver``, ``muses`` or ``folder``.
        splits: the splits checked.
        expected_from: where the expected counts come from (published sizes, a synth manifest, none).
        rows: per split, per condition: frames found, expected, problems per kind (``(all)`` = the split).
        problems: every problem, in the order found (split by split, frame by frame).
        notes: facts that are not problems (depth folders present, labels withheld, splits not checked).
        depth: DeLiVER only: ``{"hha": present, "depth": present, "checked": folder}``.
    """

    root: str
    layout: str
    splits: list[str]
    expected_from: str
    rows: dict[str, dict[str, _Row]] = dataclasses.field(default_factory=dict)
    problems: list[Problem] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    depth: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """True when nothing is wrong (notes are not problems)."""
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Problems per kind, over the whole data set."""
        c = collections.Counter(p.kind for p in self.problems)
        return {k: c[k] for k in PROBLEM_KINDS}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view: every row, every problem, the notes."""
        return {
            "root": self.root,
            "layout": self.layout,
            "ok": self.ok,
            "splits_checked": list(self.splits),
            "expected_from": self.expected_from,
            "depth": self.depth,
            "counts": self.counts(),
            "splits": {
                split: {
                    **rows[_ALL].to_dict(),
                    "conditions": {c: r.to_dict() for c, r in rows.items() if c != _ALL},
                }
                for split, rows in self.rows.items()
            },
            "problems": [p.to_dict() for p in self.problems],
            "notes": list(self.notes),
        }

    def format_table(self, max_problems: int = 20) -> str:
        """The terminal view: a header, one row per split and condition, the first problems, a verdict."""
        lines = [f"{self.layout} data set at {self.root}", f"expected counts: {self.expected_from}"]
        lines += [f"note: {n}" for n in self.notes]
        header = ["split", "condition", "frames", "expected", *(_HEADERS[k] for k in _FILE_KINDS)]
        table = []
        for split, rows in self.rows.items():
            for cond, row in sorted(rows.items(), key=lambda kv: (kv[0] == _ALL, kv[0])):
                exp = "-" if row.expected is None else str(row.expected)
                table.append(
                    [split or "-", cond, str(row.frames), exp, *(str(row.problems[k]) for k in _FILE_KINDS)]
                )
        widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]

        def fmt(cells: list[str]) -> str:  # names left-aligned, numbers right-aligned
            return "  ".join(
                v.ljust(w) if i < 2 else v.rjust(w)
                for i, (v, w) in enumerate(zip(cells, widths, strict=True))
            )

        lines += ["", fmt(header), *(fmt(r) for r in table)]
        if self.problems:
            lines += ["", f"{len(self.problems)} problem(s):"]
            for p in self.problems[:max_problems]:
                where = (p.split or "-") + (f"/{p.condition}" if p.condition else "")
                lines.append(f"  [{p.kind}] {where}: {p.message}")
            if len(self.problems) > max_problems:
                lines.append(f"  ... and {len(self.problems) - max_problems} more (--json lists every one)")
            counts = ", ".join(f"{n} {k}" for k, n in self.counts().items() if n)
            lines += ["", f"FAILED: {len(self.problems)} problem(s) ({counts})"]
        else:
            total = sum(rows[_ALL].frames for rows in self.rows.values())
            lines += ["", f"OK: {total} frame(s) in {len(self.rows)} split(s), every check passed"]
        return "\n".join(lines)
