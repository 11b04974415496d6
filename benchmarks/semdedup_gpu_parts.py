"""Where the GPU SemDedup embedder's time goes: word-piece tokenization (the tokenizer's thread pool) vs the
transformer forward alone (pre-tokenized, length-sorted batches), per batch size and attention kernel.
One table; docs/s of each part alone, so the end-to-end rate of ``benchmarks/semdedup_embed.py`` can be read
against them (it is bounded by the slower part while the two do not overlap).

    python benchmarks/semdedup_gpu_parts.py --corpora DIR --repeat 10
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", default=str(REPO.parent / "shared" / "corpora"))
    ap.add_argument("--repeat", type=int, default=10)
    a = ap.parse_args()
    import torch
    from transformers import AutoModel

    from benchmarks.semdedup_embed import corpus
    from pipelines.dedupe.embed import MiniLM, _encode, _flatten, _package_dir

    texts, _pairs = corpus(Path(a.corpora), 3, 150)
    texts = [t[:2000] for t in texts] * a.repeat
    m = MiniLM("cuda")
    rows = []
    t = time.perf_counter()
    encs = _encode(m.tok, texts, parallel=True)
    rows.append(("tokenize whole text (thread pool)", "-", "-", len(texts) / (time.perf_counter() - t)))
    t = time.perf_counter()
    encs_first = m.encodings(texts, parallel=True)
    rows.append(("MiniLM.encodings: prefix first (thread pool)", "-", "-", len(texts) / (time.perf_counter() - t)))
    t = time.perf_counter()
    _flatten(encs_first)
    rows.append(("ids to arrays (one thread, holds the GIL)", "-", "-", len(texts) / (time.perf_counter() - t)))
    t = time.perf_counter()
    _encode(m.tok, texts[:4000], parallel=False)
    rows.append(("tokenize (one thread)", "-", "-", 4000 / (time.perf_counter() - t)))
    lens = np.array([len(e.ids) for e in encs])
    order = np.argsort(-lens, kind="stable")
    ids_all = [encs[i].ids for i in order.tolist()]
    for attn in ("sdpa", "eager"):
        model = AutoModel.from_pretrained(str(_package_dir()), dtype=torch.float16,
                                          attn_implementation=attn).cuda().eval()
        for bs in (256, 1024, 4096):
            batches = []
            for s in range(0, len(ids_all), bs):
                chunk = ids_all[s:s + bs]
                x = np.zeros((len(chunk), len(chunk[0])), np.int64)
                for r, row in enumerate(chunk):
                    x[r, :len(row)] = row
                batches.append((torch.from_numpy(x).cuda(), torch.from_numpy(lens[order[s:s + bs]]).cuda()))
            with torch.inference_mode():
                for x, n in batches[:2]:  # warm-up
                    model(input_ids=x, attention_mask=(torch.arange(x.shape[1], device="cuda") < n[:, None]).long())
                torch.cuda.synchronize()
                t = time.perf_counter()
                for x, n in batches:
                    mask = (torch.arange(x.shape[1], device="cuda") < n[:, None]).long()
                    model(input_ids=x, attention_mask=mask).last_hidden_state
                torch.cuda.synchronize()
            rows.append(("forward only (fp16)", attn, bs, len(texts) / (time.perf_counter() - t)))
    tokens = int(lens.sum())
    print(f"{len(texts):,} c4_en documents ({a.repeat}x the semdedup_embed corpus), {tokens / len(texts):.0f} word "
          f"pieces per document on average; {torch.cuda.get_device_name()}")
    print("| part | attention | batch | docs/s |")
    print("|---|---|---:|---:|")
    for name, attn, bs, rate in rows:
        print(f"| {name} | {attn} | {bs} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
