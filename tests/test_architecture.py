"""The import graph the design promises: contract/ at the bottom, mixtures and trainer never import pipelines,
pipelines/ in layers (no module imports one above it or a sibling, no circle), and the pure modules of the data
path import without Apache Beam installed."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PURE = ["contract.config", "contract.layout", "contract.registry", "contract.stats", "contract.tokens",
        "contract.fsio", "pipelines.records", "pipelines.sources.readers", "pipelines.engine.staging", "pipelines.engine.plan",
        "pipelines.engine.shards", "pipelines.engine.process", "pipelines.sources.config", "pipelines.filters", "pipelines.dedupe.exact",
        "pipelines.dedupe.minhash", "pipelines.dedupe.config", "pipelines.steps.pii", "pipelines.steps.decontam",
        "pipelines.filters.warnings", "pipelines.engine.examples", "pipelines.report.html", "pipelines.text",
        "pipelines.filters.compose", "pipelines.steps.chain", "pipelines.sources.evals", "pipelines.sources.prepare",
        "pipelines.report.reader", "pipelines.report.text", "mixtures.spec", "mixtures.planner",
        "mixtures.pack", "mixtures.build", "trainer.config"]


def _imports(package: str, module_level_only: bool = False) -> dict[str, set[str]]:
    out = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in (tree.body if module_level_only else ast.walk(tree)):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(REPO))] = names
    return out


def _offenders(package: str, forbidden: tuple[str, ...], module_level_only: bool = False) -> list[str]:
    return [f"{f} imports {n}" for f, names in _imports(package, module_level_only).items() for n in sorted(names)
            if n.split(".")[0] in forbidden]


def test_no_arrow_up_the_import_graph():
    assert _offenders("contract", ("pipelines", "mixtures", "trainer", "kernels", "tokenization")) == []
    # Beam only where a remote path needs it (inside functions), torch never
    assert _offenders("contract", ("apache_beam", "torch"), module_level_only=True) == []
    assert _offenders("mixtures", ("pipelines",)) == []
    assert _offenders("trainer", ("pipelines", "mixtures")) == []
    assert _offenders("tokenization", ("pipelines", "mixtures", "trainer")) == []
    assert _offenders("tokenization", ("apache_beam",), module_level_only=True) == []


# pipelines/ bottom to top (DESIGN.md section 2 Layout). A module may import its own group and any group of a
# lower layer; groups of one layer are siblings that never import each other (the report reads an OUT folder,
# never the engine; the runners run any graph). The group of a module is its first name under pipelines/.
LAYERS = (
    ("records", "text", "worker_imports"),  # Document, Reject, Removal, uids; words and n-gram hashing; the worker's
                                            # heavy imports, ahead on one thread (worker_imports.py: on main, issue 30)
    ("filters", "dedupe"),               # pure rules and pure dedupe algorithms
    ("steps",),                          # per-document steps (PII, decontamination, the chain)
    ("sources", "artifacts"),            # the sources YAML, the one input reader, rule preparation, demo corpora;
                                         # per-machine artifacts made on the driver (artifacts.py: on main, issue 30)
    ("engine", "runners", "report"),     # the build (plan, staging, processing, shards, Beam graph) | runners | report
    ("build", "inspect", "quality"),     # the front doors (python -m pipelines.build / .inspect / .quality)
)
_LAYER = {g: i for i, groups in enumerate(LAYERS) for g in groups}


def _pipelines_modules() -> dict[str, Path]:
    mods = {}
    for path in sorted((REPO / "pipelines").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _import_edges() -> dict[str, set[str]]:
    """module -> the pipelines modules it imports anywhere in its body (function-level imports included);
    ``from pkg import name`` counts as an import of ``pkg.name`` where that is a module."""
    mods = _pipelines_modules()
    edges: dict[str, set[str]] = {}
    for mod, path in mods.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in mods:
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(mods)
                out |= subs or {node.module}
                if len(subs) < len(node.names):
                    out.add(node.module)
        edges[mod] = out - {mod}
    return edges


def _group(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_pipelines_module_has_a_layer():
    assert sorted({_group(m) for m in _pipelines_modules()} - set(_LAYER) - {""}) == []


def _layer_offenders(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, names in sorted(edges.items()):
        for name in sorted(names):
            a, b = _group(mod), _group(name)
            if not a or not b or a == b:
                continue
            if _LAYER[b] > _LAYER[a]:
                bad.append(f"{mod} ({a}) imports {name} ({b}), a higher layer")
            elif _LAYER[b] == _LAYER[a]:
                bad.append(f"{mod} ({a}) imports {name} ({b}), a sibling of the same layer")
    return bad


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_pipelines_layers_and_no_circle():
    edges = _import_edges()
    assert _layer_offenders(edges) == []
    assert _cycles(edges) == []


def test_the_layer_check_finds_what_it_looks_for():
    edges = {"pipelines.records": {"pipelines.engine.plan"}, "pipelines.report.html": {"pipelines.engine.graph"},
             "pipelines.engine.plan": {"pipelines.sources.config"}, "pipelines.sources.config": {"pipelines.records"}}
    assert _layer_offenders(edges) == [
        "pipelines.records (records) imports pipelines.engine.plan (engine), a higher layer",
        "pipelines.report.html (report) imports pipelines.engine.graph (engine), a sibling of the same layer"]
    assert _cycles(edges) == [["pipelines.engine.plan", "pipelines.records", "pipelines.sources.config"]]


def test_pure_modules_import_without_beam():
    """A meta-path hook makes `import apache_beam` fail, as on a machine without Beam."""
    script = (
        "import sys\n"
        "class NoBeam:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'apache_beam' or name.startswith('apache_beam.'):\n"
        "            raise ImportError('Beam is not installed here')\n"
        "sys.meta_path.insert(0, NoBeam())\n"
        f"import importlib\nfor m in {PURE!r}:\n    importlib.import_module(m)\n"
        "assert 'apache_beam' not in sys.modules\nprint('ok')\n")
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


def test_one_eos_and_one_is_remote():
    """The token format and the remote-path rule are stated once (contract/), not restated per package."""
    hits = []
    for path in sorted(Path(REPO).glob("*/**/*.py")):
        rel = str(path.relative_to(REPO))
        if rel.startswith(("contract/", "tests/", ".venv")):
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            s = line.strip()
            if re.match(r"^(EOS|EOS_ID) = \d+\s*(#.*)?$", s) or s.startswith("def is_remote("):
                hits.append(f"{rel}: {s}")
    assert hits == []


def test_one_door_to_bytes():
    """contract/fsio.py is the only module that imports Beam's filesystems (FileSystems, CompressionTypes):
    every other open, list, fetch or upload goes through it (strict decompression, its own errors)."""
    users = set()
    for package in ("contract", "pipelines", "mixtures", "tokenization", "trainer"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    hit = any(a.name.startswith("apache_beam.io.filesystem") for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module:
                    hit = (node.module.startswith("apache_beam.io.filesystem")
                           or any(a.name in ("filesystems", "filesystem", "FileSystems") for a in node.names)
                           and node.module.startswith("apache_beam"))
                else:
                    continue
                if hit:
                    users.add(str(path.relative_to(REPO)))
    assert users == {"contract/fsio.py"}
