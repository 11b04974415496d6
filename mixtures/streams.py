"""python -m mixtures.streams MIXTURE_DIR [--root DIR | --remote URI] [--out FILE]

Write a mixture's streams with the paths a trainer that does not resolve them itself needs. A mixture's own
``streams.yaml`` has ``local:`` paths relative to its folder, so the folder can be moved or copied and
``trainer.train`` still finds its streams; llm-foundry resolves ``local:`` against its working directory, so
give it absolute paths of where the folder is now (the default), of where it will be (``--root``), or the
object-store URIs of a copy (``--remote``). The format is ``contract.streams``'.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from contract import layout
from contract.streams import streams_yaml

EPILOG = """
examples:
  python -m mixtures.streams out/mixtures/mpt30b_8k                     # absolute paths of the folder, to stdout
  python -m mixtures.streams /data/mpt30b_8k --out /data/mpt30b_8k/streams.abs.yaml
  python -m mixtures.streams out/mixtures/mpt30b_8k --root /mnt/nfs/mpt30b_8k   # where it will be copied
  python -m mixtures.streams out/mixtures/mpt30b_8k --remote s3://bucket/mpt30b_8k  # after uploading the folder
then in llm-foundry: train_loader.dataset.streams = the written mapping (max_seq_len as its header says).
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mixtures.streams", description=__doc__.split("\n\n")[1],
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mixture", help="a mixture folder (OUT/mixtures/<name>, holding manifest.json)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--root", help="local folder the mixture is (or will be) at (default: MIXTURE's absolute path)")
    where.add_argument("--remote", help="gs:// or s3:// prefix the mixture folder was uploaded to (remote: entries)")
    ap.add_argument("--out", help="file to write (default: standard output)")
    args = ap.parse_args(argv)
    manifest_path = os.path.join(args.mixture, "manifest.json")
    try:
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        print(f"error: {manifest_path} does not exist: MIXTURE must be a mixture folder written by the build "
              "(OUT/mixtures/<name>)", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {manifest_path}: not JSON ({e}); rebuild the mixture", file=sys.stderr)
        return 2
    if args.remote and not layout.is_remote(args.remote):
        print(f"error: --remote {args.remote!r}: expected a gs:// or s3:// prefix (use --root for a local folder)",
              file=sys.stderr)
        return 2
    root = args.remote.rstrip("/") if args.remote else os.path.abspath(args.root or args.mixture)
    text = streams_yaml(manifest, root)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"{args.out}: {len(manifest['streams'])} streams under {root}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
