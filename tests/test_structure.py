"""The package's layering, read from its source: no import circle, no advnb import inside a function, no private name
imported from another module, and the foundation never importing a paper or the workflow."""
import ast

from conftest import ROOT

LIB = ROOT / "advnb"


def _modules() -> dict[str, ast.Module]:
    out = {}
    for p in sorted(LIB.rglob("*.py")):
        if p.name in ("_modidx.py",):
            continue
        parts = p.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(p.read_text())
    return out


def _target(module: str, node: ast.ImportFrom) -> str:
    "The absolute module an `from ... import` names."
    if node.level:
        base = module.split(".")[: -node.level] if not module.endswith("__init__") else module.split(".")
        return ".".join(base + ([node.module] if node.module else []))
    return node.module or ""


def _imports(mods):
    "(module, imported module, imported names, inside a function?) for every advnb import."
    for name, tree in mods.items():
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inner = {id(n) for f in funcs for n in ast.walk(f) if n is not f}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                t = _target(name, node)
                if t == "advnb" or t.startswith("advnb."):
                    targets = [f"{t}.{a.name}" if f"{t}.{a.name}" in mods else t for a in node.names]
                    for a, tt in zip(node.names, targets):
                        yield name, tt, a.name, id(node) in inner
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("advnb."):
                        yield name, a.name, None, id(node) in inner


def test_no_advnb_import_inside_a_function():
    inside = sorted(f"{m} imports {t}" for m, t, _, fn in _imports(_modules()) if fn)
    assert inside == []


def test_no_private_name_is_imported_from_another_module():
    private = sorted(f"{m}: {t}.{n}" for m, t, n, _ in _imports(_modules()) if n and n.startswith("_") and t != m)
    assert private == []


def test_no_import_circle():
    mods = _modules()
    graph = {m: set() for m in mods}
    for m, t, _, _ in _imports(mods):
        if t in graph and t != m and t != "advnb":
            graph[m].add(t)
    done, stack, cycles = set(), [], []

    def visit(m):  # depth first; a module met again while still on the stack closes a circle
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in done:
            return
        stack.append(m)
        for t in sorted(graph[m]):
            visit(t)
        stack.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)
    assert cycles == []


def test_the_foundation_imports_no_paper_and_no_workflow():
    up = sorted(f"{m} imports {t}" for m, t, _, _ in _imports(_modules())
                if not m.startswith(("advnb.papers", "advnb.workflow", "advnb.__main__"))
                and t.startswith(("advnb.papers", "advnb.workflow")))
    assert up == []
