"""File decoding: OpenCV's PNG/JPEG codec (16-bit colour, every row filter, channel order), arrays, errors.

Byte identity with the decoder this replaced, on frozen files: ``tests/test_data_io_fixtures.py``.
"""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch
import torch.utils.data
from PIL import Image

from equiseg.data.io import (
    decode_png,
    encode_png,
    read_array,
    read_image,
    read_png16,
    to_chw_tensor,
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
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "x.png"), cv2.IMREAD_UNCHANGED), a)  # = cv2
    np.testing.assert_array_equal(read_png16(tmp_path / "x.png", bgr=False), a[..., ::-1])  # file order
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), a[..., ::-1])  # read_image: file order
    write_png16(tmp_path / "y.png", a[..., :1], bgr=True)  # gray: Pillow agrees (mode I;16)
    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "y.png")), a[..., 0])
    with pytest.raises(ValueError, match="uint16"):
        write_png16(tmp_path / "z.png", a.astype(np.float32))
    with pytest.raises(ValueError, match="C in 1, 3 or 4"):
        encode_png(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError, match=r"no gray\+alpha"):  # OpenCV's PNG encoder has no 2-channel mode
        write_png16(tmp_path / "la.png", a[..., :2])


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_encode_decode_round_trip_in_file_order(channels, dtype):
    rng = np.random.default_rng(channels)
    a = rng.integers(0, np.iinfo(dtype).max + 1, (5, 7, channels), dtype=dtype)
    data = encode_png(a, compress_level=1)
    np.testing.assert_array_equal(decode_png(data), a)
    if dtype == np.uint8 or channels == 1:  # Pillow reads the file's order too (8-bit, 16-bit gray)
        np.testing.assert_array_equal(np.array(Image.open(io.BytesIO(data))).reshape(a.shape), a)


def test_png_channels_as_in_the_file(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "t.png", transparency=(1, 2, 3))  # tRNS: OpenCV would add alpha
    np.testing.assert_array_equal(read_image(tmp_path / "t.png"), rgb)
    np.testing.assert_array_equal(read_png16(tmp_path / "t.png"), rgb[..., ::-1])
    la = rng.integers(0, 256, (6, 5, 2), dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")  # OpenCV returns gray+alpha as BGRA
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), la)
    np.testing.assert_array_equal(read_png16(tmp_path / "la.png"), la)
    idx = rng.integers(0, 4, (6, 5), dtype=np.uint8)
    pal = Image.fromarray(idx, "P")
    pal.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120])
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png", as_label=True), idx)  # indices (Pillow)
    colours = np.array(pal.convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), colours)
    np.testing.assert_array_equal(read_png16(tmp_path / "p.png", bgr=False), colours)  # cv2's expansion
    good = (tmp_path / "t.png").read_bytes()
    (tmp_path / "tail.png").write_bytes(good + b"trailing bytes")  # after IEND: allowed, as libpng does
    np.testing.assert_array_equal(read_image(tmp_path / "tail.png"), rgb)


def test_jpeg(tmp_path):
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:40, 0:48]
    noisy = np.stack([xx * 5, yy * 6, xx + yy], -1) + rng.normal(0, 8, (40, 48, 3))
    rgb = np.clip(noisy, 0, 255).astype(np.uint8)
    path = tmp_path / "x.jpg"
    Image.fromarray(rgb).save(path, quality=90)
    out = read_image(path)
    assert out.shape == (40, 48, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.array(Image.open(path)))  # what Pillow decodes, in RGB order
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.jpeg")
    assert read_image(tmp_path / "g.jpeg").shape == (40, 48)
    path.write_bytes(path.read_bytes()[:-300])
    with pytest.raises(ValueError, match=rf"{path}.*truncated"):
        read_image(path)
    path.write_bytes(b"no jpeg at all")
    with pytest.raises(ValueError, match=rf"{path}.*unreadable"):
        read_image(path)


def test_png_errors(tmp_path):
    good = encode_png(np.arange(48, dtype=np.uint16).reshape(4, 4, 3))
    path = tmp_path / "t.png"
    path.write_bytes(good[:-20])
    with pytest.raises(ValueError, match=rf"{path}.*truncated"):
        read_image(path)
    path.write_bytes(good[:-12])  # only IEND missing
    with pytest.raises(ValueError, match=rf"{path}.*truncated.*before the IEND"):
        read_png16(path)
    corrupt = bytearray(good)
    corrupt[good.index(b"IDAT") + 6] ^= 0xFF  # inside IDAT's data: CRC mismatch
    path.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match=rf"{path}.*CRC"):
        read_image(path)
    with pytest.raises(ValueError, match=rf"{path}.*CRC"):
        decode_png(bytes(corrupt), str(path))
    path.write_bytes(b"GIF89a" + bytes(40))
    with pytest.raises(ValueError, match=rf"{path}.*not a PNG"):
        read_image(path)
    with pytest.raises(FileNotFoundError, match="missing.png does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="missing.png does not exist"):
        read_png16(tmp_path / "missing.png")
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


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.int64, np.bool_])
def test_to_chw_tensor(dtype):
    a = (np.arange(30).reshape(2, 5, 3) % 7).astype(dtype)
    t = to_chw_tensor(a)
    assert t.is_contiguous() and tuple(t.shape) == (3, 2, 5)
    want = np.moveaxis(a, 2, 0).astype(np.int32 if dtype == np.uint16 else dtype)
    np.testing.assert_array_equal(t.numpy(), want)
    np.testing.assert_array_equal(to_chw_tensor(a[:, ::2]).numpy(), want[:, :, ::2])  # strided input


class _Threads(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        a = np.zeros((512, 512), np.uint8)
        cv2.LUT(cv2.resize(a, (1024, 1024)), np.zeros((1, 256), np.float32))  # OpenCV's parallel paths
        return cv2.getNumThreads()


def test_opencv_single_threaded_and_fork_safe_with_dataloader_workers():
    assert cv2.getNumThreads() == 1  # set when equiseg.data.io is imported
    cv2.resize(np.zeros((512, 512), np.uint8), (1024, 1024))  # OpenCV used in the parent before forking
    loader = torch.utils.data.DataLoader(_Threads(), batch_size=None, num_workers=2, timeout=120)
    assert list(loader) == [1, 1, 1, 1]  # a hang in a worker raises after the timeout instead
