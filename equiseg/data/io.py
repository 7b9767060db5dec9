"""Reading and writing the files of the supported data sets: PNG (8/16-bit), JPEG, ``.npz``, ``.npy``.

docs/design.md §4.1 (DeLiVER: 8-bit PNGs, RGBA and 1-channel images) and §4.2 (MUSES: the SDK's projected
lidar/radar/event images as ``.npz``/``.npy`` float arrays or as PNGs written by OpenCV, i.e. with the
colour channels stored in B, G, R order and lidar/radar as uint16).

This module picks the reader by file extension (:func:`read_image`), reads ``.npz``/``.npy`` arrays,
checks float values and lays decoded arrays out as tensors. Which library decodes what and why, the
pixel limit and the PNG/JPEG integrity checks are in :mod:`equiseg.data.image_codecs` (its names are
importable from here too).

Threads: importing this module makes OpenCV single-threaded (``cv2.setNumThreads(0)``: no thread
pool) in the process, as detectron2, mmcv and YOLOv5 do. The data loader's workers are the
parallelism (torch likewise runs one thread in each), and OpenCV's pool does not survive ``fork``:
a DataLoader worker forked while the parent's pool exists can hang in its first OpenCV call that
touches the pool (seen here: ``cv2.setNumThreads`` in a worker waiting forever in
``pthread_cond_destroy``). Code that wants OpenCV threads in the main process may call
``cv2.setNumThreads`` after importing equiseg, at the price of that hazard with forked workers.

Size: an image (or array) larger than :func:`max_image_pixels` pixels is refused from its header,
before it is decoded (``EQUISEG_MAX_IMAGE_PIXELS``; see :mod:`equiseg.data.image_codecs`).

Errors: a missing file raises :class:`FileNotFoundError`; an unreadable, truncated or malformed file
raises :class:`ValueError`; both name the path and what was expected. :func:`check_finite` is the
one NaN/Inf check every modality decoder (the data set loaders, ``predict``) runs on float arrays,
so a corrupt ``.npz`` is an error naming the file in training, evaluation, the benchmark and
prediction rather than a NaN loss or a silently wrong mIoU.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch

from equiseg.data.image_codecs import (
    _IMREAD_RGB,
    _PNG_PALETTE,
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_ENV,
    PathLike,
    _check_png,
    _imdecode,
    _png_from_opencv,
    _read_bytes,
    _read_jpeg,
    _read_with_pillow,
    _require_file,
    check_image_size,
    decode_png,
    encode_png,
    max_image_pixels,
    read_png16,
    write_png16,
)
from equiseg.utils import DEFAULT_CHANNELS

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "check_image_size",
    "max_image_pixels",
    "read_image",
    "read_png",
    "read_png16",
    "write_png16",
    "encode_png",
    "decode_png",
    "read_array",
    "check_finite",
    "to_three_channels",
    "to_channels",
    "to_chw_tensor",
    "IMAGE_EXTENSIONS",
    "ARRAY_EXTENSIONS",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ARRAY_EXTENSIONS = (".npz", ".npy")

# Single-threaded OpenCV in this process (see the module docstring: fork-safety with DataLoader workers).
cv2.setNumThreads(0)


def read_png(path: PathLike, *, as_label: bool = False) -> np.ndarray:
    """Read a PNG exactly: OpenCV for 8/16-bit gray/colour files, Pillow for palette and sub-8-bit ones.

    Args:
        path: PNG file.
        as_label: keep palette indices of palette files (labels) instead of expanding to RGB.

    Returns:
        H×W (gray, palette indices) or H×W×C array in the file's channel order (RGB[A]), dtype uint8
        or uint16 (16-bit files).
    """
    path = _require_file(path)
    data = _read_bytes(path)
    width, height, depth, ctype = _check_png(data, str(path))
    if ctype == _PNG_PALETTE or depth < 8:
        # Pillow: OpenCV would expand a palette to colours, and a palette label must give its indices.
        return _read_with_pillow(io.BytesIO(data), str(path), as_label=as_label)
    what = f"PNG ({width}×{height}, {depth}-bit)"
    if ctype == 2 and _IMREAD_RGB is not None:  # RGB (a tRNS chunk adds no alpha with these flags)
        return _imdecode(data, str(path), what, _IMREAD_RGB)
    return _png_from_opencv(_imdecode(data, str(path), what), ctype, bgr=False)


def _npy_shape(f) -> tuple[int, ...] | None:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)[0]
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(f)[0]
    return None


def _array_header_shape(path: Path) -> tuple[int, ...] | None:
    """The shape an ``.npy`` file (or an ``.npz``'s ``arr_0`` / only array) declares, read from its
    header without loading (or decompressing) the data; None when the header cannot be read (the
    loader then reports the problem)."""
    try:
        if path.suffix.lower() == ".npy":
            with open(path, "rb") as f:
                return _npy_shape(f)
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            name = "arr_0.npy" if "arr_0.npy" in names else names[0] if len(names) == 1 else None
            if name is None:
                return None
            with z.open(name) as f:
                return _npy_shape(f)
    except Exception:  # noqa: BLE001 -- any malformation is np.load's to report, with its message
        return None


def read_array(path: PathLike) -> np.ndarray:
    """Read a ``.npz`` (key ``arr_0``, or its only array) or ``.npy`` file.

    Raises:
        FileNotFoundError: missing file.
        ValueError: unreadable file, or an ``.npz`` without ``arr_0`` holding several arrays.
    """
    path = _require_file(path)
    shape = _array_header_shape(path)
    if shape is not None and len(shape) >= 2:
        check_image_size(shape[0], shape[1], str(path))
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

    ``.png`` → :func:`read_png`; ``.jpg/.jpeg`` → OpenCV; ``.bmp/.tif/.tiff`` → Pillow (palette
    files keep their indices for labels); ``.npz``/``.npy`` → :func:`read_array`. Channels are in the
    file's order (RGB for images).

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
    if ext in (".jpg", ".jpeg"):
        return _read_jpeg(_require_file(path))
    if ext in IMAGE_EXTENSIONS:
        return _read_with_pillow(_require_file(path), str(path), as_label=as_label)
    if ext in ARRAY_EXTENSIONS:
        return read_array(path)
    raise ValueError(
        f"{path}: unsupported file extension {ext!r}; expected one of "
        f"{', '.join(IMAGE_EXTENSIONS + ARRAY_EXTENSIONS)}"
    )


def to_three_channels(array: np.ndarray, where: str) -> np.ndarray:
    """H×W×3 view of an image array: gray repeated, gray+alpha → gray repeated, RGBA → RGB
    (docs/design.md §4.1).

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


def to_channels(array: np.ndarray, channels: int, where: str) -> np.ndarray:
    """H×W×C view of a decoded modality file for a modality of ``channels`` channels.

    3 channels (the default of every modality): :func:`to_three_channels` -- a gray image repeated, an
    alpha channel dropped, as the loaders always did. Any other count (``data.channels``, a spec's
    ``channels``): the file must hold exactly that many channels (an H×W image is one); nothing is
    repeated or cut, since a modality with its own stem takes its channels as they are.

    Raises:
        ValueError: the file's channel count differs, naming ``where`` and both counts.
    """
    if channels == DEFAULT_CHANNELS:
        return to_three_channels(array, where)
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(
            f"{where}: expected an H×W×{channels} array (channels last), got shape {tuple(np.shape(array))}"
        )
    if a.shape[2] != channels:
        raise ValueError(
            f"{where}: has {a.shape[2]} channel(s), but the modality takes {channels} (its data.channels "
            "entry); nothing is repeated or cut for a modality with its own channel count"
        )
    return a


_SPLIT_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64)


def to_chw_tensor(array: np.ndarray) -> torch.Tensor:
    """H×W×C numpy array → contiguous C×H×W tensor (same dtype; uint16 becomes int32).

    ``cv2.split`` into the planes of the output (one pass, about 4× faster than a numpy transpose);
    numpy for the dtypes OpenCV has no type for (bool, int64, float16).
    """
    if array.dtype == np.uint16:
        array = array.astype(np.int32)
    if array.ndim == 3 and array.dtype in _SPLIT_DTYPES and 1 <= array.shape[2] <= 4 and array.size:
        out = torch.from_numpy(np.empty((array.shape[2], *array.shape[:2]), array.dtype))
        planes = list(out.numpy())
        written = cv2.split(array, planes)
        if all(np.may_share_memory(w, p) for w, p in zip(written, planes, strict=True)):
            return out
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, 2, 0)))
