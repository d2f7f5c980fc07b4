"""The package layout (issue 9, item 7), read from the source.

* no import cycle inside ``chat_security``, not even one that only type
  checkers follow;
* the store (``models``, ``keys``, ``public_keys``) reaches neither the
  engine, nor identity, nor any admin, HTTP or CLI module, however indirectly;
* migrations import nothing from ``chat_security`` or ``demo_site``;
* ``import chat_security`` loads no models;
* the demo uses only the public surface.

How imports are counted. Every ``import`` and ``from … import`` counts
wherever it is written, inside functions too: a function-level import runs
the moment the function does, so it can close a cycle just the same.
Imports under ``if TYPE_CHECKING:`` are left out of the other checks: they
never run, so they can neither form a cycle at run time nor load code. They
do count for a second cycle check: a cycle that only type checkers follow is
still two modules that each need the other to be understood (the WebSocket
connection and its watcher were one, until the watcher named what it needs
of a socket as a ``Protocol``).
``from pkg import name`` counts as an import of the submodule ``pkg.name``
when there is one, else of ``pkg`` itself. Importing a submodule does not
count as importing the packages above it (Python initialises those first,
and the admin subpackage's ``__init__`` importing its own modules relies on
that); naming a package in an import does count. The lazy API of
``chat_security/__init__`` counts as imports of the modules its
``_EXPORTS`` name, so a module inside the package that used
``chat_security.verify`` would depend on ``tokens``.

The checks are plain functions over source trees, and the ``*_catches_*``
tests run them on small packages with a planted violation, so every
assertion here is known to be able to fail.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections import deque
from pathlib import Path

import chat_security

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "chat_security"

#: The store must not reach these (prefixes match submodules too).
STORE = ("chat_security.models", "chat_security.keys", "chat_security.public_keys")
NOT_FROM_THE_STORE = (
    "chat_security.tokens",  # the engine
    "chat_security.jws",
    "chat_security.keyring",
    "chat_security.payload",
    "chat_security.identity",  # identity
    "chat_security.continuity",
    "chat_security.identity_types",
    "chat_security.admin",  # the admin subpackage
    "chat_security.middleware",  # HTTP and WebSocket
    "chat_security.websocket",
    "chat_security.views",
    "chat_security.session",
    "chat_security.templatetags",
    "chat_security.management",  # the CLI
    "chat_security.receivers",  # wires the store to the keyring
)

#: What the demo may import besides the names in ``chat_security.__all__``:
#: the models (key-store manager methods, ``Contact``), the views its
#: URLconf routes (the metrics scrape as docs/observability.md mounts it) and
#: the WebSocket middleware its ``asgi.py`` wraps around the chat's routes.
#: Settings name the middleware by its dotted path.
DEMO_MODULES = {
    "chat_security",
    "chat_security.metrics",
    "chat_security.models",
    "chat_security.views",
    "chat_security.websocket",
}
DEMO_DOTTED_PATHS = {"chat_security.middleware.ChatSecurityMiddleware"}


# -- reading the source ----------------------------------------------------------------


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_under(directory: Path, root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(directory.rglob("*.py"))}


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Every import statement of one module as ``(module, names, line)``, absolute."""

    def __init__(self, name: str, is_package: bool, type_checking: bool = False) -> None:
        self.package = name if is_package else name.rpartition(".")[0]
        self.type_checking = type_checking
        self.found: list[tuple[str, list[str], int]] = []

    def visit_If(self, node: ast.If) -> None:
        if _type_checking(node.test) and not self.type_checking:
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, [], node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")
            anchor = ".".join(parts[: len(parts) - node.level + 1])
            base = f"{anchor}.{base}" if base else anchor
        self.found.append((base, [a.name for a in node.names], node.lineno))


def imports_of(
    path: Path, name: str, type_checking: bool = False
) -> list[tuple[str, list[str], int]]:
    visitor = _Imports(name, path.name == "__init__.py", type_checking)
    visitor.visit(ast.parse(path.read_text("utf-8"), str(path)))
    return visitor.found


def targets(found: list[tuple[str, list[str], int]], known: set[str]) -> list[tuple[str, int]]:
    """The modules each import statement loads (submodules resolved)."""
    out = []
    for base, names, line in found:
        if not names:
            out.append((base, line))
        for name in names:
            sub = f"{base}.{name}"
            out.append((sub if sub in known else base, line))
    return out


