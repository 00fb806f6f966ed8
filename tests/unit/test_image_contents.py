"""Everything the ``quantserve`` command imports is in the image the Dockerfile builds.

Derived from the code, not listed by hand: the import graph from the console script's module
(pyproject's ``[project.scripts]``) and the backend modules the registry loads by name. The
build stages must COPY every first-party package that graph reaches; the non-editable
``pip install .`` they run must ship every module and every data file of those packages; and the
third-party packages imported at module level (what ``quantserve serve`` loads before any engine
starts) must come with the core dependencies, not with an extra the image does not install.
"""

from __future__ import annotations

import ast
import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from backends.registry import BACKENDS
from tests.deploy_files import ROOT, STAGES

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BUILD_STAGES = ("cpu-build", "cuda-build")


def module_file(name: str) -> Path | None:
    """The repository file that importing ``name`` runs, or None when it is not ours."""
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def module_level(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Statements that run on import (class bodies too): not function bodies, not
    ``if TYPE_CHECKING:`` blocks."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from module_level(node.orelse)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            children = getattr(node, field, [])
            yield from module_level([c for c in children if isinstance(c, ast.stmt)])
            for handler in children:
                if isinstance(handler, ast.ExceptHandler):
                    yield from module_level(handler.body)


def imports_of(path: Path, module: str, *, anywhere: bool) -> set[str]:
    """Dotted names a module imports (``from a import b`` gives ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text())
    nodes = ast.walk(tree) if anywhere else module_level(tree.body)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(*, anywhere: bool) -> tuple[set[str], set[str]]:
    """(first-party modules reached, top-level names of the third-party modules they import)."""
    script_module = PYPROJECT["project"]["scripts"]["quantserve"].split(":")[0]
    todo = [script_module, *(target.split(":")[0] for target in BACKENDS.values())]
    ours: set[str] = set()
    theirs: set[str] = set()
    while todo:
        name = todo.pop()
        if name in ours:
            continue
        path = module_file(name)
        if path is None:
            top = name.split(".")[0]
            if module_file(top) is None and top != "__future__" and top not in sys.stdlib_module_names:
                theirs.add(top)
            continue
        ours.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        todo += imports_of(path, name, anywhere=anywhere)
    return ours, theirs


def copied_sources(stage: str) -> list[str]:
    """The build context paths a stage copies (not the ones from other stages)."""
    return [
        source
        for line in STAGES[stage]
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]


def core_distributions() -> set[str]:
    """Every distribution ``pip install .`` brings without extras (requirements, recursively)."""
    todo = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        todo += [Requirement(r) for r in importlib.metadata.requires(name) or []]
    return seen


def test_the_graph_reaches_what_the_cli_is_known_to_need() -> None:
    # Guards the walker itself: an empty or partial graph would make the tests below pass vacuously.
    ours, theirs = import_graph(anywhere=True)
    assert {"server.cli.main", "server.cli.quant", "toolkit.hf_prepare", "backends.llama_cpp.backend"} <= ours
    assert {"fastapi", "uvicorn", "typer"} <= import_graph(anywhere=False)[1] <= theirs


@pytest.mark.parametrize("stage", BUILD_STAGES)
def test_build_stages_copy_every_first_party_package_the_cli_reaches(stage: str) -> None:
    ours, _ = import_graph(anywhere=True)
    needed = {name.split(".")[0] for name in ours}
    copied = {source.rstrip("/") for source in copied_sources(stage)}
    assert needed <= copied, f"{stage} does not copy {sorted(needed - copied)}; the CLI imports them"
    assert "pyproject.toml" in copied and any(line == "RUN pip install ." for line in STAGES[stage])


def test_pip_install_of_the_copied_tree_ships_every_module_and_data_file(tmp_path: Path) -> None:
    """Builds the wheel that the image's ``pip install .`` builds, from exactly what it copies."""
    (sources,) = {tuple(copied_sources(stage)) for stage in BUILD_STAGES}
    for source in sources:
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, tmp_path / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, tmp_path / source)
    cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run([*cmd, "-w", str(tmp_path / "dist"), str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("quantserve-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    ours, _ = import_graph(anywhere=True)
    modules = {str(path.relative_to(ROOT)) for path in map(module_file, ours) if path is not None}
    assert modules - shipped == set(), "modules the CLI imports that `pip install .` leaves out"
    # Data files the packages read at run time (e.g. toolkit/data/calibration.txt) ship too.
    data = {
        str(path.relative_to(tmp_path))
        for source in sources
        if (tmp_path / source).is_dir()
        for path in (tmp_path / source).rglob("*")
        if path.is_file() and path.suffix != ".py"
    }
    assert data and data - shipped == set(), "package data files that `pip install .` leaves out"


def test_third_party_modules_imported_at_start_up_come_with_the_core_dependencies() -> None:
    _, theirs = import_graph(anywhere=False)
    providers = importlib.metadata.packages_distributions()
    core = core_distributions()
    missing = {
        top: providers.get(top, ["<not installed>"])
        for top in theirs
        if not {canonicalize_name(d) for d in providers.get(top, [])} & core
    }
    assert missing == {}, "imported at start-up but not installed by `pip install .` (no extras)"
