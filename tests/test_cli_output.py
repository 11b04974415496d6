"""What a newcomer sees: ``python -m pipelines.build`` prints no Apache Beam start-up noise by default (driver and
the local runner's worker processes), and ``-v`` shows Beam's own logging again (pipelines/runners/beam_logging.py)."""
import json
import subprocess
import sys

import yaml

from tests.conftest import REPO, needs_shared

NOISE = ("apitools not found", "Logging handler created", "No semi_persistent_directory found",
         "Discarding unparseable args")


def _build(tmp_path, tokenizer_path, name, *extra) -> subprocess.CompletedProcess:
    """A one-source build in a fresh process, with two multi_processing workers (as on a 2-core laptop)."""
    src = tmp_path / "rp_books.jsonl"
    if not src.exists():
        src.write_text("".join(json.dumps({"id": f"d{i}", "text": f"Document {i} has a few plain sentences. "
                                           "Nothing in it is special at all."}) + "\n" for i in range(6)))
        (tmp_path / "sources.yaml").write_text(yaml.safe_dump(
            {"sources": {"rp_books": {"inputs": [str(src)], "filters": "none", "dedupe": "none"}}}))
    cmd = [sys.executable, "-m", "pipelines.build", "--mixture", "mpt30b_2k", "--sources", str(tmp_path / "sources.yaml"),
           "--out", str(tmp_path / name), "--tokenizer", tokenizer_path, "--skip-mixture", "--workers", "2", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


@needs_shared("tokenizers")
def test_default_output_has_no_beam_startup_noise_and_verbose_shows_it(tmp_path, tokenizer_path):
    quiet = _build(tmp_path, tokenizer_path, "out")
    text = quiet.stdout + quiet.stderr
    assert quiet.returncode == 0, text[-4000:]
    assert "per-source shards" in text and "rp_books" in text  # the build ran and reported
    assert [n for n in NOISE if n in text] == [], text

    loud = _build(tmp_path, tokenizer_path, "out-v", "-v")
    text = loud.stdout + loud.stderr
    assert loud.returncode == 0, text[-4000:]
    assert "per-source shards" in text
    # Beam's logging is back: the driver's import-time notice and the workers' start-up lines
    assert "apitools not found" in text and "Logging handler created" in text, text[-4000:]
    # the local runner is the FnApiRunner itself: no PrismRunner attempt (a GitHub download, another engine)
    assert "Prism" not in text and "prism" not in text, text[-4000:]
