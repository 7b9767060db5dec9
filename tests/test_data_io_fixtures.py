"""The OpenCV readers return, byte for byte, what the replaced hand-written PNG decoder returned.

``tests/fixtures/images/`` holds frozen PNGs (synthetic DeLiVER and MUSES files, including the
uint16 BGR PNGs of the MUSES encoding, and every colour type at 8 and 16 bits from Pillow, the old
encoder, a reference encoder using every row filter and ``cv2.imwrite``) and ``decoded_arrays.json``,
the sha256/shape/dtype of the arrays the old code returned for them (written by
``tests/fixtures/images/make_fixtures.py`` with the old decoder, ``benchmarks/_legacy_io.py`` in git
history).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import equiseg.data.io
from equiseg.data.io import read_image, read_png16

FIXTURES = Path(__file__).parent / "fixtures" / "images"
EXPECTED = json.loads((FIXTURES / "decoded_arrays.json").read_text())


def digest(a: np.ndarray) -> dict:
    """As ``make_fixtures.digest``: sha256 of the little-endian C-order bytes, shape, dtype name."""
    le = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False))
    return {"sha256": hashlib.sha256(le.tobytes()).hexdigest(), "shape": list(a.shape), "dtype": a.dtype.name}


def test_every_fixture_is_listed():
    on_disk = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*.png")}
    assert on_disk == set(EXPECTED)
    bits = {int(open(FIXTURES / f, "rb").read(25)[24]) for f in EXPECTED}
    assert {8, 16} <= bits  # both depths are covered


@pytest.mark.parametrize("rgb_flag", [True, False], ids=["IMREAD_COLOR_RGB", "swap-after"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_decoded_arrays_identical_to_the_old_decoder(name, rgb_flag, monkeypatch):
    if not rgb_flag:  # what OpenCV releases without IMREAD_COLOR_RGB (< 4.11) take
        monkeypatch.setattr(equiseg.data.io, "_IMREAD_RGB", None)
    elif equiseg.data.io._IMREAD_RGB is None:
        pytest.skip(
            f"OpenCV {cv2.__version__} has no IMREAD_COLOR_RGB (added in 4.11); "
            "the swap-after case tests the path this OpenCV takes"
        )
    path, want = FIXTURES / name, EXPECTED[name]
    assert digest(read_image(path)) == want["read_image"]
    assert digest(read_image(path, as_label=True)) == want["label"]
    if "error" not in want["read_png16_bgr"]:  # palette/1-bit: the old decoder refused, OpenCV expands
        assert digest(read_png16(path, bgr=True)) == want["read_png16_bgr"]
