"""Reading and writing the files of the supported data sets: PNG (8/16-bit), JPEG, ``.npz``, ``.npy``.

docs/design.md §4.1 (DeLiVER: 8-bit PNGs, RGBA and 1-channel images) and §4.2 (MUSES: the SDK's projected
lidar/radar/event images as ``.npz``/``.npy`` float arrays or as PNGs written by OpenCV, i.e. with the
colour channels stored in B, G, R order and lidar/radar as uint16).

Which library decodes what, and why:

* PNG (gray, gray+alpha, RGB, RGBA at 8 or 16 bits) and JPEG: OpenCV (``cv2.imdecode``, all channels
  and bits kept). It keeps 16-bit colour exactly (Pillow has no 48/64-bit mode and would cut those
  files to 8 bits), it reads the MUSES SDK's files exactly as ``cv2.imwrite`` wrote them, and it is
  the faster decoder. The arrays returned are those of the hand-written decoder and the Pillow
  readers it replaced, byte for byte (``tests/test_data_io_fixtures.py``): channels in the file's
  order (RGB[A]) unless a function says ``bgr``, gray as H×W, gray+alpha as two channels, and a
  ``tRNS`` chunk adds no alpha channel.
* Palette PNGs and PNGs below 8 bits, BMP and TIFF: Pillow. OpenCV expands palette images to their
  colours, while a palette *label* must give its indices (``as_label=True``); BMP/TIFF can be palette
  files too, and no supported data set uses them, so their speed does not matter.

:func:`write_png16` / :func:`read_png16` are the matching pair for 16-bit files (``bgr=True`` is what
``cv2.imwrite`` / ``cv2.imread(..., IMREAD_UNCHANGED)`` do); :func:`encode_png` / :func:`decode_png`
work on bytes. OpenCV writes gray, RGB and RGBA PNGs only (no gray+alpha).

Threads: importing this module makes OpenCV single-threaded (``cv2.setNumThreads(0)``: no thread
pool) in the process, as detectron2, mmcv and YOLOv5 do. The data loader's workers are the
parallelism (torch likewise runs one thread in each), and OpenCV's pool does not survive ``fork``:
a DataLoader worker forked while the parent's pool exists can hang in its first OpenCV call that
touches the pool (seen here: ``cv2.setNumThreads`` in a worker waiting forever in
``pthread_cond_destroy``). Code that wants OpenCV threads in the main process may call
``cv2.setNumThreads`` after importing equiseg, at the price of that hazard with forked workers.

Memory: large outputs (:func:`to_chw_tensor` here, the transforms' tensors) come from
:func:`empty_array`, which recycles the memory of dropped outputs instead of asking the kernel for
fresh, zero-filled pages each time (see :class:`_BufferPool`).

Size: an image (or array) larger than :func:`max_image_pixels` pixels -- 2**26 (8192²) unless the
environment variable ``EQUISEG_MAX_IMAGE_PIXELS`` says otherwise -- is refused from its header, before
it is decoded: a 74-byte PNG may declare 100000² pixels, and a valid 388 KB one of 20000² pixels
decodes to 1.2 GB (and more as float). The error names the file, its size and the variable.

Errors: a missing file raises :class:`FileNotFoundError`; an unreadable, truncated or malformed file
raises :class:`ValueError`; both name the path and what was expected. PNGs must end in IEND (else a
chunk walk says where they end; bytes after IEND are allowed), the chunk CRCs are checked by OpenCV's
libpng and, when it refuses a file, by that walk to say which chunk is bad — a look at the raw
bytes, not a decoder. JPEGs must have an end-of-image marker after their last scan (older OpenCV
releases decode a truncated JPEG with a grey bottom instead of failing). :func:`check_finite` is the
one NaN/Inf check every modality decoder (the data set loaders, ``predict``) runs on float arrays,
so a corrupt ``.npz`` is an error naming the file in training, evaluation, the benchmark and
prediction rather than a NaN loss or a silently wrong mIoU.
"""

from __future__ import annotations

import collections
import ctypes
import io
import math
import os
import struct
import weakref
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from equiseg.utils import DEFAULT_CHANNELS, bounded_repr

