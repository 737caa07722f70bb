"""The house rules of the installed package, checked on its source: imports point down the floors of
docs/ARCHITECTURE.md, no import circles, no private names used across modules, no function body over 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "freeprompt"

# Floors from the ground up; a module may import its own subpackage and any lower floor, never a higher or
# a sibling floor's package. ``None`` marks the package's top level (``freeprompt/__init__.py``, ``__main__``).
FLOORS = [
    {"errors", "lazy"},
    {"io"},
    {"diffusion"},
    {"models", "shapes"},
    {"attention"},
    {"editing"},
    {"analysis"},
    {"evaluation"},
    {"ui"},
    {"cli"},
    {None},
]
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("freeprompt", *parts)).removesuffix(".__init__")
        found[name] = path
    return found


MODULES = _modules()


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] in ("__main__",)):
        return None
    return parts[1] if (PACKAGE / parts[1]).is_dir() else parts[1].removesuffix(".py")


def _floor(package: str | None) -> int:
    for level, members in enumerate(FLOORS):
        if package in members:
            return level
    raise AssertionError(f"package {package!r} is on no floor: add it to FLOORS and to docs/ARCHITECTURE.md")


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every import in ``module``, local ones too."""
    tree = ast.parse(MODULES[module].read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names if alias.name.startswith("freeprompt")]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target.startswith("freeprompt"):
                names = [alias.name for alias in node.names]
                submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
                out += [(s, [], node.lineno) for s in submodules]
                out.append((target, [n for n in names if f"{target}.{n}" not in MODULES], node.lineno))
    return out


def test_imports_point_down_the_floors():
    wrong = []
    for module in MODULES:
        own = _package_of(module)
        for target, _, line in _imports(module):
            other = _package_of(target)
            if other == own or target == "freeprompt":
                continue
            if _floor(other) >= _floor(own):
                wrong.append(f"{module}:{line} imports {target} ({other!r} is not below {own!r})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    graph = {m: {t for t, _, _ in _imports(m) if t in MODULES and t != m} for m in MODULES}
    # a package's __init__ re-exporting its modules is not a circle through the package
    for m in graph:
        graph[m] = {t for t in graph[m] if not (MODULES[t].name == "__init__.py" and m.startswith(t + "."))}
    state, stack, circles = {}, [], []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                circles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not circles, "\n".join(circles)


def test_no_private_names_across_modules():
    wrong = []
    for module, path in MODULES.items():
        for target, names, line in _imports(module):
            wrong += [f"{module}:{line} imports {n} from {target}" for n in names
                      if n.startswith("_") and not n.startswith("__")]
        tree = ast.parse(path.read_text())
        aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                   for a in n.names if f"{_resolve(module, n) if isinstance(n, ast.ImportFrom) else ''}.{a.name}"
                   .lstrip(".") in MODULES or a.name.startswith("freeprompt")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                wrong.append(f"{module}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


def _body_lines(node) -> int:
    """Lines of a function's body, its signature and docstring not counted (a command's option declarations are
    not logic to read)."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:] or body
    return node.end_lineno - body[0].lineno + 1


@pytest.mark.parametrize("module", sorted(MODULES))
def test_functions_fit_on_a_screen(module):
    tree = ast.parse(MODULES[module].read_text())
    long = [f"{node.name} ({_body_lines(node)} lines, line {node.lineno})"
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and _body_lines(node) > MAX_FUNCTION_LINES]
    assert not long, f"{module}: " + ", ".join(long)


def test_the_command_line_parses_without_torch():
    """A bad command line is refused before torch, diffusers, transformers or numpy are imported: building the app
    (every command's options, the methods' declarations included) imports none of them."""
    import subprocess
    import sys

    code = ("import sys; from freeprompt.cli.main import build_app; build_app(); "
            "print(','.join(n for n in ('torch', 'diffusers', 'transformers', 'numpy', 'PIL') if n in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported before parsing: {done.stdout.strip()}"
