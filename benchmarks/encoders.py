"""NeoX encoders side by side: MB/s per core on each category of ../shared/corpora, and ids-identical to
`tokenizers` (issue 13, item 1).

Each (encoder, threads) row runs in its own subprocess (thread pools read RAYON_NUM_THREADS etc. at start),
rows interleaved and repeated, best of --repeat kept. "MB/s per core" = text MB / CPU seconds of the
process (all its threads), which is what the machine pays and holds up when the machine is shared; the
wall-clock MB/s of the whole slice is given too. Rows:
  tokenizers          encode_batch_fast (the reference), 1 thread and all threads (rayon)
  tokenizers per doc  encode_batch_fast([text]) one document at a time (a fused per-document path today)
  NeoXTokenizer       our API, encode_batch(texts, eos=False) -> uint16 arrays (auto: the adopted encoder,
                      one BPE thread unless FASTOKENS_BPE_THREADS says otherwise), in batches of 512 and
                      one document at a time
  fastokens           encode_batch_flat, 1 thread and all threads
  tiktoken            Encoding built from NeoX's ranks (regex made to keep 2-24-space runs whole, as NeoX's
                      added tokens do; Python NFC; texts with special-token strings routed to tokenizers)
  tokie, gigatoken, kitoken   their tokenizer.json loaders, batch API, 1 thread and parallel
ids identical: every category slice, the adversarial set and the 1 MB documents of tokenization/parity.py
(all or nothing; the first failing class is named). --sweep adds every Unicode code point in seven
contexts (slow: minutes per encoder).
Usage: python benchmarks/encoders.py [--mb-per-category 1] [--repeat 2] [--candidates-path DIR] [--sweep]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
TOK = SHARED / "tokenizers" / "gpt-neox-20b" / "tokenizer.json"
BATCH = 512

ROWS = [  # (label, encoder, threads: 1, 0 = all cores, -1 = the environment as it is (our API's defaults))
    ("tokenizers encode_batch_fast, 1 thread", "tokenizers", 1),
    ("tokenizers encode_batch_fast, all threads", "tokenizers", 0),
    ("tokenizers per document (batch of 1), 1 thread", "tokenizers-doc", 1),
    ("NeoXTokenizer.encode_batch (auto, default threads)", "api", -1),
    ("NeoXTokenizer.encode_batch per document (auto, default threads)", "api-doc", -1),
    ("fastokens 0.3.5, 1 thread", "fastokens", 1),
    ("fastokens 0.3.5, all threads", "fastokens", 0),
    ("tiktoken (NeoX ranks), 1 thread", "tiktoken", 1),
    ("tiktoken (NeoX ranks), all threads", "tiktoken", 0),
    ("tokie, 1 thread", "tokie", 1),
    ("tokie, all threads", "tokie", 0),
    ("gigatoken, 1 thread", "gigatoken", 1),
    ("gigatoken, all threads", "gigatoken", 0),
    ("kitoken, 1 thread", "kitoken", 1),
    ("kitoken, all threads", "kitoken", 0),
]


def load_slices(mb_per_category: float) -> dict[str, list[str]]:
    import zstandard

    from contract.registry import SOURCE_NAMES

    out = {}
    for name in SOURCE_NAMES:
        with open(SHARED / "corpora" / f"{name}.jsonl.zst", "rb") as f:
            raw = zstandard.ZstdDecompressor().stream_reader(f).read()
        texts, size = [], 0
        for line in raw.decode().splitlines():
            if size >= mb_per_category * 1e6:
                break
            t = json.loads(line)["text"]
            texts.append(t)
            size += len(t.encode())
        out[name] = texts
    return out


# ------------------------------------------------------------------------------------------- encoders


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# GPT-2's pattern, except that no alternative may consume the first of two spaces: runs of 2-24 spaces are
# NeoX added tokens, split off before pre-tokenization (leftmost-longest), so they become pieces of their own.
TIKTOKEN_PAT = (r"""(?: {2,24})|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
                r"""|(?:(?!  )\s)+(?!\S)|(?:(?!  )\s)+""")


def tiktoken_neox(raw_json: str):
    """tiktoken Encoding over NeoX's vocabulary. Ranks = NeoX ids (merge results are numbered in merge
    order, so tiktoken's lowest-rank-first merging is NeoX's merge priority); space runs map to the added ids."""
    import tiktoken

    d = json.loads(raw_json)
    dec = {c: b for b, c in _bytes_to_unicode().items()}
    ranks = {bytes(dec[c] for c in tok): i for tok, i in d["model"]["vocab"].items() if i >= 2}
    for t in d["added_tokens"]:
        if not t["special"]:
            ranks[t["content"].encode()] = t["id"]
    nxt = 50277
    for b in range(256):  # bytes that never occur in UTF-8 are absent from NeoX; tiktoken wants all 256
        if bytes([b]) not in ranks:
            ranks[bytes([b])] = nxt
            nxt += 1
    return tiktoken.Encoding("neox", pat_str=TIKTOKEN_PAT, mergeable_ranks=ranks, special_tokens={})


