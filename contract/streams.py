"""``streams.yaml``: a mixture's streams, written by ``mixtures.build`` and read by the trainer and llm-foundry.

A mapping stream name -> mosaicml-streaming ``Stream`` kwargs (``local`` or ``remote``, and ``choose``: an
absolute per-epoch sample count), optionally under a top-level ``streams:`` key, as llm-foundry's
``train_loader.dataset.streams`` takes it.

Why ``local:`` paths are relative (to the folder holding the file): a mixture folder is the hand-off between the
machine that built it and the machines that train on it, and it is copied or moved far more often than it is
used in place. With relative paths the folder is the same bytes wherever it lies, and ``trainer.train`` resolves
them against the streams file it was given. llm-foundry resolves ``local:`` against its working directory: for it,
``python -m mixtures.streams MIXTURE_DIR [--root DIR | --remote URI]`` writes the same streams with the absolute
paths (or the object-store URIs) of wherever the folder is now. A mixture written to gs:// or s3:// gets
``remote:`` URIs (streaming caches what it downloads).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from contract import layout

STREAM_KEYS = {"remote", "local", "split", "proportion", "repeat", "choose", "download_retry",
               "download_timeout", "validate_hash", "keep_zip"}


def streams_yaml(manifest: Mapping, root: Optional[str] = None) -> str:
    """The streams of a mixture ``manifest``: ``local:`` paths relative to the streams file (``root`` None), under
    the local folder ``root``, or ``remote:`` URIs under a gs:// / s3:// ``root``."""
    m = manifest
    head = (f"# Streams of mixture {m['name']}: {m['budget']['samples']:,} samples of {m['seq_len']} tokens per epoch "
            f"(seed {m['seed']}).\n"
            f"# For llm-foundry train_loader.dataset.streams (max_seq_len: {m['seq_len']}, no epoch_size: choose is an\n"
            f"# absolute per-epoch sample count), or data.streams of trainer.train.")
    if root is None:
        head += ("\n# local: paths are relative to this file's folder (trainer.train resolves them so). For llm-foundry,\n"
                 "# which resolves them against its working directory, write absolute ones where the folder is now:\n"
                 "#   python -m mixtures.streams THIS_FOLDER --out streams.abs.yaml   (or --root DIR / --remote URI)")
    where = "remote" if root is not None and layout.is_remote(root) else "local"
    body = {name: {where: s["path"] if root is None else layout.join(root, s["path"]), "choose": s["choose"]}
            for name, s in m["streams"].items()}
    return head + "\n" + yaml.safe_dump(body, sort_keys=False)


def read_streams(spec: Any) -> dict[str, dict]:
    """Normalise a streams spec (path or URL of a streams.yaml, a mixture folder holding one, or a mapping) to
    name -> Stream kwargs; relative ``local`` paths are resolved against the folder of the file they are in."""
    base = Path.cwd()
    where = "streams"
    if isinstance(spec, str) and "://" in spec:  # a mixture written to gs:// or s3://: its streams are remote too
        import tempfile

        from streaming.base.storage.download import CloudDownloader

        url = spec if spec.endswith((".yaml", ".yml")) else spec.rstrip("/") + "/" + layout.STREAMS
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, layout.STREAMS)
            try:
                CloudDownloader.direct_download(url, local)
            except Exception as e:
                raise FileNotFoundError(f"cannot fetch {url}: {type(e).__name__}: {e} (for s3:// set "
                                        "S3_ENDPOINT_URL and AWS credentials as mosaicml-streaming expects)") from None
            spec = yaml.safe_load(Path(local).read_text())
        where = url
    elif isinstance(spec, (str, Path)):
        path = Path(spec)
        if path.is_dir():
            path = path / layout.STREAMS
        if not path.is_file():
            raise FileNotFoundError(f"streams file {path} does not exist; point data.streams at a mixture's "
                                    f"{layout.STREAMS} (OUT/mixtures/<name>/{layout.STREAMS}) or its directory")
        where, base = str(path), path.parent
        spec = yaml.safe_load(path.read_text())
    if isinstance(spec, dict) and isinstance(spec.get("streams"), dict):
        spec = spec["streams"]
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"{where}: expected a non-empty mapping name -> {{local|remote, proportion|repeat|choose}}")
    out = {}
    for name, kw in spec.items():
        if not isinstance(kw, dict):
            raise TypeError(f"{where}: stream '{name}' must be a mapping, got {type(kw).__name__}")
        bad = set(kw) - STREAM_KEYS
        if bad:
            raise ValueError(f"{where}: stream '{name}' has unknown keys {sorted(bad)}; allowed: {sorted(STREAM_KEYS)}")
        if "local" not in kw and "remote" not in kw:
            raise ValueError(f"{where}: stream '{name}' needs 'local' or 'remote'")
        kw = dict(kw)
        local = kw.get("local")
        if local is not None and "://" not in str(local) and not Path(local).is_absolute():
            kw["local"] = str((base / local).resolve())
        out[str(name)] = kw
    return out
