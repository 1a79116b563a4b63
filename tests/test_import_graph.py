"""runctl's import structure (issue 13): one lifecycle library under a thin CLI.

Every module under src/runctl is parsed, and every import in it counts, at any depth (the CLI
imports inside functions to start fast; such an import still ties the two modules together):

- no cycle among runctl's packages (agent, store, resume, cli ... and the top-level modules);
- no ``cli`` module imports a ``cli`` command module: shared helpers live in ``cli/_*.py`` (or
  in the library), and a package's ``__init__`` may be imported;
- nothing below ``cli`` imports it (``runctl.__main__``, the entry point, stands above it);
- ``store`` imports no other runctl package but ``errors``, ``models`` and ``fsutil``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "runctl"


@dataclass(frozen=True)
class Import:
    importer: str  # module name, e.g. runctl.cli.aws.train
    imported: str  # the runctl module it names (a submodule when ``from pkg import submodule``)
    where: str  # path:line, for the messages

    def __str__(self) -> str:
        return f"{self.where}: {self.importer} imports {self.imported}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _imports() -> list[Import]:
    modules = _modules()
    found = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            where = f"{path.relative_to(SRC.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # ``from pkg import sub`` imports the module pkg.sub when there is one
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            found += [Import(name, target, where) for target in dict.fromkeys(targets)
                      if target == "runctl" or target.startswith("runctl.")]
    return found


def _package(module: str) -> str:
    """The package (or top-level module) a module belongs to: runctl.agent.lease -> agent."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "runctl"


def _is_command_module(module: str) -> bool:
    modules = _modules()
    return (module.startswith("runctl.cli.") and not module.rpartition(".")[2].startswith("_")
            and modules[module].name != "__init__.py")


def test_the_parser_sees_imports_at_every_depth():
    """The rules below mean nothing if function-local and relative imports were missed."""
    seen = {(i.importer, i.imported) for i in _imports()}
    assert ("runctl.agent.supervisor", "runctl.store.layout") in seen  # a top-level import
    assert ("runctl.cli.run", "runctl.agent.supervisor") in seen  # inside a command function
    assert ("runctl.cli", "runctl.cli._context") in seen  # from pkg import submodule


def test_no_cycle_among_runctl_packages():
    edges: dict[str, dict[str, list[Import]]] = defaultdict(lambda: defaultdict(list))
    for found in _imports():
        source, target = _package(found.importer), _package(found.imported)
        if source != target and target != "runctl":  # the top-level package: below everything
            edges[source][target].append(found)

    def path_back(start: str, node: str, seen: set[str]) -> list[str] | None:
        """Packages leading from ``node`` back to ``start``, or None."""
        for target in sorted(edges[node]):
            if target == start:
                return [node]
            if target not in seen:
                seen.add(target)
                rest = path_back(start, target, seen)
                if rest is not None:
                    return [node, *rest]
        return None

    cycles = {}
    for package in sorted(edges):
        cycle = path_back(package, package, {package})
        if cycle is not None:
            cycles.setdefault(frozenset(cycle), cycle)
    def shown(imports: list[Import]) -> list[str]:
        more = [f"    ... and {len(imports) - 3} more"] if len(imports) > 3 else []
        return [f"    {i}" for i in imports[:3]] + more

    assert not cycles, "import cycles among packages:\n" + "\n".join(
        " -> ".join([*cycle, cycle[0]]) + "\n" + "\n".join(
            line for source, target in zip(cycle, [*cycle[1:], cycle[0]]) for line in shown(edges[source][target]))
        for cycle in cycles.values())


def test_cli_modules_do_not_import_cli_commands():
    wrong = [str(i) for i in _imports() if i.importer.startswith("runctl.cli") and _is_command_module(i.imported)]
    assert not wrong, "cli modules importing a command module (move what they share to a cli/_*.py helper " \
                      "or to the library):\n" + "\n".join(wrong)


def test_nothing_below_the_cli_imports_it():
    wrong = [str(i) for i in _imports() if _package(i.imported) == "cli" and _package(i.importer) != "cli"
             and i.importer != "runctl.__main__"]
    assert not wrong, "the library importing the CLI:\n" + "\n".join(wrong)


def test_the_store_imports_only_errors_models_and_fsutil():
    allowed = ("store", "errors", "models", "fsutil")
    wrong = [str(i) for i in _imports() if _package(i.importer) == "store" and _package(i.imported) not in allowed]
    assert not wrong, "store importing other runctl packages:\n" + "\n".join(wrong)
