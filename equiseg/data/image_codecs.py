"""The image decoders and encoders behind :mod:`equiseg.data.io`: PNG (8/16-bit), JPEG, BMP/TIFF, and
the pixel limit every reader applies before decoding.

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

Size: an image (or array) larger than :func:`max_image_pixels` pixels -- 2**26 (8192²) unless the
environment variable ``EQUISEG_MAX_IMAGE_PIXELS`` says otherwise -- is refused from its header, before
it is decoded: a 74-byte PNG may declare 100000² pixels, and a valid 388 KB one of 20000² pixels
decodes to 1.2 GB (and more as float). The error names the file, its size and the variable.

Integrity: PNGs must end in IEND (else a chunk walk says where they end; bytes after IEND are
allowed), the chunk CRCs are checked by OpenCV's libpng and, when it refuses a file, by that walk to
say which chunk is bad — a look at the raw bytes, not a decoder. JPEGs must have an end-of-image
marker after their last scan (older OpenCV releases decode a truncated JPEG with a grey bottom
instead of failing). Errors name the path and what was expected.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from equiseg.utils import bounded_repr

__all__ = [
    "MAX_PIXELS_ENV",
    "DEFAULT_MAX_PIXELS",
    "check_image_size",
    "max_image_pixels",
    "decode_png",
    "encode_png",
    "read_png16",
    "write_png16",
]

PathLike = str | os.PathLike

MAX_PIXELS_ENV = "EQUISEG_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 1 << 26  # 8192²: far above every supported data set (MUSES: 1920×1080)

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
