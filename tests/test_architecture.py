"""The package's layers (docs/architecture.md): each sub-package imports only its own modules and
those of lower layers, at module level or inside functions, so no import circle can form."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "truthinmotion"

# Lower numbers are lower layers; packages of one number never import each other.
LAYERS = {
    "core": 0,
    "backends": 1, "execution": 1,
    "media": 2, "reports": 2,
    "data": 3,
    "faces": 4,
    "synth": 5,
    "features": 6,
    "models": 7,
    "training": 8, "inference": 8,
    "experiments": 9,
    "apps": 10,
}


def _imports(path: Path, package: Path = PACKAGE) -> set[str]:
    """The package's modules ``path`` imports, as dotted names relative to the package."""
    rel = path.relative_to(package).with_suffix("").parts
    here = list(rel[:-1]) if rel[-1] != "__init__" else list(rel[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
            mod = base + (node.module.split(".") if node.module else [])
            found.add(".".join(mod))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("truthinmotion."):
            found.add(node.module.split(".", 1)[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("truthinmotion.")}
    return found


def test_every_module_lives_in_a_layer():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert loose == [], f"modules outside the layers: {loose}"
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS), f"packages without a layer, or layers without a package: {packages ^ set(LAYERS)}"


def test_imports_go_down_the_layers():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) < 2:
            continue  # the package's lazy public API and __main__ sit above every layer
        own = rel.parts[0]
        for target in _imports(path):
            top = target.split(".")[0]
            if top == own or top == "":
                continue
            if top not in LAYERS or LAYERS[top] >= LAYERS[own]:
                wrong.append(f"{rel} imports {target} (layer {LAYERS.get(top)} from layer {LAYERS[own]})")
    assert wrong == [], "imports that climb or go sideways:\n" + "\n".join(sorted(wrong))


def test_the_checker_sees_an_upward_import(tmp_path):
    """The checker itself: a function-level import of a higher layer is found."""
    bad = tmp_path / "core" / "probe.py"
    bad.parent.mkdir()
    bad.write_text("def f():\n    from ..inference.verdict import Verdict\n")
    assert _imports(bad, tmp_path) == {"inference.verdict"}


def test_every_public_name_resolves():
    """The package's lazy public API: every name of ``__all__`` imports from where the map says."""
    import truthinmotion

    missing = []
    for name in truthinmotion.__all__:
        try:
            getattr(truthinmotion, name)
        except (AttributeError, ImportError) as err:
            missing.append(f"{name}: {err}")
    assert missing == []
