"""The layering ARCHITECTURE.md promises: light modules never load TensorFlow, and no module imports in a circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mura_core"
MODEL_MODULES = {"registry", "preprocessing", "pipeline", "gradcam", "ensemble", "sanity", "backend", "cam_backends",
                 "onnx_export", "efficientnet_lite"}
ENTRY_MODULES = {"__main__"}


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        names.append(".".join(parts))
    return [n for n in names if n]


def test_light_modules_never_load_tensorflow():
    light = [m for m in _modules() if m.split(".")[0] not in MODEL_MODULES | ENTRY_MODULES]
    assert {"charts", "localization", "heatmaps", "results", "coverage", "imaging", "cli"} <= set(light)
    script = "\n".join([
        "import importlib, sys",
        "for name in sys.argv[1:]:",
        "    importlib.import_module('mura_core.' + name)",
        "    if 'tensorflow' in sys.modules or 'keras' in sys.modules:",
        "        print('TF after', name); sys.exit(1)",
    ])
    proc = subprocess.run([sys.executable, "-c", script, *light], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def _imports(module: str) -> set[str]:
    """mura_core modules that `module` imports anywhere in its file (also inside functions)."""
    path = PACKAGE / (module.replace(".", "/") + ".py")
    if not path.is_file():
        path = PACKAGE / module.replace(".", "/") / "__init__.py"
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1] if node.level > 1 else package
            target = ".".join([*base, node.module] if node.module else base)
            names = [f"{target}.{a.name}" if target else a.name for a in node.names]
            found |= {n for n in [target, *names] if n in MODULES}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            full = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found |= {n.removeprefix("mura_core.") for n in full if n.startswith("mura_core.")
                      and n.removeprefix("mura_core.") in MODULES}
    found.discard(module)
    return found


MODULES = set(_modules())


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """Import cycles found by a depth-first search (a package's `__init__` importing its own parts aside)."""
    state, cycles = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_module_imports_in_a_circle():
    graph = {m: _imports(m) for m in MODULES}
    assert "gradcam" in graph["ensemble"] and "heatmaps" in graph["charts"]  # the scan sees both import forms
    assert _cycles({"a": {"b"}, "b": {"a"}}) == ["a -> b -> a"]
    assert not _cycles(graph), _cycles(graph)


def test_architecture_names_every_module():
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text()
    missing = [m for m in MODULES - ENTRY_MODULES
               if f"`{m.split('.')[-1]}`" not in text and ("." in m or f"`{m}/`" not in text)]
    assert not missing, f"ARCHITECTURE.md does not name {missing}"