__all__ = [
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

PathLike = str | os.PathLike

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_PIXELS_ENV = "EQUISEG_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 1 << 26  # 8192²: far above every supported data set (MUSES: 1920×1080)
ARRAY_EXTENSIONS = (".npz", ".npy")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xae\x42\x60\x82"  # the whole (empty) IEND chunk, CRC included
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (palette type 3 excluded)
_PNG_PALETTE = 3
_JPEG_SOI, _JPEG_SOS, _JPEG_EOI = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"
_ENCODABLE_CHANNELS = (1, 3, 4)  # what OpenCV's PNG encoder writes (no gray+alpha)

# An RGB PNG decoded straight to R, G, B order (libpng swaps while unpacking rows: no extra pass), any
# depth. Releases without IMREAD_COLOR_RGB (before 4.11) decode to B, G, R and the channels are swapped
# afterwards; the tests run both ways.
_IMREAD_RGB = (
    cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR | cv2.IMREAD_COLOR_RGB
    if hasattr(cv2, "IMREAD_COLOR_RGB")
    else None
)

# Single-threaded OpenCV in this process (see the module docstring: fork-safety with DataLoader workers).
cv2.setNumThreads(0)


class _BufferPool:
    """Recycles the memory of large arrays handed out by :func:`empty_array` once nothing uses them.

    Why: memory fresh from the kernel is zero-filled page by page when first written, and a DeLiVER
    sample at 1024² allocates ~80 MB of outputs (decoded planes, 12 float32 planes, the label), and on
    one 2-core machine that zero-filling was a large share of the training transform's time
    (docs/results/benchmarks/code_notes.md). Like
    torch's caching allocator on the GPU, a block whose last user is gone is kept here and handed out
    again for the next request of the same number of bytes. Small requests bypass the pool. Kept: at
    most ``per_key`` blocks per size and ``max_bytes`` in all, the least recently returned sizes
    dropped first — outputs of a training run have a few fixed sizes, so their blocks cycle.

    Lifetime: a block (a uint8 array owning the memory) is exposed through a ``ctypes`` view of it,
    and the array handed out is ``np.frombuffer`` of that view. NumPy stops collapsing the ``base``
    chain of views at a non-array object, so every numpy view of the result, and every tensor from
    ``torch.from_numpy`` on it or its views, keeps the ``ctypes`` object alive; a ``weakref.finalize``
    on it returns the block only when all of them are gone. (A plain ``ndarray.view()`` would not do:
    views of views point straight at the owner.)

    No lock: single dict and deque operations are atomic in CPython, and a finalizer may run inside
    any allocation, where waiting for a lock could deadlock; the byte count is approximate under
    threads. Cleared in a forked child (DataLoader worker).
    """

    def __init__(self, min_bytes: int = 1 << 20, per_key: int = 2, max_bytes: int = 256 << 20):
        self.min_bytes, self.per_key, self.max_bytes = min_bytes, per_key, max_bytes
        self._free: dict[int, collections.deque] = {}  # nbytes -> free blocks, least recent first
        self._held = 0

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        shape = tuple(int(s) for s in shape)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.min_bytes:
            return np.empty(shape, dtype)
        block = None
        free = self._free.get(nbytes)
        if free:
            try:
                block = free.pop()
                self._held -= nbytes
            except IndexError:  # emptied by another thread in between
                pass
        if block is None:
            block = np.empty(nbytes, np.uint8)  # numpy asks for transparent huge pages here
        holder = (ctypes.c_char * nbytes).from_buffer(block)
        finalizer = weakref.finalize(holder, self._give_back, nbytes, block)
        finalizer.atexit = False
        return np.frombuffer(holder, dtype).reshape(shape)

    def _give_back(self, nbytes: int, block: np.ndarray) -> None:
        if nbytes > self.max_bytes:
            return
        free = self._free.pop(nbytes, None)  # re-inserted below: most recently returned last
        free = collections.deque() if free is None else free
        self._free[nbytes] = free
        if len(free) >= self.per_key:
            return
        while self._held + nbytes > self.max_bytes and len(self._free) > 1:
            oldest = next(iter(self._free))
            self._held -= oldest * len(self._free.pop(oldest, ()))
        free.append(block)
        self._held += nbytes

    def clear(self) -> None:
        self._free, self._held = {}, 0


_POOL = _BufferPool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.clear)


