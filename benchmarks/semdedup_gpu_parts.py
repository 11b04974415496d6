"""Where the GPU SemDedup embedder's time goes: cutting word pieces (``tokenizers`` as the reference and
ceiling, our ``WordPieces`` on one core and ``PiecePool`` on the host's cores) vs the transformer forward alone
(pre-tokenized, length-sorted fp16 batches, SDPA). One table of documents per second of each part alone, so
the end-to-end rate of ``benchmarks/semdedup_embed.py --device cuda`` can be read against them. Without CUDA
only the host rows run (the pieces are what a CPU worker's static model spends its time on, too).

    python benchmarks/semdedup_gpu_parts.py --corpora DIR --repeat 10
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rate(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", default=str(REPO.parent / "shared" / "corpora"))
    ap.add_argument("--repeat", type=int, default=10)
    a = ap.parse_args()
    import torch
    from tokenizers import Tokenizer

    from benchmarks.semdedup_embed import corpus
    from pipelines.dedupe.embed import MiniLM, _package_dir
    from pipelines.dedupe.wordpiece import PiecePool, WordPieces

    texts, _pairs = corpus(Path(a.corpora), 3, 150)
    texts = [t[:2000] for t in texts] * a.repeat
    path = _package_dir() / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(MiniLM.MAX_PIECES)
    tok.no_padding()
    one = texts[:4000]
    cores = os.cpu_count() or 1
    rows = []
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    rows.append(("tokenizers encode_batch_fast, one thread", "-", rate(lambda: tok.encode_batch_fast(one), len(one))))
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    rows.append((f"tokenizers encode_batch_fast, its thread pool ({cores} cores)", "-",
                 rate(lambda: tok.encode_batch_fast(texts), len(texts))))
    wp = WordPieces(path, MiniLM.MAX_PIECES, True)
    wp.encode(one)  # the word cache warm, as in a worker after its first bundle
    rows.append(("WordPieces, one process (warm word cache)", "-", rate(lambda: wp.encode(one), len(one))))
    pool = PiecePool(path, MiniLM.MAX_PIECES, True)
    pool.encode(texts[:20000])  # processes started, caches warm
    rows.append((f"PiecePool, {max(1, cores - 1)} processes", "-", rate(lambda: pool.encode(texts), len(texts))))
    pool.close()
    lens, flat = wp.encode(texts)
    if torch.cuda.is_available():
        from transformers import AutoModel

        order = np.argsort(-lens, kind="stable")
        starts = np.cumsum(lens) - lens
        model = AutoModel.from_pretrained(str(_package_dir()), dtype=torch.float16,
                                          attn_implementation="sdpa").cuda().eval()
        for bs in (1024, 4096):
            batches = []
            for s in range(0, len(order), bs):
                idx = order[s:s + bs]
                x = np.zeros((len(idx), int(lens[idx[0]])), np.int64)
                for r, i in enumerate(idx.tolist()):
                    x[r, :lens[i]] = flat[starts[i]:starts[i] + lens[i]]
                batches.append((torch.from_numpy(x).cuda(), torch.from_numpy(lens[idx]).cuda()))

            def forward():
                with torch.inference_mode():
                    for x, n in batches:
                        mask = (torch.arange(x.shape[1], device="cuda") < n[:, None]).long()
                        model(input_ids=x, attention_mask=mask).last_hidden_state
                torch.cuda.synchronize()

            forward()  # warm-up
            rows.append(("forward only (fp16, sdpa)", bs, rate(forward, len(texts))))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    print(f"{len(texts):,} c4_en documents ({a.repeat}x the semdedup_embed corpus), {lens.mean():.0f} word pieces "
          f"per document on average; {device}, {cores} host cores")
    print("| part | batch | docs/s |")
    print("|---|---:|---:|")
    for name, bs, r in rows:
        print(f"| {name} | {bs} | {r:,.0f} |")


if __name__ == "__main__":
    main()
