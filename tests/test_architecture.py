"""The import graph the design promises: contract/ at the bottom, mixtures and trainer never import pipelines,
and the pure modules of the data path import without Apache Beam installed."""
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
        "pipelines.filters.warnings", "pipelines.engine.examples", "pipelines.report.html", "mixtures.spec", "mixtures.planner",
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