def make_encoder(name: str, threads: int):
    """fn(list[str]) -> list of id sequences, for one (encoder, threads) row."""
    raw = TOK.read_text(encoding="utf-8")
    cores = os.cpu_count() or 1
    if name in ("tokenizers", "tokenizers-doc"):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(raw)
        if name == "tokenizers-doc":  # what a fused per-document path would call today
            return lambda texts: [tok.encode_batch_fast([t], add_special_tokens=False)[0].ids for t in texts]
        return lambda texts: [e.ids for e in tok.encode_batch_fast(texts, add_special_tokens=False)]
    if name in ("api", "api-doc"):
        from tokenization import NeoXTokenizer

        tok = NeoXTokenizer(str(TOK))
        print(f"api encoder: {tok.encoder}", file=sys.stderr)
        if name == "api-doc":
            return lambda texts: [tok.encode_batch([t], eos=False)[0] for t in texts]
        return lambda texts: tok.encode_batch(texts, eos=False)
    if name == "fastokens":
        import fastokens

        tok = fastokens.Tokenizer.from_json_str(raw)

        def enc(texts):
            ids, off = tok.encode_batch_flat(texts, add_special_tokens=False)
            ids, off = np.frombuffer(ids, np.uint32), np.frombuffer(off, np.uint64)
            return [ids[off[i]:off[i + 1]] for i in range(len(texts))]
        return enc
    if name == "tiktoken":
        import unicodedata

        from tokenizers import Tokenizer

        tt, ref = tiktoken_neox(raw), Tokenizer.from_str(raw)

        def prep(t):
            return t if t.isascii() else unicodedata.normalize("NFC", t)

        def enc(texts):
            out = [None] * len(texts)
            plain = [i for i, t in enumerate(texts) if "<|endoftext|>" not in t and "<|padding|>" not in t]
            for i in set(range(len(texts))) - set(plain):
                out[i] = ref.encode(texts[i], add_special_tokens=False).ids
            res = tt.encode_ordinary_batch([prep(texts[i]) for i in plain], num_threads=threads or cores)
            for i, ids in zip(plain, res):
                out[i] = ids
            return out
        return enc
    if name == "tokie":
        import tokie

        tok = tokie.Tokenizer.from_json(str(TOK))
        return lambda texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    if name == "gigatoken":
        import gigatoken

        tok = gigatoken.Tokenizer.from_json(raw)
        return lambda texts: tok.encode_batch_list(texts, parallel=threads != 1)
    if name == "kitoken":
        import kitoken

        tok = kitoken.Kitoken.from_tokenizers(raw.encode())
        return lambda texts: tok.encode_all(texts, True)
    raise ValueError(name)


