"""The house plan, checked on the code itself: the import layers, no cycles, one home per table,
a docstring for every module, and docs/design.md naming each one."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fer_lottery"


def _documented_layers() -> list[tuple[str, ...]]:
    """The layer table of docs/design.md "Layers", bottom first: each row's leading names are
    packages or top-level modules of fer_lottery (``__main__`` is the entry point)."""
    text = (ROOT / "docs" / "design.md").read_text()
    block = text.split("### Layers", 1)[1].split("```", 2)[1]
    rows = []
    for line in block.strip().splitlines():
        number, *words = line.split()
        names = []
        for word in words:
            if not (PACKAGE / word).is_dir() and not (PACKAGE / f"{word}.py").is_file():
                break
            names.append(f"fer_lottery.{word}")
        rows.append((int(number), tuple(names)))
    assert [n for n, _ in rows] == list(range(len(rows)))[::-1], "layers are numbered top down"
    return [names for _, names in sorted(rows)]


# Each package (or top-level module) may import from its own layer and the layers below it, and
# from nothing above: there are no exemptions. The table is the one docs/design.md draws.
LAYERS = _documented_layers()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """The fer_lottery modules a file imports, anywhere in it (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from pkg import sub`` imports the submodule when there is one.
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                for a in node.names
            ]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] == "fer_lottery" and n in MODULES)
    return found


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _layer(module: str) -> int:
    best = None
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    if module == "fer_lottery":
        return len(LAYERS) - 1  # the package's own __init__: nothing imports it
    assert best is not None, f'{module} belongs to no layer: add it to docs/design.md "Layers"'
    return best[0]


def test_every_import_runs_down_the_layers():
    upward = [
        f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
        for a, deps in GRAPH.items()
        for b in deps
        if _layer(b) > _layer(a)
    ]
    assert not upward, "\n".join(upward)


def test_the_module_imports_have_no_cycle():
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == 1:
                return path + [node, dep]
            if dep not in state:
                cycle = visit(dep, path + [node])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, " -> ".join(cycle)


def test_every_module_says_what_it_is_for():
    missing = [
        name for name, path in MODULES.items() if not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert not missing, f"modules without a docstring: {missing}"


def test_the_design_document_names_every_package_and_module():
    design = (ROOT / "docs" / "design.md").read_text()
    missing = []
    for name in MODULES:
        parts = name.split(".")[1:]
        if not parts or parts[-1] == "__main__":
            continue
        # A module is named by its path inside the package: core/paths.py, or `paths.py` in
        # its package's row; a package by its folder.
        candidates = ("/".join(parts) + ".py", "/".join(parts) + "/", f"{parts[-1]}.py")
        if (PACKAGE / "/".join(parts)).is_dir():
            candidates = ("/".join(parts) + "/",)
        if not any(c in design for c in candidates):
            missing.append(name)
    assert not missing, f"docs/design.md does not name: {missing}"


def test_every_pruning_criterion_is_one_module_with_a_registry_entry():
    from fer_lottery.config.schema import PruneMethod, choices
    from fer_lottery.core import criteria
    from fer_lottery.pruning.strategy import Strategy

    assert choices(PruneMethod) == ("none", *criteria.STRATEGIES)
    for name, entry in criteria.STRATEGIES.items():
        assert isinstance(criteria.get(name), Strategy), name
        assert entry.module in MODULES
    assert not criteria.prunes("none", 0.9) and criteria.prunes("distinctiveness", 0.0)
    assert criteria.prunes("magnitude", 0.5) and not criteria.prunes("random", 0.0)


@pytest.mark.parametrize("arch, groups", [("resnet18", 6), ("alexnet", 8)])
def test_each_choice_list_is_written_once(arch, groups):
    from fer_lottery.config.schema import Variant, choices
    from fer_lottery.models import build_model, layer_groups
    from fer_lottery.models.backbone import describe
    from fer_lottery.pruning.distinctiveness import RULES

    assert tuple(RULES) == choices(Variant)
    # The groups are found on the model, and the check reads the same ones.
    assert len(layer_groups(build_model(arch, None), arch)) == len(describe(arch).groups) == groups


def test_every_module_imports():
    for name in MODULES:
        if not name.endswith("__main__"):
            importlib.import_module(name)


def test_every_reference_to_the_design_document_names_a_section_that_exists():
    import re

    design = (ROOT / "docs" / "design.md").read_text()
    sections = {m.group(1).strip() for m in re.finditer(r"^#+ (.+)$", design, re.M)}
    anchors = {re.sub(r"[^a-z0-9 -]", "", s.lower()).replace(" ", "-") for s in sections}
    cited = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), ROOT / "README.md"]:
        text = path.read_text()
        cited += [(path.name, m.group(1)) for m in re.finditer(r'docs/design\.md "([^"]+)"', text)]
        cited += [
            (path.name, m.group(1)) for m in re.finditer(r"docs/design\.md#([a-z0-9-]+)", text)
        ]
    assert cited, "nothing cites docs/design.md"
    missing = [(f, s) for f, s in cited if s not in sections and s not in anchors]
    assert not missing, missing
