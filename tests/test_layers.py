"""The layers stay layers: pipeline > converters > quantization > the core of hrnet_edge.

Read from the source (every import statement, also those inside functions), so a lazy
import cannot slip a dependency past the rule.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = ("hrnet_edge.pipeline", "hrnet_edge.cli", "hrnet_edge.bench")  # orchestration, the command line, the benchmark


def layer_of(module: str) -> str:
    if module.startswith(TOP):
        return "pipeline"
    for name in ("converters", "quantization", "apps"):
        if module == name or module.startswith(name + "."):
            return name
    return "core"


# what each layer may import from the project
ALLOWED = {
    "pipeline": {"pipeline", "converters", "quantization", "core"},
    "converters": {"converters", "quantization", "core"},
    "quantization": {"quantization", "core"},
    "core": {"core"},
    "apps": {"apps"},
}
# converters take models, arrays and run paths; training and task internals stay out
FORBIDDEN_CORE_FOR_CONVERTERS = ("hrnet_edge.training", "hrnet_edge.tasks", "hrnet_edge.data")


def project_modules() -> dict[str, Path]:
    out = {}
    for pkg in ("hrnet_edge", "converters", "quantization", "apps"):
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def imports_of(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level or None]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


PROJECT = ("hrnet_edge", "converters", "quantization", "apps")


@pytest.mark.parametrize("module, path", sorted(project_modules().items()))
def test_imports_respect_the_layers(module, path):
    layer = layer_of(module)
    wrong = []
    for imp in sorted(imports_of(path, module)):
        if not imp.startswith(PROJECT) or imp.split(".")[0] not in PROJECT:
            continue
        if layer_of(imp) not in ALLOWED[layer]:
            wrong.append(f"{imp} ({layer_of(imp)})")
        elif layer == "converters" and imp.startswith(FORBIDDEN_CORE_FOR_CONVERTERS):
            wrong.append(f"{imp} (training/task internals)")
    assert not wrong, f"{module} ({layer} layer) imports {wrong}"


def test_the_rule_catches_a_violation():
    # the checker itself: a core module importing converters must be flagged
    assert layer_of("hrnet_edge.tasks.pose") == "core"
    assert "converters" not in ALLOWED[layer_of("hrnet_edge.training.loop")]
    assert layer_of("hrnet_edge.pipeline.stages") == "pipeline"
    assert layer_of("converters.check") == "converters"