def ids_digest(seqs) -> str:
    h = hashlib.sha256()
    for s in seqs:
        a = np.asarray(s, dtype=np.uint32)
        h.update(len(a).to_bytes(8, "little"))
        h.update(a.tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- worker


def worker(name: str, threads: int, mb: float, parity: bool, sweep: bool) -> dict:
    from tokenization.parity import (
        adversarial_texts,
        all_codepoints,
        big_texts,
        codepoint_probes,
    )

    res: dict = {"cats": {}, "digests": {}}
    try:
        enc = make_encoder(name, threads)
        enc(["warm up"] * 4)
    except ImportError as e:
        return {"error": f"not installed ({e.name})"}
    for cat, texts in load_slices(mb).items():
        nbytes = sum(len(t.encode()) for t in texts)
        out = []
        w, c = time.perf_counter(), time.process_time()
        for i in range(0, len(texts), BATCH):
            out += enc(texts[i:i + BATCH])
        res["cats"][cat] = (time.perf_counter() - w, time.process_time() - c, nbytes)
        res["digests"][cat] = ids_digest(out)
    if parity:
        checks = [("adversarial", lambda: adversarial_texts())]
        checks += [(f"1 MB {k}", lambda v=v: [v]) for k, v in big_texts().items()]
        if sweep:
            checks.append(("code points", lambda: [p for c in all_codepoints() for p in codepoint_probes(chr(c))]))
        for label, texts_fn in checks:
            texts = texts_fn()
            try:
                out = []
                for i in range(0, len(texts), 4096):
                    out += enc(texts[i:i + 4096])
                res["digests"][label] = ids_digest(out)
            except BaseException as e:  # noqa: BLE001 - a Rust panic is a BaseException
                res["digests"][label] = f"error: {type(e).__name__}: {str(e)[:80]}"
    return res


def run_row(name, threads, args) -> dict:
    env = dict(os.environ)
    if threads == 1:
        env.update(RAYON_NUM_THREADS="1", FASTOKENS_BPE_THREADS="1", TOKENIZERS_PARALLELISM="false")
    elif threads == 0:
        env.pop("RAYON_NUM_THREADS", None)
        env["FASTOKENS_BPE_THREADS"] = str(os.cpu_count() or 1)
    if args.candidates_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH", ""), str(REPO), args.candidates_path]))
    cmd = [sys.executable, __file__, "--worker", name, "--threads", str(threads), "--mb-per-category",
           str(args.mb_per_category)] + (["--parity"] if args.parity_now else []) + (["--sweep"] if args.sweep else [])
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except Exception:
        return {"error": f"worker failed: {p.stderr.strip().splitlines()[-1][:160] if p.stderr.strip() else p.returncode}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb-per-category", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=2, help="best of N (rows interleaved)")
    ap.add_argument("--candidates-path", default=os.environ.get("ENCODER_CANDIDATES"),
                    help="extra sys.path dir holding candidate packages not in the venv (pip install --target)")
    ap.add_argument("--only", nargs="*", help="encoder names to run (default: all)")
    ap.add_argument("--sweep", action="store_true", help="also every code point in seven contexts (slow)")
    ap.add_argument("--worker")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--parity", action="store_true")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.mb_per_category, args.parity, args.sweep)))
        return
    if not TOK.exists():
        sys.exit(f"needs {TOK}")
    rows = [r for r in ROWS if not args.only or r[1] in args.only or r == ROWS[0]]
    best: dict[str, dict] = {}
    for rep in range(args.repeat):
        for label, name, threads in rows:
            args.parity_now = rep == 0  # parity digests once per row (untimed)
            r = run_row(name, threads, args)
            if "error" in r:
                best[label] = r
                continue
            prev = best.get(label)
            if prev is None:
                best[label] = r
            else:
                for cat, v in r["cats"].items():
                    if v[1] < prev["cats"][cat][1]:
                        prev["cats"][cat] = v
            print(f"  rep {rep} {label}: {sum(v[2] for v in r['cats'].values()) / sum(v[1] for v in r['cats'].values()) / 1e6:.2f} MB/cpu-s",
                  file=sys.stderr, flush=True)
    ref = best[rows[0][0]]
    cats = list(ref["cats"])
    ref_overall = sum(v[2] for v in ref["cats"].values()) / sum(v[1] for v in ref["cats"].values())
    mb = sum(v[2] for v in ref["cats"].values()) / 1e6
    cpu = os.cpu_count()
    print(f"\n{mb:.1f} MB of text ({args.mb_per_category:g} MB from each of {len(cats)} categories), {cpu} cores, "
          f"load avg {os.getloadavg()[0]:.1f}; MB/s per core = MB / CPU-seconds of the encoding process, best of {args.repeat}")
    short = {c: c.replace("rp_", "").replace("stack_", "st_")[:10] for c in cats}
    print("| encoder | " + " | ".join(short[c] for c in cats) + " | overall MB/s/core | wall MB/s | vs tokenizers 1 thr | ids identical |")
    print("|---|" + "---:|" * (len(cats) + 3) + "---|")
    for label, _, _ in rows:
        r = best[label]
        if "error" in r:
            print(f"| {label} | " + " | ".join("-" for _ in cats) + f" | - | - | - | {r['error']} |")
            continue
        per = [r["cats"][c][2] / r["cats"][c][1] / 1e6 for c in cats]
        overall = sum(v[2] for v in r["cats"].values()) / sum(v[1] for v in r["cats"].values())
        wall = sum(v[2] for v in r["cats"].values()) / sum(v[0] for v in r["cats"].values())
        bad = [k for k, d in ref["digests"].items() if r["digests"].get(k) != d]
        ident = "yes" if not bad else f"no ({bad[0]}{' +' + str(len(bad) - 1) if len(bad) > 1 else ''})"
        errs = [v for v in r["digests"].values() if str(v).startswith("error")]
        if errs:
            ident += f"; {errs[0][7:60]}"
        print(f"| {label} | " + " | ".join(f"{p:.2f}" for p in per)
              + f" | {overall / 1e6:.2f} | {wall / 1e6:.2f} | {overall / ref_overall:.1f}x | {ident} |")


if __name__ == "__main__":
    main()
