"""Minimal line and bar charts drawn with Pillow, so reports need no plotting library."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
_ASCII = {"λ": "lambda", "—": "-", "–": "-", "…": "...", "×": "x", "²": "^2", "%": "%"}


def _ascii(text: str) -> str:
    """Pillow's built-in font has ASCII glyphs only: spell the few others out."""
    for k, v in _ASCII.items():
        text = text.replace(k, v)
    return text.encode("ascii", "replace").decode()


def _legend(d: ImageDraw.ImageDraw, x: int, y: int, name: str, color: tuple[int, int, int]) -> None:
    d.rectangle([x, y + 2, x + 9, y + 10], fill=color)
    d.text((x + 14, y), _ascii(name), fill=color)


def _nice_range(lo: float, hi: float) -> tuple[float, float]:
    if hi <= lo:
        hi = lo + 1.0
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def line_chart(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    size: tuple[int, int] = (640, 360),
    logy: bool = False,
) -> Path:
    """One line per ``name -> (xs, ys)``; axes with min/max tick labels and a legend."""
    import math

    W, H = size
    L, R, T, B = 60, 20, 30, 40
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    f = (lambda v: math.log10(max(v, 1e-12))) if logy else (lambda v: v)
    xs_all = [x for xs, _ in series.values() for x in xs]
    ys_all = [f(y) for _, ys in series.values() for y in ys if y == y]
    if not xs_all or not ys_all:
        img.save(path)
        return Path(path)
    x0, x1 = min(xs_all), max(xs_all) if max(xs_all) > min(xs_all) else min(xs_all) + 1
    y0, y1 = _nice_range(min(ys_all), max(ys_all))
    px = lambda x: L + (x - x0) / (x1 - x0) * (W - L - R)  # noqa: E731
    py = lambda y: H - B - (y - y0) / (y1 - y0) * (H - T - B)  # noqa: E731
    d.rectangle([L, T, W - R, H - B], outline=(0, 0, 0))
    d.text((L, 8), _ascii(title), fill=(0, 0, 0))
    d.text((L, H - B + 6), f"{x0:g}", fill=(0, 0, 0))
    d.text((W - R - 40, H - B + 6), f"{x1:g}", fill=(0, 0, 0))
    d.text(((W - len(xlabel) * 6) // 2, H - 16), _ascii(xlabel), fill=(0, 0, 0))
    fmt = (lambda v: f"{10**v:.3g}") if logy else (lambda v: f"{v:.3g}")
    d.text((4, T), fmt(y1), fill=(0, 0, 0))
    d.text((4, H - B - 12), fmt(y0), fill=(0, 0, 0))
    d.text((4, (T + H - B) // 2), _ascii(ylabel)[:9], fill=(0, 0, 0))
    for k, (name, (xs, ys)) in enumerate(series.items()):
        c = COLORS[k % len(COLORS)]
        pts = [(px(x), py(f(y))) for x, y in zip(xs, ys) if y == y]
        if len(pts) > 1:
            d.line(pts, fill=c, width=2)
        for p in pts if len(pts) < 30 else []:
            d.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=c)
        _legend(d, W - R - 170, T + 6 + 14 * k, name, c)
    img.save(path)
    return Path(path)


def bar_chart(
    groups: Sequence[str],
    series: dict[str, Sequence[float]],
    path: str | Path,
    *,
    title: str = "",
    ylabel: str = "",
    ymax: float | None = None,
    size: tuple[int, int] | None = None,
) -> Path:
    """Grouped bars: one group per label in ``groups``, one bar per series; values printed on bars."""
    n_g, n_s = len(groups), max(len(series), 1)
    W = size[0] if size else max(480, 70 + n_g * (18 * n_s + 24))
    H = size[1] if size else 380
    L, R, T, B = 50, 20, 40, 80
    img = Image.new("RGB", (W, H), (255, 255, 255))
    d = ImageDraw.Draw(img)
    vals = [v for vs in series.values() for v in vs if v == v]
    top = ymax if ymax is not None else (max(vals) * 1.1 if vals else 1.0) or 1.0
    d.text((L, 8), _ascii(title), fill=(0, 0, 0))
    d.line([L, H - B, W - R, H - B], fill=(0, 0, 0))
    d.line([L, T, L, H - B], fill=(0, 0, 0))
    d.text((4, T - 6), f"{top:.3g}", fill=(0, 0, 0))
    d.text((4, H - B - 6), "0", fill=(0, 0, 0))
    d.text((4, T + 14), _ascii(ylabel)[:8], fill=(0, 0, 0))
    gw = (W - L - R) / max(n_g, 1)
    bw = max(4, (gw - 10) / n_s)
    for gi, g in enumerate(groups):
        gx = L + gi * gw + 5
        for si, (_name, vs) in enumerate(series.items()):
            v = vs[gi]
            if v != v:
                continue
            h = (H - B - T) * max(0.0, min(v, top)) / top
            x = gx + si * bw
            d.rectangle([x, H - B - h, x + bw - 2, H - B], fill=COLORS[si % len(COLORS)])
            if bw >= 14:
                d.text((x, H - B - h - 12), f"{v:.0f}", fill=(0, 0, 0))
        label = _ascii(g if len(g) <= 14 else g[:12] + "..")
        d.text((gx, H - B + 6 + (gi % 2) * 14), label, fill=(0, 0, 0))
    for si, name in enumerate(series):
        _legend(d, W - R - 170, T + 14 * si, name, COLORS[si % len(COLORS)])
    img.save(path)
    return Path(path)
