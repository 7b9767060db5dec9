"""The package's layering (issue 12 item 4), checked on the source: the models never import the
experiment config, the machinery never imports the applications, and nothing imports the CLI."""

from __future__ import annotations

import ast
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
