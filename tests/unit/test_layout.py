"""The layering rules of docs/design.md §8, checked on the source itself."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PYTHON, REPO

PACKAGE = REPO / "astray"
MODULES = sorted(PACKAGE.rglob("*.py"))

# Function-level imports exist only to keep start-up fast or to keep an optional
# library optional; each must say why in a comment on its line or the line above.
LAZY_ALLOWED = ("ray", "matplotlib", "onnx", "onnxruntime", "sklearn", "datasets", "pynvml",
                "astray.sweep.runner", "astray.notebook", "astray.cli.report", "importlib",
                "torch.utils.tensorboard")


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module, line, at function level) for every import in a file."""
    tree = ast.parse(path.read_text())
    out = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, nested) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                out.append((child.module, child.lineno, nested))
            visit(child, inner)

    visit(tree, False)
    return out


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def test_only_the_sweep_package_imports_ray():
    offenders = [f"{_rel(p)}:{line} imports {mod}" for p in MODULES for mod, line, _ in _imports(p)
                 if (mod == "ray" or mod.startswith("ray.")) and not _rel(p).startswith("astray/sweep/")]
    assert not offenders


def test_only_ddp_imports_torch_distributed():
    offenders = [f"{_rel(p)}:{line}" for p in MODULES for mod, line, _ in _imports(p)
                 if mod.startswith("torch.distributed") and _rel(p) != "astray/engine/ddp.py"]
    assert not offenders


def test_function_level_imports_are_the_allowed_few_and_say_why():
    bad = []
    for p in MODULES:
        lines = p.read_text().splitlines()
        for mod, line, nested in _imports(p):
            if not nested:
                continue
            allowed = any(mod == a or mod.startswith(a + ".") for a in LAZY_ALLOWED)
            above = line - 2  # a comment may head a block of imports
            while above > 0 and lines[above].strip().startswith(("import ", "from ")):
                above -= 1
            said = "#" in lines[line - 1] or lines[above].strip().startswith("#")
            if not (allowed and said):
                bad.append(f"{_rel(p)}:{line} imports {mod}" + ("" if allowed else " (not allowed)")
                           + ("" if said else " (no reason given)"))
    assert not bad


@pytest.mark.parametrize("module", ["astray.engine.trainer", "astray.sparse", "astray.analysis.compute",
                                    "astray.deploy.trained", "astray.sweep.store", "astray.sweep.recorder"])
def test_engine_analysis_and_deploy_load_without_ray(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    proc = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_result_store_reads_without_torch():
    code = "import sys, astray.sweep.store, astray.analysis.read; print('torch' in sys.modules)"
    proc = subprocess.run([PYTHON, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_code_cites_only_files_in_the_repository():
    cited = re.compile(r"docs/design\.md §(\d+)")
    design = (REPO / "docs/design.md").read_text()
    sections = set(re.findall(r"^## (\d+)\. ", design, flags=re.M))
    bad = []
    for p in MODULES + sorted((REPO / "tests").rglob("*.py")) + sorted((REPO / "benchmarks").glob("*.py")):
        text = p.read_text()
        if p.name == "test_layout.py":
            continue
        if re.search(r"\bDESIGN\.md|\.\./shared|/work/shared", text):
            bad.append(f"{_rel(p)} cites a file outside the repository")
        bad += [f"{_rel(p)} cites §{n}, which docs/design.md lacks" for n in cited.findall(text) if n not in sections]
    assert not bad


def _code_strings(tree: ast.AST) -> list[ast.Constant]:
    """String constants in code, docstrings left out."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_the_loop_never_names_a_method():
    """A method's behaviour lives in its class (astray/sparse/): outside it no code
    compares a strategy with a name, and the names that are only methods' (not also
    baseline kinds) appear nowhere in code."""
    from astray.schema import BASELINE_KINDS
    from astray.sparse import METHODS

    only_methods = set(METHODS) - set(BASELINE_KINDS)
    assert only_methods  # reforward, stale, infobatch, ...
    bad = []
    for path in MODULES:
        if _rel(path).startswith("astray/sparse/"):
            continue
        tree = ast.parse(path.read_text())
        bad += [f"{_rel(path)}:{c.lineno} names {c.value!r}" for c in _code_strings(tree) if c.value in only_methods]
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and "strategy" in ast.unparse(node):
                literals = [n for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in METHODS]
                bad += [f"{_rel(path)}:{node.lineno} compares a strategy with {n.value!r}" for n in literals]
    assert not bad, bad


def _layout_map() -> dict[str, set[str]]:
    """docs/design.md §8's map: package (or "" for the top level) → the .py files it names."""
    design = (REPO / "docs" / "design.md").read_text()
    section = design.split("## 8. Layers", 1)[1].split("\n## ", 1)[0]
    block = section.split("```\nastray/\n", 1)[1].split("```", 1)[0]
    out: dict[str, set[str]] = {}
    package = ""
    for line in block.splitlines():
        head = re.match(r"  (\w+)/ ", line)
        if head:
            package = head.group(1)
        elif re.match(r"  \S", line):
            package = ""
        out.setdefault(package, set()).update(re.findall(r"(\w+)\.py", line))
    return out


def test_the_layout_map_in_design_md_lists_every_module_and_no_other():
    mapped = _layout_map()
    files: dict[str, set[str]] = {}
    for path in MODULES:
        rel = path.relative_to(PACKAGE)
        package = rel.parts[0] if len(rel.parts) > 1 else ""
        if rel.name != "__init__.py" or package == "":
            files.setdefault(package, set()).add(rel.stem)
    missing = {f"{pkg}/{m}.py" for pkg, ms in files.items() for m in ms - mapped.get(pkg, set())}
    extra = {f"{pkg}/{m}.py" for pkg, ms in mapped.items() for m in ms - files.get(pkg, set())}
    assert not missing, f"modules missing from docs/design.md §8: {sorted(missing)}"
    assert not extra, f"docs/design.md §8 names modules that do not exist: {sorted(extra)}"
