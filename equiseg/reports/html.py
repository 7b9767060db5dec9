"""``report.html``: one self-contained HTML file per report.

A :class:`Report` is a list of blocks -- headings, paragraphs, lists, tables, figures -- rendered with
plain f-strings and :func:`html.escape` (no template engine). Figures are embedded as base64 ``data:``
URIs, so the file can be mailed or archived alone; every figure enlarges on click with a CSS-only
toggle (a hidden checkbox and its label), so the page carries no script.

The reports are written as Markdown first (``report.md`` stays the primary, diffable artefact), and
:meth:`Report.markdown` reads the small Markdown subset those writers produce -- ``#`` headings, pipe
tables with an alignment row, ``![alt](file)`` figures on a line of their own, ``-`` lists, paragraphs,
inline ``**bold**``, ``*italic*``, `` `code` `` and ``[text](link)`` -- into the same blocks, so the two
files hold the same text and the same numbers::

    from equiseg.reports.html import write_html
    write_html(md_text, out / "report.html")        # images resolved relative to out/
"""

from __future__ import annotations

import base64
import html
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from equiseg.utils import write_atomic

__all__ = ["Report", "inline", "write_html"]

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
_IMAGE_LINE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)\s*$")
_HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<text>.*?)\s*#*\s*$")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_LINK = re.compile(r"\[(?P<text>[^\]]+)\]\((?P<href>[^)\s]+)\)")
_BOLD = re.compile(r"\*\*(?P<text>.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?P<text>[^*\s][^*]*?)\*(?![\w*])")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):", re.IGNORECASE)

CSS = """
:root { --fg: #1d1d1f; --muted: #5f6368; --rule: #d9d9de; --stripe: #f5f6f8; --accent: #0072B2; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 1.5rem 1.5rem 4rem; }
h1 { font-size: 1.7rem; margin: 0.4rem 0 1rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 0.6rem; padding-bottom: 0.2rem; border-bottom: 1px solid var(--rule); }
h3 { font-size: 1.1rem; margin: 1.6rem 0 0.5rem; }
h4, h5, h6 { font-size: 1rem; margin: 1.2rem 0 0.4rem; }
p, ul { margin: 0.5rem 0 0.9rem; }
a { color: var(--accent); }
code { font: 0.88em/1.3 ui-monospace, "DejaVu Sans Mono", monospace; background: var(--stripe);
       padding: 0.05em 0.3em; border-radius: 3px; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; margin: 0.6rem 0 1.2rem; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { padding: 0.3rem 0.65rem; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { border-bottom: 2px solid var(--fg); white-space: nowrap; }
tbody tr:nth-child(even) { background: var(--stripe); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.mid, th.mid { text-align: center; }
figure { margin: 1rem 0 1.6rem; }
figure img { display: block; max-width: 100%; max-height: 85vh; width: auto; height: auto;
             border: 1px solid var(--rule); }
figcaption { color: var(--muted); font-size: 0.88rem; margin-top: 0.3rem; }
.missing { color: #b00020; }
/* click to enlarge, no script: the label toggles the hidden checkbox before it */
.zoom { position: absolute; opacity: 0; pointer-events: none; }
.zoom + label { display: block; cursor: zoom-in; }
.zoom:checked + label { position: fixed; inset: 0; z-index: 10; margin: 0; padding: 2rem; overflow: auto;
                        background: rgba(18, 18, 20, 0.92); cursor: zoom-out; }
.zoom:checked + label img { max-width: none; max-height: none; margin: 0 auto; background: #fff; }
.zoom:focus-visible + label img { outline: 3px solid var(--accent); }
footer { color: var(--muted); font-size: 0.8rem; margin-top: 3rem; }
"""


def inline(text: str) -> str:
    """Escape ``text`` and render its inline Markdown: `` `code` ``, ``**bold**``, ``*italic*`` and
    ``[text](link)`` (links to ``javascript:`` and other schemes stay text)."""
    codes: list[str] = []

    def stash(m: re.Match) -> str:
        codes.append(f"<code>{html.escape(m[1])}</code>")
        return f"\x00{len(codes) - 1}\x00"

    s = html.escape(re.sub(r"`([^`]*)`", stash, text.replace("\x00", "")), quote=False)
    s = _BOLD.sub(lambda m: f"<strong>{m['text']}</strong>", s)
    s = _ITALIC.sub(lambda m: f"<em>{m['text']}</em>", s)
    s = _LINK.sub(_link, s)
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m[1])], s)