def lazy_exports(init: Path) -> dict[str, str]:
    """``_EXPORTS`` of a package's ``__init__``: public name -> submodule (relative)."""
    for node in ast.parse(init.read_text("utf-8")).body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "_EXPORTS" and node.value is not None:
            return ast.literal_eval(node.value)
    return {}


def import_graph(package_dir: Path, root: Path, type_checking: bool = False) -> dict[str, set[str]]:
    """module -> the package's modules it imports (see the module docstring);
    with ``type_checking``, imports under ``if TYPE_CHECKING:`` too."""
    modules = modules_under(package_dir, root)
    known = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _line in targets(imports_of(path, name, type_checking), known):
            if target in known and target != name:
                graph[name].add(target)
    package = module_name(package_dir / "__init__.py", root)
    for module in lazy_exports(package_dir / "__init__.py").values():
        graph[package].add(f"{package}.{module}")
    return graph


# -- the checks --------------------------------------------------------------------------


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, …, a]``, or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path, on_path = [start], {start}
        stack = [iter(sorted(graph[start]))]
        while stack:
            for child in stack[-1]:
                if child in on_path:
                    return path[path.index(child) :] + [child]
                if child not in done:
                    path.append(child)
                    on_path.add(child)
                    stack.append(iter(sorted(graph.get(child, ()))))
                    break
            else:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
    return None


def forbidden_reach(
    graph: dict[str, set[str]], start: str, forbidden: tuple[str, ...]
) -> list[list[str]]:
    """Every shortest import chain from ``start`` to a forbidden module."""
    parent: dict[str, str | None] = {start: None}
    queue = deque([start])
    chains = []
    while queue:
        node = queue.popleft()
        if node != start and any(node == f or node.startswith(f"{f}.") for f in forbidden):
            chain = [node]
            while (previous := parent[chain[-1]]) is not None:
                chain.append(previous)
            chains.append(chain[::-1])
            continue
        for child in sorted(graph.get(node, ())):
            if child not in parent:
                parent[child] = node
                queue.append(child)
    return chains


def project_imports(path: Path, name: str, prefixes: tuple[str, ...]) -> list[str]:
    """Imports of ``path`` that name a module under ``prefixes``, as 'module:line'."""
    return [
        f"{base}:{line}"
        for base, _names, line in imports_of(path, name)
        if any(base == p or base.startswith(f"{p}.") for p in prefixes)
    ]


def demo_violations(directory: Path, root: Path, public: set[str]) -> list[str]:
    """Where the demo reaches past the public surface: imports, attributes, dotted paths."""
    found = []
    allowed = public | {m.rpartition(".")[2] for m in DEMO_MODULES - {PACKAGE}}
    for name, path in modules_under(directory, root).items():
        where = path.relative_to(directory).as_posix()
        for base, names, line in imports_of(path, name):
            if base == PACKAGE:
                found += [
                    f"{where}:{line} imports {PACKAGE}.{n}" for n in names if n not in allowed
                ]
            elif base.startswith(f"{PACKAGE}.") and base not in DEMO_MODULES:
                found.append(f"{where}:{line} imports {base}")
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == PACKAGE
                and node.attr not in allowed | {"__version__"}
            ):
                found.append(f"{where}:{node.lineno} uses {PACKAGE}.{node.attr}")
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(rf"{PACKAGE}\.[\w.]+", node.value)
                and node.value not in DEMO_DOTTED_PATHS
            ):
                found.append(f"{where}:{node.lineno} names {node.value}")
    return found


# -- the package ---------------------------------------------------------------------------


def test_no_import_cycle():
    cycle = find_cycle(import_graph(ROOT / PACKAGE, ROOT))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_import_cycle_even_for_type_checkers():
    cycle = find_cycle(import_graph(ROOT / PACKAGE, ROOT, type_checking=True))
    assert cycle is None, "import cycle through TYPE_CHECKING: " + " -> ".join(cycle or [])


def test_the_store_imports_no_engine_identity_admin_http_or_cli():
    graph = import_graph(ROOT / PACKAGE, ROOT)
    chains = [c for store in STORE for c in forbidden_reach(graph, store, NOT_FROM_THE_STORE)]
    assert chains == [], "\n".join(" -> ".join(c) for c in chains)


def test_nothing_outside_the_admin_imports_it():
    graph = import_graph(ROOT / PACKAGE, ROOT)
    outside = {
        f"{module} -> {target}"
        for module, imported in graph.items()
        if not module.startswith("chat_security.admin")
        for target in imported
        if target.startswith("chat_security.admin")
    }
    assert outside == set()


