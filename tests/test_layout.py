"""The package's layering, checked on the source: the models never import the experiment config, the
machinery never imports the applications, and nothing imports the CLI; and the documentation stands
alone (no reference to anything outside the repository)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import equiseg

ROOT = Path(equiseg.__file__).parent


def _imports(path: Path) -> set[str]:
    """Every module a file imports (absolute names; relative ones resolved against its package)."""
    tree = ast.parse(path.read_text())
    package = ".".join(("equiseg", *path.relative_to(ROOT).parent.parts))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                out.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                out.add(node.module)
    return out


def _offenders(folder: str, forbidden: tuple[str, ...]) -> dict[str, set[str]]:
    found = {}
    files = [ROOT / folder] if folder.endswith(".py") else sorted((ROOT / folder).rglob("*.py"))
    for path in files:
        bad = {m for m in _imports(path) if m.startswith(forbidden)}
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    return found


def test_no_import_cycle_between_the_config_and_the_models():
    # the model config lives with the models; the experiment config imports it, never the reverse
    assert _offenders("models", ("equiseg.config",)) == {}
    # schema.py and utils.py are the bottom layer: schema may use utils' stdlib-only helpers, nothing else
    assert _offenders("utils.py", ("equiseg",)) == {}
    assert {m for ms in _offenders("schema.py", ("equiseg.",)).values() for m in ms} <= {"equiseg.utils"}


def test_the_machinery_does_not_import_the_applications():
    for folder in ("engine", "models", "data", "robustness", "layers"):
        assert _offenders(folder, ("equiseg.tasks", "equiseg.cli")) == {}, folder
    assert _offenders("tasks", ("equiseg.cli",)) == {}


# --- the documentation stands alone --------------------------------------------------------------------
REPO = ROOT.parent
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".txt", ".toml"}
# Built from pieces so that this file does not match itself. Design decisions are cited as
# "docs/design.md §N" or by the paper's own section, equation and table numbers; a brief outside the
# repository and this project's tracker numbers mean nothing to a reader of a checkout (git history
# keeps the latter). Another project's tracker is named with its number ("StitchFusion's issues #3/#4").
OUTSIDE_REFERENCES = re.compile(r"\b{}\b|\b[Ii]ssues? \d".format("".join(("SP", "EC"))))


def test_code_tests_and_docs_cite_nothing_outside_the_repository():
    roots = [REPO / "equiseg", REPO / "tests", REPO / "benchmarks", REPO / "docs"]
    files = [REPO / "README.md", REPO / "pyproject.toml"]
    files += [p for r in roots for p in sorted(r.rglob("*")) if p.is_file() and p.suffix in TEXT_SUFFIXES]
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()[:100]}"
        for path in files
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE_REFERENCES.search(line)
    ]
    assert found == [], "\n".join(found)
    assert (REPO / "docs" / "design.md").is_file()
