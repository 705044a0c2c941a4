"""Every module imports on its own; no import cycles; config validation stays TensorFlow-free."""

import ast
import os
import subprocess
import sys

import pytest

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "distvmc")

# Imported by the config (for the schemas of factors and potentials): must not import TensorFlow.
TF_FREE = ["distvmc", "distvmc.config", "distvmc.schema", "distvmc.lazytf", "distvmc.systems",
           "distvmc.systems.base", "distvmc.systems.species", "distvmc.systems.coulomb",
           "distvmc.systems.harmonic", "distvmc.systems.user", "distvmc.systems.free",
           "distvmc.systems.pairs", "distvmc.wavefunctions", "distvmc.wavefunctions.base",
           "distvmc.wavefunctions.wavefunction", "distvmc.wavefunctions.mlp",
           "distvmc.wavefunctions.signed", "distvmc.wavefunctions.envelopes",
           "distvmc.wavefunctions.jastrow", "distvmc.wavefunctions.projected"]


def modules() -> list[str]:
    """Dotted names of every module of the distvmc package, from the files."""
    out = []
    for dirpath, dirnames, filenames in os.walk(PACKAGE):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        for f in sorted(filenames):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].split(os.sep)
                out.append(".".join(rel[:-1] if rel[-1] == "__init__" else rel))
    return out


def _module_level_imports(tree: ast.Module):
    """Import nodes executed at import time: not inside functions or ``if TYPE_CHECKING``."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    """module -> distvmc modules it imports at module level (the most specific module named:
    ``from distvmc.systems import coulomb`` -> distvmc.systems.coulomb, ``from distvmc.systems
    import System`` -> distvmc.systems)."""
    names = set(modules())
    graph = {}
    for mod in names:
        is_pkg = os.path.exists(os.path.join(ROOT, *mod.split("."), "__init__.py"))
        path = os.path.join(ROOT, *mod.split(".")) + ("/__init__.py" if is_pkg else ".py")
        tree = ast.parse(open(path).read(), path)
        package = mod if is_pkg else mod.rpartition(".")[0]
        edges = set()
        for node in _module_level_imports(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[:len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base
                           for a in node.names]
            edges |= {t for t in targets if t in names and t != mod}
        graph[mod] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component with a cycle."""
    index, low, on_stack, stack, sccs = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(set(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for comp in sccs:  # a shortest closed path through the component's first module
        start = min(comp)
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop(0)
            nxt = sorted(graph[path[-1]] & comp)
            if start in nxt:
                cycles.append(path + [start])
                break
            for w in nxt:
                if w not in seen:
                    seen.add(w)
                    paths.append(path + [w])
    return cycles


def test_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_at_module_level():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_module_imports_on_its_own():
    """Each module imported first, with no other distvmc module loaded (import-order bugs).

    One process: TensorFlow and the other third-party packages are imported once,
    then before each module every distvmc module is dropped from sys.modules.
    """
    mods = [m for m in modules() if not m.endswith("__main__")]  # __main__ runs the CLI
    code = (
        "import sys, traceback\n"
        "import numpy, yaml, tensorflow\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for m in [m for m in sys.modules if m == 'distvmc' or m.startswith('distvmc.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except Exception as e:\n"
        "        line = traceback.format_exception_only(type(e), e)[-1].strip()\n"
        "        failed.append(f'{name}: {line}')\n"
        "print('\\n'.join(failed))\n")
    r = subprocess.run([sys.executable, "-c", code, *mods], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "", "modules that fail to import first:\n" + r.stdout


@pytest.mark.parametrize("module", TF_FREE)
def test_config_side_modules_import_without_tensorflow(module):
    code = f"import sys, {module}; print('tensorflow' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False", f"importing {module} imports TensorFlow"
