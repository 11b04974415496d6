"""SemDedup embedders side by side: documents per CPU-second (or per second on a GPU) and removal parity with
today's reference path (fp32 all-MiniLM-L6-v2 on the CPU, 256 word pieces).

Corpus: the 1,000 c4_en documents of ../shared/corpora, ``--rounds`` rewrites of them
(benchmarks/make_scale_corpus.py: every third word replaced, paragraphs rotated: paraphrase families) and
``--planted`` near-copies (pipelines/dedupe/planted.py edits). Every row runs the whole SemDedup policy
(``semantic.removals_in_memory``, what the Beam graph computes) at keep 0.8 on its embeddings and reports
the Jaccard of its removed set with the reference's, and how many planted (original, copy) pairs lost a
member. One table; the reference row is the ceiling of parity (1.0) and the floor of speed (1.0x).

    python benchmarks/semdedup_embed.py                     # CPU rows
    python benchmarks/semdedup_embed.py --device cuda       # GPU rows (+ the CPU reference for parity)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def corpus(corpora: Path, rounds: int, planted: int) -> tuple[list[str], list[tuple[int, int]]]:
    import zstandard

    from benchmarks.make_scale_corpus import rewrite
    from pipelines.dedupe.planted import make_variant

    with open(corpora / "c4_en.jsonl.zst", "rb") as f:
        raw = zstandard.ZstdDecompressor().stream_reader(f).read().decode()
    base = [json.loads(line)["text"] for line in raw.splitlines() if line.strip()]
    vocab = sorted({w for t in base for w in t.split() if len(w) < 24})
    texts = list(base)
    for r in range(1, rounds + 1):
        rng = np.random.default_rng([zlib.crc32(b"c4_en"), r])
        texts += [rewrite(t, r, vocab, rng) for t in base]
    rr = random.Random(5)
    pairs = []
    for _ in range(planted):
        j = rr.randrange(len(base))
        pairs.append((j, len(texts)))
        texts.append(make_variant(base[j], rr.choice(["insert_delete", "typos", "boilerplate", "drop_sentences"]),
                                  rr.uniform(0.3, 1.0), rr))
    return texts, pairs


def margins(uids, ref, other, flipped, cfg) -> str:
    """Whether the documents removed by only one of two embedders are float noise at the cut-off: each such
    document's reference score M lies no farther from the reference's cut-off than its own score and the
    cut-off moved between the two embedders."""
    from pipelines.dedupe import semantic

    def m_of(emb):
        scored, cutoff = semantic.scores_in_memory(uids, emb, cfg)
        return {uids[i]: float(mi) for order, m in scored for i, mi in zip(order, m)}, cutoff[0]

    (m_ref, cut), (m_other, cut_other) = m_of(ref), m_of(other)
    far = [abs(m_ref[u] - cut) for u in flipped]
    unexplained = sum(abs(m_ref[u] - cut) > abs(m_ref[u] - m_other[u]) + abs(cut - cut_other) + 1e-6 for u in flipped)
    return (f"{len(flipped)} documents removed by one only, at most {max(far, default=0.0):.1e} from the cut-off M "
            f"{cut:.4f}; {unexplained} farther than their own score moved")


def timed(fn, device: str):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.process_time() - c, time.perf_counter() - w


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpora", default=str(REPO.parent / "shared" / "corpora"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--planted", type=int, default=150)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--rows", nargs="+", default=None, help="subset of row names")
    ap.add_argument("--repeat", type=int, default=1, help="GPU rows: documents repeated to measure steady rate")
    ap.add_argument("--save-reference", metavar="NPZ", help="write the reference row (embeddings, rate) to NPZ")
    ap.add_argument("--reference", metavar="NPZ",
                    help="take the reference row from --save-reference's file (same corpus options) instead of "
                         "computing it: GPU hosts with little time")
    ap.add_argument("--cpu-threads", type=int, default=1,
                    help="torch threads of the CPU transformer rows (a GPU host: more, to finish the reference)")
    a = ap.parse_args()
    import torch

    from pipelines.dedupe import semantic
    from pipelines.dedupe.config import SemDedupConfig
    from pipelines.dedupe.embed import MiniLM, StaticMiniLM, _package_dir
    from pipelines.dedupe.wordpiece import WordPieces

    torch.set_num_threads(a.cpu_threads)
    texts, pairs = corpus(Path(a.corpora), a.rounds, a.planted)
    uids = list(range(len(texts)))
    cfg = SemDedupConfig()

    def int8():
        m = MiniLM("cpu", a.cpu_threads)
        m.model = torch.ao.quantization.quantize_dynamic(m.model, {torch.nn.Linear}, dtype=torch.qint8)
        return m

    def short():
        m = MiniLM("cpu", a.cpu_threads)
        m.pieces = WordPieces(_package_dir() / "tokenizer.json", 128, True)
        return m

    def gpu_fp32():
        return MiniLM("cuda", precision="fp32")  # TF32 stays off for matmuls (torch's default): the CPU's arithmetic

    rows = {"minilm-l6 fp32 256 (reference)": ("cpu", lambda: MiniLM("cpu", a.cpu_threads)),
            "minilm-l6 int8 (torch dynamic) 256": ("cpu", int8),
            "minilm-l6 fp32 128 word pieces": ("cpu", short),
            "static-minilm-l6 (default)": ("cpu", lambda: StaticMiniLM("cpu"))}
    if a.device == "cuda":
        rows = {"minilm-l6 fp32 256 (reference)": rows["minilm-l6 fp32 256 (reference)"],
                "static-minilm-l6 (default)": rows["static-minilm-l6 (default)"],
                "minilm-l6 fp16 256, cuda": ("cuda", lambda: MiniLM("cuda")),
                "minilm-l6 fp32 256, cuda": ("cuda", gpu_fp32),
                "static-minilm-l6, cuda": ("cuda", lambda: StaticMiniLM("cuda"))}
    if a.rows:
        rows = {k: v for k, v in rows.items() if any(r in k for r in a.rows)}
    results, ref = [], None
    digest = hashlib.sha256("\0".join(texts).encode("utf-8", "surrogatepass")).hexdigest()
    if a.reference:
        z = np.load(a.reference)
        if str(z["digest"]) != digest:
            sys.exit(f"{a.reference}: made from another corpus (different --corpora/--rounds/--planted)")
        e = z["emb"]
        ref = (set(semantic.removals_in_memory(uids, e, cfg)), e)
        name = "minilm-l6 fp32 256 (reference)"
        results.append((name + f", from {Path(a.reference).name}", "cpu", float(z["rate"]), 1.0,
                        sum(1 for x, y in pairs if x in ref[0] or y in ref[0]), len(ref[0]), e))
        rows.pop(name, None)
    for name, (device, make) in rows.items():
        model = make()
        model.embed(texts[:64])  # warm-up (graph/kernels/caches)
        e, cpu, wall = timed(lambda: model.embed(texts), device)
        if device == "cuda" and a.repeat > 1:
            _e, _c, wall = timed(lambda: model.embed(texts * a.repeat), device)
            wall /= a.repeat
        removed = semantic.removals_in_memory(uids, e, cfg)
        if ref is None:
            ref = (set(removed), e)
        r = set(removed)
        jac = len(r & ref[0]) / max(1, len(r | ref[0]))
        found = sum(1 for x, y in pairs if x in r or y in r)
        rate = len(texts) / (wall if device == "cuda" else cpu)
        results.append((name, device, rate, jac, found, len(r), e))
        if a.save_reference and len(results) == 1:
            np.savez(a.save_reference, emb=e, rate=rate, digest=digest)
        print(f"  {name}: {rate:,.0f} docs/s, Jaccard {jac:.3f}", file=sys.stderr, flush=True)
    base = results[0][2]
    print(f"\n{len(texts):,} c4_en documents ({a.rounds} rewrite rounds, {a.planted} planted copies), keep 0.8, "
          f"torch threads {a.cpu_threads}; CPU rows: documents per CPU-second; GPU rows: documents per wall second "
          f"({torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'})")
    print("| embedder | device | docs/s | vs reference | removed | Jaccard vs reference | planted pairs found |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, device, rate, jac, found, n, _e in results:
        print(f"| {name} | {device} | {rate:,.0f} | {rate / base:.1f}x | {n} | {jac:.3f} | {found}/{len(pairs)} |")
    by = {n: (set(semantic.removals_in_memory(uids, e, cfg)), e) for n, _d, _r, _j, _f, _n, e in results}
    ref_name = results[0][0]
    for scale in (1e-5, 1e-4):  # the policy's own sensitivity: the reference itself, moved by float noise
        noisy = by[ref_name][1] + np.random.default_rng(0).normal(scale=scale, size=by[ref_name][1].shape)
        noisy = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)
        r = set(semantic.removals_in_memory(uids, noisy, cfg))
        print(f"control: {ref_name} + N(0, {scale:g}) per coordinate: removed sets Jaccard "
              f"{len(r & by[ref_name][0]) / max(1, len(r | by[ref_name][0])):.4f}; "
              + margins(uids, by[ref_name][1], noisy, r ^ by[ref_name][0], cfg))
    for cpu_name, gpu_name in ((ref_name, "minilm-l6 fp16 256, cuda"), (ref_name, "minilm-l6 fp32 256, cuda"),
                               ("static-minilm-l6 (default)", "static-minilm-l6, cuda")):
        if cpu_name in by and gpu_name in by:
            a_, b_ = by[cpu_name], by[gpu_name]
            cos = float(np.min(np.sum(a_[1] * b_[1], axis=1)))
            jac = len(a_[0] & b_[0]) / max(1, len(a_[0] | b_[0]))
            print(f"{gpu_name} vs {cpu_name}: removed sets Jaccard {jac:.4f}"
                  f", max |embedding difference| {float(np.abs(a_[1] - b_[1]).max()):.2e}, min cosine {cos:.6f}; "
                  + margins(uids, a_[1], b_[1], a_[0] ^ b_[0], cfg))


if __name__ == "__main__":
    main()
