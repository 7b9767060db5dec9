"""FROZEN COPY of ``equiseg/data/io.py`` before issue 11 item 5 (OpenCV I/O and transforms); not package code.

Kept verbatim so that ``benchmarks/data_speed.py`` can measure today's rate against the new path in
one run, and so that ``tests/fixtures/images/make_fixtures.py`` can regenerate the reference
outputs. Do not edit (only this paragraph was added).

Reading and writing the files of the supported data sets: PNG (8/16-bit), JPEG, ``.npz``, ``.npy``.

SPEC §3.1 (DeLiVER: 8-bit PNGs, RGBA and 1-channel images) and §3.2 (MUSES: the SDK's projected
lidar/radar/event images as ``.npz``/``.npy`` float arrays or as PNGs written by OpenCV, i.e. with the
colour channels stored in B, G, R order and lidar/radar as uint16).

Pillow decodes 16-bit *colour* PNGs to 8-bit RGB (it has no 48-bit mode), so those go through the
small dependency-free decoder here (zlib + numpy, unfiltering vectorised over rows, or over
anti-diagonals for the Average/Paeth filters). :func:`write_png16` / :func:`read_png16` are the matching
pair for writing such files (``bgr=True`` mirrors ``cv2.imwrite``/``cv2.imread``).

Errors: a missing file raises :class:`FileNotFoundError`; an unreadable, truncated or malformed file
raises :class:`ValueError`; both name the path and what was expected. :func:`check_finite` is the one
NaN/Inf check every modality decoder (the data set loaders, ``predict``) runs on float arrays, so a
corrupt ``.npz`` is an error naming the file in training, evaluation, the benchmark and prediction
rather than a NaN loss or a silently wrong mIoU.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = [
    "read_image",
    "read_png",
    "read_png16",
    "write_png16",
    "encode_png",
    "decode_png",
    "read_array",
    "check_finite",
    "to_three_channels",
    "to_chw_tensor",
    "IMAGE_EXTENSIONS",
    "ARRAY_EXTENSIONS",
]

PathLike = str | os.PathLike

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ARRAY_EXTENSIONS = (".npz", ".npy")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (palette type 3 excluded)
_COLOR_TYPE_OF_CHANNELS = {1: 0, 2: 4, 3: 2, 4: 6}


def _require_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        what = "is a directory, expected a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{path} {what}")
    return path


# --------------------------------------------------------------------------------------------- PNG


def _png_header(data: bytes, where: str) -> tuple[int, int, int, int, int]:
    """``(width, height, bit_depth, color_type, interlace)`` from a PNG's IHDR chunk."""
    if data[:8] != _PNG_SIGNATURE:
        raise ValueError(f"{where}: not a PNG file (bad signature)")
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ValueError(f"{where}: truncated or malformed PNG (no IHDR chunk)")
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return width, height, depth, ctype, interlace


def _png_idat(data: bytes, where: str) -> bytes:
    """Concatenated IDAT payload, after checking every chunk's CRC and that IEND is present."""
    pos, idat = 8, []
    while True:
        if pos + 12 > len(data):
            raise ValueError(f"{where}: truncated PNG (ends at byte {len(data)} before the IEND chunk)")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise ValueError(f"{where}: truncated PNG (chunk {ctype!r} needs {length} bytes)")
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : end])
        if zlib.crc32(ctype + body) != crc:
            raise ValueError(f"{where}: corrupt PNG (CRC mismatch in chunk {ctype!r})")
        if ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            return b"".join(idat)
        pos = end