def empty_array(shape: tuple[int, ...], dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` for outputs: large ones reuse the memory of dropped ones (no zero-fill).

    The contents are arbitrary, as with ``np.empty``; the array is C-contiguous, writable and
    aligned. See :class:`_BufferPool` for why, and why memory is never reused while in use. Wrap it
    with ``torch.from_numpy`` for a tensor.
    """
    return _POOL.empty(shape, dtype)


def max_image_pixels() -> int:
    """The largest image (height × width) the readers decode: ``EQUISEG_MAX_IMAGE_PIXELS`` when set,
    else :data:`DEFAULT_MAX_PIXELS`. Read at each call, so the variable may change in a session.

    Raises:
        ValueError: the variable is set to something other than an integer >= 1.
    """
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV}: expected an integer >= 1 (pixels), got {bounded_repr(raw)}")
    return value


def check_image_size(height: int, width: int, where: str) -> None:
    """Refuse an image whose header declares more than :func:`max_image_pixels` pixels.

    Called with the header's size before any decoding, so neither the decoder's own limits (OpenCV
    fails with an internal error above 2**30 pixels) nor the memory of the decoded array are reached.

    Raises:
        ValueError: ``{where}: the file declares 20000×20000 = 400,000,000 pixels, more than the limit
            of 67,108,864 (EQUISEG_MAX_IMAGE_PIXELS) ...``.
    """
    limit = max_image_pixels()
    pixels = int(height) * int(width)
    if pixels > limit:
        raise ValueError(
            f"{where}: the file declares {height}×{width} = {pixels:,} pixels, more than the limit of "
            f"{limit:,}; set the environment variable {MAX_PIXELS_ENV} higher to read it"
        )


def _require_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        what = "is a directory, expected a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{path} {what}")
    return path


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read the file ({e})") from None


# --------------------------------------------------------------------------------------------- PNG


def _png_header(data: bytes, where: str) -> tuple[int, int, int, int]:
    """``(width, height, bit_depth, color_type)`` from a PNG's IHDR chunk."""
    if data[:8] != _PNG_SIGNATURE:
        raise ValueError(f"{where}: not a PNG file (bad signature)")
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ValueError(f"{where}: truncated or malformed PNG (no IHDR chunk)")
    width, height, depth, ctype = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, ctype


def _png_structure_error(data: bytes, where: str) -> str | None:
    """What is wrong with a PNG's chunk structure (truncation, CRC mismatch, no IEND), or None.

    A walk over the chunk headers plus one ``zlib.crc32`` per chunk: not a decoder. Bytes after IEND
    are allowed (as libpng does).
    """
    pos = 8
    while True:
        if pos + 12 > len(data):
            return f"{where}: truncated PNG (ends at byte {len(data)} before the IEND chunk)"
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return f"{where}: truncated PNG (chunk {ctype!r} needs {length} bytes)"
        (crc,) = struct.unpack(">I", data[pos + 8 + length : end])
        if zlib.crc32(data[pos + 4 : pos + 8 + length]) != crc:
            return f"{where}: corrupt PNG (CRC mismatch in chunk {ctype!r})"
        if ctype == b"IEND":
            return None
        pos = end


def _check_png(data: bytes, where: str) -> tuple[int, int, int, int]:
    """Header of a PNG whose bytes are complete (end in IEND, or pass the chunk walk) and whose size is
    within :func:`max_image_pixels`."""
    header = _png_header(data, where)
    check_image_size(header[1], header[0], where)
    if not data.endswith(_PNG_IEND):  # the common case costs one comparison of 12 bytes
        problem = _png_structure_error(data, where)
        if problem:
            raise ValueError(problem)
    return header


def _imdecode(data: bytes, where: str, what: str, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """``cv2.imdecode(..., flags)``; with ``IMREAD_UNCHANGED`` channels in OpenCV's order (B, G, R[, A])."""
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as e:  # e.g. a size over OpenCV's own limit
        reason = " ".join(str(e).split())[-200:]
        raise ValueError(f"{where}: cannot decode {what} (OpenCV: {reason})") from None
    except MemoryError:
        raise ValueError(
            f"{where}: not enough memory to decode {what}; lower {MAX_PIXELS_ENV} to refuse such files early"
        ) from None
    if array is None:
        problem = _png_structure_error(data, where) if data[:8] == _PNG_SIGNATURE else None
        raise ValueError(
            problem or f"{where}: cannot decode {what}; the file is unreadable, truncated or corrupt"
        )
    return array


def _png_from_opencv(array: np.ndarray, ctype: int, bgr: bool) -> np.ndarray:
    """OpenCV's decoding of a PNG of colour type ``ctype`` as the file's channels (RGB[A], or B, G, R[, A]).

    OpenCV returns gray+alpha as BGRA (gray repeated) and adds an alpha channel for a ``tRNS`` chunk
    on an RGB file; both are undone so that the channels are the file's. Gray stays H×W.
    """
    channels = _PNG_CHANNELS.get(ctype, array.shape[2] if array.ndim == 3 else 1)
    if channels == 1:
        return array if array.ndim == 2 else np.ascontiguousarray(array[..., 0])
    if channels == 2:
        return np.ascontiguousarray(array[..., [0, 3]])
    if channels == 3 and array.shape[2] == 4:  # tRNS on RGB: drop the alpha OpenCV made
        return np.ascontiguousarray(array[..., :3]) if bgr else cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    if bgr:
        return array
    return cv2.cvtColor(array, cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGBA, dst=array)


def decode_png(data: bytes, where: str = "<bytes>") -> np.ndarray:
    """Decode a PNG file's bytes with OpenCV.

    Args:
        data: the whole file's bytes.
        where: name for error messages (the path).

    Returns:
        H×W×C array (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) in the file's channel order, uint8 or
        uint16 (native byte order). Palette files come out as their colours (OpenCV's expansion).

    Raises:
        ValueError: not a PNG, truncated, corrupt, or not decodable.
    """
    _, _, _, ctype = _check_png(data, where)
    out = _png_from_opencv(_imdecode(data, where, "PNG"), ctype, bgr=False)
    return out[..., None] if out.ndim == 2 else out


def _check_encodable(a: np.ndarray, who: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in _ENCODABLE_CHANNELS or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(
            f"{who}: expected an H×W or H×W×C array with C in 1, 3 or 4 (OpenCV writes no gray+alpha "
            f"PNG), got shape {a.shape}"
        )
    return a


def _imencode_png(a: np.ndarray, compress_level: int, who: str) -> bytes:
    """PNG bytes of an array in OpenCV's channel order (what ``cv2.imwrite`` would write)."""
    if not 0 <= compress_level <= 9:
        raise ValueError(f"{who}: compress_level must be in 0..9, got {compress_level}")
    ok, buf = cv2.imencode(
        ".png", np.ascontiguousarray(a), [cv2.IMWRITE_PNG_COMPRESSION, int(compress_level)]
    )
    if not ok:
        raise ValueError(f"{who}: OpenCV could not encode an array of shape {a.shape} and dtype {a.dtype}")
    return buf.tobytes()


def encode_png(array: np.ndarray, compress_level: int = 6) -> bytes:
    """Encode an 8- or 16-bit gray/RGB/RGBA array as PNG, with OpenCV.

    Args:
        array: H×W or H×W×C (C in 1, 3, 4), dtype uint8 or uint16, channels in file order (RGB[A]).
        compress_level: zlib level 0..9.

    Returns:
        The PNG file's bytes.
    """
    a = _check_encodable(array, "encode_png")
    if a.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png: expected dtype uint8 or uint16, got {a.dtype}")
    return _imencode_png(_swap_rb(a), compress_level, "encode_png")


def _swap_rb(a: np.ndarray) -> np.ndarray:
    """Reverse the first three channels (RGB <-> BGR), leaving alpha and gray images alone."""
    if a.ndim == 3 and a.shape[2] >= 3:
        order = [2, 1, 0] + list(range(3, a.shape[2]))
        return a[..., order]
    return a


def write_png16(path: PathLike, array: np.ndarray, bgr: bool = True, compress_level: int = 6) -> None:
    """Write a uint16 array as a 16-bit PNG: ``cv2.imwrite`` (with ``bgr=True``).

    Args:
        path: output file (parent folders are created).
        array: H×W or H×W×C uint16 array, C in 1, 3, 4.
        bgr: the array's channels are in OpenCV order, i.e. channel 0 is stored as the file's
            *blue* channel (the MUSES SDK's encoding, docs/design.md §4.2). ``False`` stores them as given.
        compress_level: zlib level 0..9.
    """
    a = np.asarray(array)
    if a.dtype != np.uint16:
        raise ValueError(f"write_png16({path}): expected a uint16 array, got {a.dtype}")
    a = _check_encodable(a, f"write_png16({path})")
    data = _imencode_png(a if bgr else _swap_rb(a), compress_level, f"write_png16({path})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)  # not cv2.imwrite: it cannot report why a write failed, nor take every path


def read_png16(path: PathLike, bgr: bool = True) -> np.ndarray:
    """Read a PNG keeping 16-bit colour exactly: ``cv2.imread(path, IMREAD_UNCHANGED)`` (with ``bgr=True``).

    Args:
        path: an 8- or 16-bit PNG.
        bgr: return channels in OpenCV order (file channel 0 = red becomes array channel 2).
            ``read_png16(p, bgr=b)`` returns what ``write_png16(p, a, bgr=b)`` wrote.

    Returns:
        H×W×C array, uint16 for 16-bit files and uint8 for 8-bit ones (gray+alpha as 2 channels).
    """
    path = _require_file(path)
    data = _read_bytes(path)
    _, _, _, ctype = _check_png(data, str(path))
    out = _png_from_opencv(_imdecode(data, str(path), "PNG"), ctype, bgr=bgr)
    return out[..., None] if out.ndim == 2 else out


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


def _read_jpeg(path: Path) -> np.ndarray:
    """JPEG with OpenCV (RGB or gray); truncation is refused (older OpenCV releases decode it half gray)."""
    data = _read_bytes(path)
    if data[:2] == _JPEG_SOI and data.rfind(_JPEG_EOI) < data.rfind(_JPEG_SOS):
        raise ValueError(f"{path}: truncated JPEG (no end-of-image marker after the last scan)")
    _check_pillow_size(io.BytesIO(data), str(path))  # the header alone
    array = _imdecode(data, str(path), "image")
    if array.ndim == 3 and array.shape[2] >= 3:
        code = cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
        array = cv2.cvtColor(array, code, dst=array)
    return array


def _check_pillow_size(source: Path | io.BytesIO, where: str) -> None:
    """:func:`check_image_size` on the size in an image's header, read by Pillow without decoding;
    files Pillow cannot open are left for the decoder to report."""
    try:
        with Image.open(source) as im:
            width, height = im.size
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours by default
        raise ValueError(
            f"{where}: the file declares more pixels than Pillow decodes (and more than the limit of "
            f"{max_image_pixels():,}, {MAX_PIXELS_ENV})"
        ) from None
    except (OSError, SyntaxError, ValueError):
        return
    finally:
        if isinstance(source, io.BytesIO):
            source.seek(0)
    check_image_size(height, width, where)


def _read_with_pillow(source: Path | io.BytesIO, where: str, *, as_label: bool) -> np.ndarray:
    _check_pillow_size(source, where)
    try:
        with Image.open(source) as im:
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
        raise ValueError(f"{where}: cannot decode image ({e}); the file is unreadable or truncated") from None


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
    numpy for the dtypes OpenCV has no type for (bool, int64, float16). The output's memory is
    recycled (:func:`empty_array`).
    """
    if array.dtype == np.uint16:
        array = array.astype(np.int32)
    if array.ndim == 3 and array.dtype in _SPLIT_DTYPES and 1 <= array.shape[2] <= 4 and array.size:
        out = torch.from_numpy(empty_array((array.shape[2], *array.shape[:2]), array.dtype))
        planes = list(out.numpy())
        written = cv2.split(array, planes)
        if all(np.may_share_memory(w, p) for w, p in zip(written, planes, strict=True)):
            return out
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, 2, 0)))
