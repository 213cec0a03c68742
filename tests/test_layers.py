"""The package layers (docs/design.md §1): each package imports only the ones below it.

    common < bundle (the contract: format, schema, reader, input spec, preprocessing, top-k,
             encoder runners, parity bounds; torch-free)
           < distill < export          (training side)
           < mobile_runtime            (device side: imports only bundle and common)
           < tools < cli               (host tools and the command line: anything)

Every import counts, function-local ones too (read from the AST, not from what happens to be
imported at run time).
"""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "common": {"common"},
    "bundle": {"common", "bundle"},
    "distill": {"common", "bundle", "distill"},
    "export": {"common", "bundle", "distill", "export"},
    "mobile_runtime": {"common", "bundle", "mobile_runtime"},
    "tools": {"common", "bundle", "distill", "export", "mobile_runtime", "tools"},
    "cli": {"common", "bundle", "distill", "export", "mobile_runtime", "tools", "cli"},
}
DEVICE_SIDE = ("bundle", "mobile_runtime")
TRAINING_LIBRARIES = {"torch", "torchvision", "open_clip", "timm", "torchao"}
# the ExecuTorch runner's tensors are torch tensors: its one allowed import, inside the runner
TORCH_ALLOWED = {("bundle/backends.py", "torch")}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import in a module's source, at any depth (function-local too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def layer_violations(package: str, source: str, where: str) -> list[str]:
    """Imports of `ammkd.X` that `package` may not make, as 'file:line imports module' lines."""
    bad = []
    for line, module in imported_modules(source):
        parts = module.split(".")
        if parts[0] == "ammkd" and len(parts) > 1 and parts[1] not in ALLOWED[package]:
            bad.append(f"{where}:{line} imports {module} ({package} may import {sorted(ALLOWED[package])})")
    return bad


def _sources(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        yield path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")


def test_every_package_has_a_layer():
    mapped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert {name.split(".")[1] for name in mapped} == set(ALLOWED)


def test_packages_import_only_the_layers_below_them():
    bad = [v for package in ALLOWED for where, src in _sources(package) for v in layer_violations(package, src, where)]
    assert not bad, "backward imports:\n" + "\n".join(bad)


def test_the_check_sees_a_function_local_backward_import():
    src = "import numpy\n\ndef f():\n    from ammkd.export.exporter import export_bundle\n    return export_bundle\n"
    assert layer_violations("mobile_runtime", src, "x.py") == [
        "x.py:4 imports ammkd.export.exporter (mobile_runtime may import ['bundle', 'common', 'mobile_runtime'])"
    ]
    assert layer_violations("cli", src, "x.py") == []


@pytest.mark.parametrize("package", DEVICE_SIDE)
def test_the_device_side_imports_no_training_library(package):
    bad = [
        f"{where}:{line} imports {module}"
        for where, src in _sources(package)
        for line, module in imported_modules(src)
        if module.split(".")[0] in TRAINING_LIBRARIES and (where, module) not in TORCH_ALLOWED
    ]
    assert not bad, "\n".join(bad)


def test_opening_and_searching_a_bundle_loads_no_torch():
    modules = [
        "ammkd.mobile_runtime.retriever",
        "ammkd.mobile_runtime.verify",
        "ammkd.mobile_runtime.gallery",
        "ammkd.bundle.parity",
        "ammkd.bundle.coreml_package",
    ]
    training = sorted(TRAINING_LIBRARIES)
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(sorted(set({training!r}) & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