def test_migrations_import_nothing_from_the_project():
    found = []
    for directory in sorted(
        {*ROOT.glob("chat_security/migrations"), *ROOT.glob("demo_site/**/migrations")}
    ):
        for name, path in modules_under(directory, ROOT).items():
            found += [
                f"{name} imports {i}" for i in project_imports(path, name, (PACKAGE, "demo_site"))
            ]
    assert found == []


def test_importing_the_package_loads_no_models():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "import sys, chat_security\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('chat_security.'))\n"
        "assert 'chat_security.models' not in sys.modules, loaded\n"
        "assert loaded == [], loaded\n"
        "assert 'django.db.models' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_demo_uses_only_the_public_surface():
    assert demo_violations(ROOT / "demo_site", ROOT, set(chat_security.__all__)) == []


# -- each check can fail --------------------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / name.split("/")[0]


def test_cycle_check_catches_a_cycle_through_a_function_level_import(tmp_path):
    package = write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from . import b\n",
            "pkg/b.py": "from .c import thing\n",
            "pkg/c.py": "def f():\n    from pkg.a import x\n",
        },
    )
    assert find_cycle(import_graph(package, tmp_path)) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]


def test_cycle_check_catches_relative_imports_from_a_subpackage(tmp_path):
    package = write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from . import inner\n",
            "pkg/sub/inner.py": "from ..outer import y\n",
            "pkg/outer.py": "import pkg.sub.inner as i\n",
        },
    )
    assert find_cycle(import_graph(package, tmp_path)) == [
        "pkg.outer",
        "pkg.sub.inner",
        "pkg.outer",
    ]


def test_cycle_check_follows_the_lazy_api(tmp_path):
    package = write(
        tmp_path,
        {
            "pkg/__init__.py": '_EXPORTS = {"verify": "engine"}\n',
            "pkg/engine.py": "from . import helper\n",
            "pkg/helper.py": "def f():\n    from pkg import verify\n",
        },
    )
    assert find_cycle(import_graph(package, tmp_path)) == [
        "pkg",
        "pkg.engine",
        "pkg.helper",
        "pkg",
    ]


def test_type_checking_imports_are_left_out(tmp_path):
    package = write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import typing\nif typing.TYPE_CHECKING:\n    from . import b\n",
            "pkg/b.py": "from . import a\n",
        },
    )
    assert find_cycle(import_graph(package, tmp_path)) is None
    # ...by the run-time check; the type-level one sees the circle.
    assert find_cycle(import_graph(package, tmp_path, type_checking=True)) == [
        "pkg.a",
        "pkg.b",
        "pkg.a",
    ]


def test_store_check_catches_an_indirect_import(tmp_path):
    package = write(
        tmp_path,
        {
            "chat_security/__init__.py": "",
            "chat_security/models.py": "def f():\n    from .values import x\n",
            "chat_security/values.py": "from chat_security.admin import panel\n",
            "chat_security/admin/__init__.py": "",
            "chat_security/admin/panel.py": "",
        },
    )
    graph = import_graph(package, tmp_path)
    assert forbidden_reach(graph, "chat_security.models", NOT_FROM_THE_STORE) == [
        ["chat_security.models", "chat_security.values", "chat_security.admin.panel"]
    ]


def test_migration_check_catches_an_app_import(tmp_path):
    path = tmp_path / "0001_initial.py"
    path.write_text("import django.utils.timezone\nimport chat_security.clock\n")
    assert project_imports(path, "m", (PACKAGE, "demo_site")) == ["chat_security.clock:2"]


def test_demo_check_catches_internal_imports_attributes_and_paths(tmp_path):
    write(
        tmp_path,
        {
            "site/__init__.py": "",
            "site/a.py": "from chat_security import keyring, verify, views\n",
            "site/b.py": "from chat_security.identity import ANON_PREFIX\n",
            "site/c.py": "import chat_security\nchat_security.keyring.get_snapshot()\n",
            "site/d.py": 'X = ["chat_security.session.kept_token"]\n',
            "site/e.py": "from chat_security.models import Contact\n",
        },
    )
    assert demo_violations(tmp_path / "site", tmp_path, {"verify"}) == [
        "a.py:1 imports chat_security.keyring",
        "b.py:1 imports chat_security.identity",
        "c.py:2 uses chat_security.keyring",
        "d.py:1 names chat_security.session.kept_token",
    ]