def _unfilter_rows(filt: np.ndarray, data: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG filters None/Sub/Up for all rows at once.

    Args:
        filt: (H,) uint8 filter type per row, all in {0, 1, 2}.
        data: (H, W·bpp) uint8 filtered bytes (modified in place and returned).
        bpp: bytes per pixel.
    """
    h, stride = data.shape
    sub = filt == 1
    if sub.any():  # Sub: running sum along the row, per byte lane (uint8 arithmetic wraps mod 256)
        lanes = data[sub].reshape(-1, stride // bpp, bpp)
        data[sub] = np.cumsum(lanes, axis=1, dtype=np.uint8).reshape(-1, stride)
    up = filt == 2
    if up.any():
        # Up: x[r] = f[r] + x[r-1]. Within a run of Up rows starting after row s (None/Sub, already
        # reconstructed), x[r] = sum_{j=s..r} data[j]: a segmented cumulative sum over rows.
        csum = np.cumsum(data, axis=0, dtype=np.uint8)
        starts = np.maximum.accumulate(np.where(up, -1, np.arange(h)))  # last non-Up row <= r, or -1
        padded = np.concatenate([np.zeros((1, stride), np.uint8), csum], axis=0)
        data = csum - padded[np.maximum(starts, 0)]  # C[r] - C[s-1], with C[-1] = 0 (padded[0])
    return data


def _unfilter_wavefront(filt: np.ndarray, data: np.ndarray, bpp: int) -> np.ndarray:
    """Undo any mix of PNG filters, including Average and Paeth, one anti-diagonal at a time.

    Pixel (r, c) depends on (r, c-1), (r-1, c) and (r-1, c-1): every pixel of diagonal r + c = k only
    needs diagonals k-1 and k-2, so each diagonal is one vectorised step (H + W - 1 steps).

    Args:
        filt: (H,) filter type per row in 0..4.
        data: (H, W·bpp) uint8 filtered bytes.
        bpp: bytes per pixel.

    Returns:
        (H, W·bpp) uint8 reconstructed bytes.
    """
    h, stride = data.shape
    w = stride // bpp
    f = data.reshape(h, w, bpp).astype(np.int16)
    # Skewed store: s[r + 1, k + 1] = pixel (r, k - r); row 0, column 0 and unwritten cells stay 0,
    # which is exactly the "outside the image" value the filters use.
    s = np.zeros((h + 1, h + w + 1, bpp), np.int16)
    ft = filt.astype(np.int16)[:, None]
    for k in range(h + w - 1):
        r0, r1 = max(0, k - w + 1), min(h - 1, k) + 1
        rows = np.arange(r0, r1)
        a = s[r0 + 1 : r1 + 1, k]  # left:     diagonal k-1, same row
        b = s[r0:r1, k]  # up:        diagonal k-1, row above
        c = s[r0:r1, k - 1]  # up-left: diagonal k-2, row above (k-1 = -1 hits the unused last column)
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        t = ft[r0:r1]
        pred = np.where(t == 1, a, 0) + np.where(t == 2, b, 0)
        pred += np.where(t == 3, (a + b) >> 1, 0) + np.where(t == 4, paeth, 0)
        s[r0 + 1 : r1 + 1, k + 1] = (f[rows, k - rows] + pred) & 255
    rows = np.arange(h)[:, None]
    out = s[rows + 1, rows + np.arange(w)[None, :] + 1]  # (H, W, bpp): un-skew
    return out.astype(np.uint8).reshape(h, stride)


def decode_png(data: bytes, where: str = "<bytes>") -> np.ndarray:
    """Decode a non-palette, non-interlaced 8- or 16-bit PNG with zlib and numpy.

    Args:
        data: the whole file's bytes.
        where: name for error messages (the path).

    Returns:
        H×W×C array (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) in the file's channel order, uint8 or
        uint16 (native byte order).

    Raises:
        ValueError: not a PNG, truncated, corrupt, or a layout this decoder does not handle.
    """
    width, height, depth, ctype, interlace = _png_header(data, where)
    if ctype not in _PNG_CHANNELS or depth not in (8, 16):
        raise ValueError(
            f"{where}: PNG colour type {ctype} / bit depth {depth} is not supported here "
            "(expected gray, gray+alpha, RGB or RGBA at 8 or 16 bits)"
        )
    if interlace:
        raise ValueError(f"{where}: interlaced (Adam7) PNGs are not supported by this decoder")
    channels = _PNG_CHANNELS[ctype]
    bpp = channels * depth // 8
    try:
        raw = zlib.decompress(_png_idat(data, where))
    except zlib.error as e:
        raise ValueError(f"{where}: corrupt or truncated PNG image data ({e})") from None
    stride = width * bpp
    if len(raw) != height * (stride + 1):
        raise ValueError(
            f"{where}: PNG image data has {len(raw)} bytes, expected {height * (stride + 1)} "
            f"for {width}×{height}×{channels} at {depth} bits (truncated or corrupt)"
        )
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    filt = rows[:, 0]
    if filt.size and filt.max() > 4:
        raise ValueError(f"{where}: corrupt PNG (invalid row filter type {int(filt.max())})")
    body = rows[:, 1:].copy()
    if np.isin(filt, (3, 4)).any():
        body = _unfilter_wavefront(filt, body, bpp)
    else:
        body = _unfilter_rows(filt, body, bpp)
    if depth == 16:
        out = body.view(">u2").astype(np.uint16)
    else:
        out = body
    return out.reshape(height, width, channels)


def encode_png(array: np.ndarray, compress_level: int = 6) -> bytes:
    """Encode an 8- or 16-bit gray/gray+alpha/RGB/RGBA array as PNG (Sub filter on every row).

    Args:
        array: H×W or H×W×C (C in 1..4), dtype uint8 or uint16, channels in file order.
        compress_level: zlib level 0..9.

    Returns:
        The PNG file's bytes.
    """
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in _COLOR_TYPE_OF_CHANNELS or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"encode_png: expected an H×W or H×W×C array with C in 1..4, got shape {a.shape}")
    if a.dtype == np.uint8:
        depth, body = 8, np.ascontiguousarray(a)
    elif a.dtype == np.uint16:
        depth, body = 16, np.ascontiguousarray(a.astype(">u2"))
    else:
        raise ValueError(f"encode_png: expected dtype uint8 or uint16, got {a.dtype}")
    h, w, c = a.shape
    bpp = c * depth // 8
    rows = body.view(np.uint8).reshape(h, w * bpp)
    filtered = rows.copy()
    filtered[:, bpp:] -= rows[:, :-bpp]  # Sub filter (wraps mod 256)
    raw = np.concatenate([np.ones((h, 1), np.uint8), filtered], axis=1)

    def chunk(ctype: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, _COLOR_TYPE_OF_CHANNELS[c], 0, 0, 0)
    idat = zlib.compress(raw.tobytes(), compress_level)
    return _PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _swap_rb(a: np.ndarray) -> np.ndarray:
    """Reverse the first three channels (RGB <-> BGR), leaving alpha and gray images alone."""
    if a.ndim == 3 and a.shape[2] >= 3:
        order = [2, 1, 0] + list(range(3, a.shape[2]))
        return a[..., order]
    return a


def write_png16(path: PathLike, array: np.ndarray, bgr: bool = True, compress_level: int = 6) -> None:
    """Write a uint16 array as a 16-bit PNG, as ``cv2.imwrite`` would.

    Args:
        path: output file (parent folders are created).
        array: H×W or H×W×C uint16 array, C in 1..4.
        bgr: the array's channels are in OpenCV order, i.e. channel 0 is stored as the file's
            *blue* channel (the MUSES SDK's encoding, SPEC §3.2). ``False`` stores them as given.
        compress_level: zlib level 0..9.
    """
    a = np.asarray(array)
    if a.dtype != np.uint16:
        raise ValueError(f"write_png16({path}): expected a uint16 array, got {a.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(_swap_rb(a) if bgr else a, compress_level))


def read_png16(path: PathLike, bgr: bool = True) -> np.ndarray:
    """Read a PNG with the built-in decoder, keeping 16-bit colour exactly (the pair of :func:`write_png16`).

    Args:
        path: a non-palette, non-interlaced 8- or 16-bit PNG.
        bgr: return channels in OpenCV order (file channel 0 = red becomes array channel 2), as
            ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` does. ``read_png16(p, bgr=b)`` returns what
            ``write_png16(p, a, bgr=b)`` wrote.

    Returns:
        H×W×C array, uint16 for 16-bit files and uint8 for 8-bit ones.
    """
    path = _require_file(path)
    out = decode_png(path.read_bytes(), str(path))
    return _swap_rb(out) if bgr else out


def read_png(path: PathLike, *, as_label: bool = False) -> np.ndarray:
    """Read a PNG exactly: Pillow for what it decodes losslessly, the built-in decoder for 16-bit colour.

    Args:
        path: PNG file.
        as_label: keep palette indices of ``P``-mode files (labels) instead of expanding to RGB.

    Returns:
        H×W (gray, palette indices) or H×W×C array in the file's channel order (RGB[A]), dtype uint8,
        uint16 (16-bit files) or int32 (Pillow ``I`` mode).
    """
    path = _require_file(path)
    with open(path, "rb") as fh:
        head = fh.read(33)
    width, height, depth, ctype, _ = _png_header(head, str(path))
    if depth == 16 and ctype in (2, 4, 6):
        return decode_png(path.read_bytes(), str(path))
    return _read_with_pillow(path, as_label=as_label)


def _read_with_pillow(path: Path, *, as_label: bool) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P" and not as_label:
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("L" if im.mode == "1" else "RGB")
            elif im.mode == "PA" and not as_label:
                im = im.convert("RGBA")
            elif im.mode == "PA":
                im = im.getchannel(0)
            return np.array(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"{path}: cannot decode image ({e}); the file is unreadable or truncated") from None


def read_array(path: PathLike) -> np.ndarray:
    """Read a ``.npz`` (key ``arr_0``, or its only array) or ``.npy`` file.

    Raises:
        FileNotFoundError: missing file.
        ValueError: unreadable file, or an ``.npz`` without ``arr_0`` holding several arrays.
    """
    path = _require_file(path)
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if "arr_0" in keys:
                return z["arr_0"]
            if len(keys) == 1:
                return z[keys[0]]
            raise ValueError(f"{path}: expected one array under key 'arr_0', found keys {keys}")
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: cannot read array file ({e}); unreadable or truncated") from None
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: cannot read array file ({e}); unreadable or truncated") from None


def check_finite(array: np.ndarray, where: PathLike, name: str) -> None:
    """Refuse a decoded float modality array holding NaN/±Inf (or values beyond float32's range).

    Integer arrays (8/16-bit images) cannot hold them and are not looked at; a float array costs one
    ``np.isfinite`` pass (values are checked as the float32 the model will see, so a float64 1e300
    counts too).

    Args:
        array: the file's decoded values.
        where: the file (or sample) named in the message.
        name: the modality named in the message.

    Raises:
        ValueError: ``{where}: modality '{name}' has N non-finite values (NaN/Inf) ...``.
    """
    if array.dtype.kind not in "fc":
        return
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: what we look for
        finite = np.isfinite(array.astype(np.float32, copy=False) if array.dtype.kind == "f" else array)
    if finite.all():
        return
    bad = int(finite.size - np.count_nonzero(finite))
    raise ValueError(
        f"{where}: modality '{name}' has {bad} non-finite value(s) (NaN/Inf) among {finite.size}; "
        "inputs must be finite -- fix or regenerate the file, or leave the sample out"
    )


def read_image(path: PathLike, *, as_label: bool = False) -> np.ndarray:
    """Read any supported file into a numpy array, choosing the decoder by extension.

    ``.png`` → :func:`read_png`; ``.jpg/.jpeg/.bmp/.tif/.tiff`` → Pillow; ``.npz``/``.npy`` →
    :func:`read_array`. Channels are in the file's order (RGB for images).

    Args:
        path: the file.
        as_label: keep palette indices for palette images.

    Returns:
        H×W or H×W×C array.

    Raises:
        FileNotFoundError: missing file.
        ValueError: unsupported extension, unreadable or truncated file.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".png":
        return read_png(path, as_label=as_label)
    if ext in IMAGE_EXTENSIONS:
        return _read_with_pillow(_require_file(path), as_label=as_label)
    if ext in ARRAY_EXTENSIONS:
        return read_array(path)
    raise ValueError(
        f"{path}: unsupported file extension {ext!r}; expected one of "
        f"{', '.join(IMAGE_EXTENSIONS + ARRAY_EXTENSIONS)}"
    )


def to_three_channels(array: np.ndarray, where: str) -> np.ndarray:
    """H×W×3 view of an image array: gray repeated, gray+alpha → gray repeated, RGBA → RGB (SPEC §1).

    Args:
        array: H×W, H×W×1, H×W×2, H×W×3 or H×W×4.
        where: name for error messages.

    Raises:
        ValueError: any other shape.
    """
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(
            f"{where}: expected an H×W image with 1, 2, 3 or 4 channels (channels last), "
            f"got an array of shape {tuple(np.shape(array))}"
        )
    if a.shape[2] in (1, 2):
        return np.repeat(a[..., :1], 3, axis=2)
    return a[..., :3]


def to_chw_tensor(array: np.ndarray) -> torch.Tensor:
    """H×W×3 numpy array → contiguous 3×H×W tensor (same dtype; uint16 becomes int32)."""
    if array.dtype == np.uint16:
        array = array.astype(np.int32)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, 2, 0)))
