"""File decoding: the built-in PNG codec (16-bit colour, every row filter), arrays, clear errors."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from equiseg.data.io import (
    decode_png,
    encode_png,
    read_array,
    read_image,
    read_png16,
    to_three_channels,
    write_png16,
)


def _filter_rows(x: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    """Reference PNG filtering (spec section 9), vectorised: every neighbour is a known original byte."""
    x = x.astype(np.int16)
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    b = np.zeros_like(x)
    b[1:] = x[:-1]
    c = np.zeros_like(x)
    c[1:, bpp:] = x[:-1, :-bpp]
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    preds = np.stack([np.zeros_like(x), a, b, (a + b) >> 1, paeth])  # (5, H, stride)
    pred = preds[filters, np.arange(x.shape[0])]
    return ((x - pred) & 255).astype(np.uint8)


def _png_with_filters(array: np.ndarray, filters: np.ndarray) -> bytes:
    h, w, ch = array.shape
    depth = 16 if array.dtype == np.uint16 else 8
    body = np.ascontiguousarray(array.astype(">u2") if depth == 16 else array).view(np.uint8).reshape(h, -1)
    raw = np.concatenate([filters[:, None].astype(np.uint8), _filter_rows(body, filters, ch * depth // 8)], 1)

    def chunk(t: bytes, d: bytes) -> bytes:
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[ch]
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw.tobytes()))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("filters", ["none-sub-up", "all"])
def test_decoder_every_filter(channels, dtype, filters):
    rng = np.random.default_rng(channels)
    h, w = 13, 7
    array = rng.integers(0, np.iinfo(dtype).max + 1, (h, w, channels), dtype=dtype)
    array[3:6] = array[2]  # smooth rows, where Up and Paeth matter
    kinds = (0, 1, 2) if filters == "none-sub-up" else (0, 1, 2, 3, 4)
    row_filters = np.array([kinds[i % len(kinds)] for i in range(h)])
    row_filters[:3] = 2  # Up runs from the first row
    out = decode_png(_png_with_filters(array, row_filters))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, array)


def test_decoder_matches_pillow_adaptive_filters():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (31, 45, 3), dtype=np.uint8)
    image[10:20] = np.linspace(0, 255, 45, dtype=np.uint8)[None, :, None]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    np.testing.assert_array_equal(decode_png(buf.getvalue()), image)


def test_png16_round_trip_and_bgr(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    write_png16(tmp_path / "x.png", a, bgr=True)
    np.testing.assert_array_equal(read_png16(tmp_path / "x.png"), a)
    np.testing.assert_array_equal(read_png16(tmp_path / "x.png", bgr=False), a[..., ::-1])  # file order
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), a[..., ::-1])  # read_image: file order
    write_png16(tmp_path / "y.png", a[..., :1], bgr=True)  # gray: Pillow agrees (mode I;16)
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "y.png")), a[..., 0])
    with pytest.raises(ValueError, match="uint16"):
        write_png16(tmp_path / "z.png", a.astype(np.float32))
    with pytest.raises(ValueError, match="C in 1..4"):
        encode_png(np.zeros((2, 2, 5), np.uint8))


def test_png_errors(tmp_path):
    good = encode_png(np.arange(48, dtype=np.uint16).reshape(4, 4, 3))
    path = tmp_path / "t.png"
    path.write_bytes(good[:-20])
    with pytest.raises(ValueError, match=rf"{path}.*truncated"):
        read_image(path)
    corrupt = bytearray(good)
    corrupt[40] ^= 0xFF  # inside IDAT: CRC mismatch
    path.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match=rf"{path}.*CRC"):
        read_image(path)
    path.write_bytes(b"GIF89a" + bytes(40))
    with pytest.raises(ValueError, match=rf"{path}.*not a PNG"):
        read_image(path)
    with pytest.raises(FileNotFoundError, match="missing.png does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match=r"unsupported file extension '\.gif'"):
        read_image(tmp_path / "x.gif")


def test_arrays(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    np.savez_compressed(tmp_path / "a.npz", a)
    np.testing.assert_array_equal(read_array(tmp_path / "a.npz"), a)
    np.savez(tmp_path / "k.npz", image=a)
    np.testing.assert_array_equal(read_array(tmp_path / "k.npz"), a)  # a single array under any key
    np.savez(tmp_path / "m.npz", x=a, y=a)
    with pytest.raises(ValueError, match=r"m\.npz.*arr_0.*\['x', 'y'\]"):
        read_array(tmp_path / "m.npz")
    np.save(tmp_path / "n.npy", a)
    np.testing.assert_array_equal(read_image(tmp_path / "n.npy"), a)
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=r"bad\.npy.*unreadable"):
        read_array(tmp_path / "bad.npy")


def test_to_three_channels():
    g = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert to_three_channels(g, "x").shape == (2, 3, 3)
    np.testing.assert_array_equal(to_three_channels(np.stack([g, g * 0], -1), "x")[..., 2], g)  # gray+alpha
    rgba = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(to_three_channels(rgba, "x"), rgba[..., :3])
    with pytest.raises(ValueError, match="where.*channels last.*shape \\(3, 2, 5\\)"):
        to_three_channels(np.zeros((3, 2, 5)), "where")