def _link(m: re.Match) -> str:
    href = html.unescape(m["href"])
    scheme = _SCHEME.match(href)
    if scheme and scheme[1].lower() not in ("http", "https"):
        return m[0]  # javascript:, data: ...: left as text
    return f'<a href="{html.escape(href)}">{m["text"]}</a>'


def _split_row(line: str) -> list[str]:
    """The cells of a pipe-table row (``\\|`` is a literal pipe; pipes inside `code` do not split)."""
    s = line.strip()
    s = s[1:] if s.startswith("|") else s
    s = s[:-1] if s.endswith("|") and not s.endswith("\\|") else s
    cells, cur, in_code, i = [], [], False, 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] == "|":
            cur.append("|")
            i += 2
            continue
        if c == "`":
            in_code = not in_code
        if c == "|" and not in_code:
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    cells.append("".join(cur).strip())
    return cells


def _align(rule: str) -> str:
    r = rule.strip()
    if r.startswith(":") and r.endswith(":"):
        return "mid"
    return "num" if r.endswith(":") else ""


class Report:
    """An HTML report, built block by block.

    Args:
        title: The page title (and, unless a heading is added first, nothing else: add
            ``heading(title, 1)`` for a visible one; :meth:`markdown` does with its ``# `` line).
        base_dir: Where relative figure paths are resolved (the report's folder).
        embed: Embed figures as ``data:`` URIs (default; the file is self-contained). False: link them
            by their relative path (the folder must travel with the file).
    """

    def __init__(self, title: str, *, base_dir: str | Path = ".", embed: bool = True) -> None:
        self.title = title
        self.base_dir = Path(base_dir)
        self.embed = embed
        self._blocks: list[str] = []
        self._figures = 0

    # ---------------------------------------------------------------- blocks

    def heading(self, text: str, level: int = 2) -> Report:
        level = min(max(int(level), 1), 6)
        self._blocks.append(f"<h{level}>{inline(text)}</h{level}>")
        return self

    def paragraph(self, text: str) -> Report:
        """A paragraph; ``text`` may hold inline Markdown (see :func:`inline`)."""
        self._blocks.append(f"<p>{inline(text)}</p>")
        return self

    def bullets(self, items: Sequence[str]) -> Report:
        self._blocks.append("<ul>" + "".join(f"<li>{inline(t)}</li>" for t in items) + "</ul>")
        return self

    def table(
        self,
        header: Sequence[str],
        rows: Sequence[Sequence[object]],
        *,
        align: Sequence[str] | None = None,
        caption: str | None = None,
    ) -> Report:
        """A table; cells are text with inline Markdown (numbers are formatted with ``str``).

        Args:
            align: Per column ``""`` (left), ``"num"`` (right, tabular digits) or ``"mid"`` (centred).
        """
        n = len(header)
        align = list(align or [""] * n) + [""] * n

        def cls(j: int) -> str:
            return f' class="{align[j]}"' if align[j] else ""

        head = "".join(f"<th{cls(j)}>{inline(str(h))}</th>" for j, h in enumerate(header))
        body = []
        for row in rows:
            cells = list(row) + [""] * (n - len(row))
            body.append(
                "<tr>" + "".join(f"<td{cls(j)}>{inline(str(c))}</td>" for j, c in enumerate(cells)) + "</tr>"
            )
        cap = f"<caption>{inline(caption)}</caption>" if caption else ""
        self._blocks.append(
            f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>"
        )
        return self

    def figure(self, src: str | Path, caption: str = "", *, alt: str | None = None) -> Report:
        """A figure from an image file (relative paths from ``base_dir``), enlarged on click."""
        path = Path(src)
        full = path if path.is_absolute() else self.base_dir / path
        alt_text = html.escape(alt if alt is not None else caption or path.stem)
        if not full.is_file():
            warnings.warn(f"report figure {full} does not exist", stacklevel=2)
            self._blocks.append(
                f'<p class="missing">Figure not found: <code>{html.escape(str(src))}</code></p>'
            )
            return self
        if self.embed:
            mime = _MIME.get(full.suffix.lower(), "application/octet-stream")
            url = f"data:{mime};base64,{base64.b64encode(full.read_bytes()).decode('ascii')}"
        else:
            url = html.escape(path.as_posix() if not path.is_absolute() else full.as_uri())
        self._figures += 1
        fid = f"fig-{self._figures}"
        cap = f'<figcaption>{inline(caption)} <span class="hint">(click to enlarge)</span></figcaption>'
        self._blocks.append(
            f'<figure><input type="checkbox" class="zoom" id="{fid}" aria-label="enlarge figure">'
            f'<label for="{fid}" title="click to enlarge / shrink"><img src="{url}" alt="{alt_text}"></label>'
            f"{cap}</figure>"
        )
        return self

    def raw(self, markup: str) -> Report:
        """Append ``markup`` as it is (trusted HTML only)."""
        self._blocks.append(markup)
        return self

    # ---------------------------------------------------------------- Markdown

    def markdown(self, text: str) -> Report:
        """Append the blocks of a Markdown text (the subset described in the module docstring)."""
        lines = text.splitlines()
        i, para = 0, []

        def flush() -> None:
            if para:
                self.paragraph(" ".join(s.strip() for s in para))
                para.clear()

        while i < len(lines):
            line = lines[i]
            stripped = line.strip()
            if not stripped:
                flush()
                i += 1
                continue
            if m := _HEADING.match(stripped):
                flush()
                self.heading(m["text"], len(m["hashes"]))
                i += 1
                continue
            if m := _IMAGE_LINE.match(stripped):
                flush()
                self.figure(m["src"], m["alt"], alt=m["alt"])
                i += 1
                continue
            if stripped.startswith("|") and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1].strip()):
                flush()
                header = _split_row(stripped)
                align = [_align(r) for r in _split_row(lines[i + 1])]
                i += 2
                rows = []
                while i < len(lines) and lines[i].strip().startswith("|"):
                    rows.append(_split_row(lines[i]))
                    i += 1
                self.table(header, rows, align=align)
                continue
            if stripped.startswith(("- ", "* ")):
                flush()
                items = []
                while i < len(lines) and lines[i].strip().startswith(("- ", "* ")):
                    items.append(lines[i].strip()[2:])
                    i += 1
                self.bullets(items)
                continue
            para.append(line)
            i += 1
        flush()
        return self

    # ---------------------------------------------------------------- output

    def html(self) -> str:
        body = "\n".join(self._blocks)
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            '<meta name="generator" content="equiseg">\n'
            f"<title>{html.escape(self.title)}</title>\n<style>{CSS}</style>\n</head>\n"
            f"<body>\n<main>\n{body}\n<footer>Written by equiseg. Figures are embedded; click one to "
            "enlarge it.</footer>\n</main>\n</body>\n</html>\n"
        )

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(path, self.html())  # whole or not at all (a full disk leaves no partial page)


def write_html(
    markdown: str,
    path: str | Path,
    *,
    title: str | None = None,
    base_dir: str | Path | None = None,
    embed: bool = True,
) -> Path:
    """Render a Markdown report as the self-contained ``path`` (usually ``report.html``).

    Args:
        markdown: The report's Markdown (what ``report.md`` holds).
        title: The page title (default: the text of the first ``# `` heading).
        base_dir: Where the Markdown's relative image paths are resolved (default: ``path``'s folder).
        embed: See :class:`Report`.
    """
    path = Path(path)
    if title is None:
        first = next((ln for ln in markdown.splitlines() if ln.startswith("# ")), "# Report")
        title = re.sub(r"[*`]", "", first[2:]).strip()
    report = Report(title, base_dir=base_dir if base_dir is not None else path.parent, embed=embed)
    return report.markdown(markdown).write(path)
