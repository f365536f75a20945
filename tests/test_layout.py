"""
The package's layering, read from the source: no import circle anywhere in
``mockoai``, and each layer imports only what lies below it.

Every ``import`` and ``from ... import`` statement counts, wherever it is:
at the top, inside a function (a lazy import still ties the two modules
together, and hides a circle until the day it runs first), and under
``if TYPE_CHECKING:`` (a module that needs another's types depends on it;
a circle through annotations is a design circle, and becomes a runtime one
as soon as an import leaves the block).  ``from package import name`` is
an edge to ``package.name`` when that is a module, else to ``package``.
The parent packages an import runs first are not edges: a package's
``__init__`` may import its own modules, as packages do.
"""

from __future__ import annotations

import ast
import os
import tempfile
from collections.abc import Iterable, Mapping

from twisted.trial.unittest import TestCase

import mockoai

ROOT = os.path.dirname(os.path.abspath(mockoai.__file__))


def modules(root: str = ROOT, package: str = "mockoai") -> dict[str, str]:
    """Every module of the package: its dotted name and its file."""
    found = {}
    for directory, _, files in os.walk(root):
        relative = os.path.relpath(directory, root)
        parts = [package] + ([] if relative == "." else relative.split(os.sep))
        for name in files:
            if not name.endswith(".py"):
                continue
            dotted = parts if name == "__init__.py" else [*parts, name[:-3]]
            found[".".join(dotted)] = os.path.join(directory, name)
    return found


def imports(name: str, path: str, known: Iterable[str]) -> set[str]:
    """The modules of the package that module ``name`` (at ``path``) imports."""
    known = set(known)
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    is_package = path.endswith("__init__.py")
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                child = f"{base}.{alias.name}"
                targets.add(child if child in known else base)
    return {target for target in targets if target in known and target != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, found) for name, path in found.items()}


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


class ToolTests(TestCase):
    """The checks below can fail: the reader and the cycle finder see what they must."""

    def test_cycles_are_found(self) -> None:
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
        self.assertEqual(cycles(edges), [["a", "b", "c"]])
        self.assertEqual(cycles({"a": {"b"}, "b": set()}), [])

    def test_every_kind_of_import_is_read(self) -> None:
        scratch = tempfile.TemporaryDirectory()
        self.addCleanup(scratch.cleanup)
        root = os.path.join(scratch.name, "pkg")
        files = {
            "__init__.py": "from pkg import lazy\n",
            "a.py": (
                "from typing import TYPE_CHECKING\n"
                "import pkg.b\n"
                "from pkg import c\n"
                "from pkg.d import name\n"
                "from . import e\n"
                "if TYPE_CHECKING:\n"
                "    from pkg.f import Type\n"
                "def later():\n"
                "    from pkg.sub import g\n"
            ),
            "sub/__init__.py": "",
            "sub/g.py": "from .. import a\nfrom ..sub import h\n",
            "sub/h.py": "",
            **{f"{name}.py": "" for name in "bcdefz"},
            "lazy.py": "",
        }
        for name, text in files.items():
            path = os.path.join(root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as handle:
                handle.write(text)
        found = modules(root, "pkg")
        edges = {name: imports(name, path, found) for name, path in found.items()}
        self.assertEqual(edges["pkg"], {"pkg.lazy"})
        self.assertEqual(edges["pkg.a"], {"pkg.b", "pkg.c", "pkg.d", "pkg.e", "pkg.f", "pkg.sub.g"})
        self.assertEqual(edges["pkg.sub.g"], {"pkg.a", "pkg.sub.h"})
        self.assertEqual(cycles(edges), [["pkg.a", "pkg.sub.g"]])


class LayoutTests(TestCase):
    maxDiff = None

    def setUp(self) -> None:
        self.edges = graph()

    def offending(self, layer: str, forbidden: tuple[str, ...]) -> list[str]:
        return sorted(
            f"{module} imports {target}"
            for module, targets in self.edges.items()
            if _inside(module, layer)
            for target in targets
            if any(_inside(target, f) for f in forbidden)
        )

    def test_no_import_circle(self) -> None:
        self.assertEqual(cycles(self.edges), [])

    def test_sim_knows_no_api(self) -> None:
        """The simulation knows no dialect, no HTTP and no pipeline."""
        forbidden = ("mockoai.pipeline", "mockoai.dialects", "mockoai.wire", "mockoai.routes")
        self.assertEqual(self.offending("mockoai.sim", forbidden), [])

    def test_pipeline_knows_no_dialect(self) -> None:
        """The pipeline is handed its dialects; it names none."""
        forbidden = ("mockoai.dialects", "mockoai.routes")
        self.assertEqual(self.offending("mockoai.pipeline", forbidden), [])

    def test_wire_knows_no_dialect(self) -> None:
        """The wire serves any API: it knows neither a dialect nor the route table."""
        forbidden = ("mockoai.dialects", "mockoai.routes")
        self.assertEqual(self.offending("mockoai.wire", forbidden), [])


class DocumentedLayoutTests(TestCase):
    """The README's layout table names every module, so a newcomer finds each one there."""

    def test_every_module_in_the_readme(self) -> None:
        readme = os.path.join(os.path.dirname(ROOT), "README.md")
        if not os.path.exists(readme):  # an installed package without its checkout
            self.skipTest("README.md is not beside the package")
        with open(readme, encoding="utf-8") as handle:
            text = handle.read()
        table = text[text.index("## Layout") :]
        table = table[: table.index("\n## ", 1)]
        missing = sorted(
            f"mockoai/{os.path.relpath(path, ROOT)}"
            for name, path in modules().items()
            if not path.endswith("__init__.py")
            and f"`mockoai/{os.path.relpath(path, ROOT)}`" not in table
        )
        self.assertEqual(missing, [])

    def test_every_test_case_name_exists(self) -> None:
        """Each module's ``test-case-name`` header names test modules that exist."""
        tests = os.path.join(os.path.dirname(os.path.abspath(__file__)))
        wrong = []
        for name, path in sorted(modules().items()):
            with open(path, encoding="utf-8") as handle:
                first = handle.readline()
            if "test-case-name:" not in first:
                continue
            names = first.split("test-case-name:", 1)[1].split("-*-", 1)[0]
            for test in (n.strip() for n in names.split(",")):
                module = test.split(".", 1)[1] if test.startswith("tests.") else test
                if not os.path.exists(os.path.join(tests, module.replace(".", os.sep) + ".py")):
                    wrong.append(f"{name}: {test}")
        self.assertEqual(wrong, [])


class PackagingTests(TestCase):
    def test_every_package_is_installed(self) -> None:
        """
        setup.cfg lists its packages by name: ``mockoai.dialects.anthropic``
        was missing, so ``pip install .`` (the README's first command) gave a
        server that could not import it, while the suite, run from the
        checkout, passed.
        """
        import configparser

        config = configparser.ConfigParser()
        config.read(os.path.join(os.path.dirname(ROOT), "setup.cfg"))
        listed = set(config["options"]["packages"].split())
        found = {
            os.path.relpath(path, os.path.dirname(ROOT)).replace(os.sep, ".")
            for path, _, files in os.walk(ROOT)
            if "__init__.py" in files
        }
        self.assertEqual(found - listed, set())
