"""Dedupe settings from the sources YAML (``dedupe: default | none | {exact, minhash, semantic}``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from contract.config import ConfigError, build, is_number, require

MINHASH_SCHEME = "oph-v1"  # one-permutation MinHash, optimal densification (pipelines/dedupe/minhash.py)


@dataclass(frozen=True)
class MinHashConfig:
    """MinHash-LSH near-dup settings (semantics in pipelines/dedupe/minhash.py and components.py).

    threshold: the 5-gram Jaccard at and above which two documents are duplicates. Candidate pairs are
      accepted when the signature estimate is >= threshold - margin_sigmas * (estimator std. error at the
      threshold), so pairs at the threshold are caught with ~98% probability (margin 2).
    bands/rows: None -> chosen from the weighted FP/FN trade-off (fp_weight, fn_weight) at the
      verification threshold; give one and the other is num_perm // it.
    scheme/seed/num_perm: pinned on every worker; ``oph-v1`` is the only scheme this version computes
      (signatures of other schemes, seeds or num_perm are incomparable).
    cc_rounds: large-star/small-star round pairs unrolled in the Beam graph before the convergence check;
      edges still unconverged after them (normally none) are finished by a union-find over just those,
      which fails the run if more than max_residual_edges remain.
    max_leaders: per candidate group, how many distinct representatives a document is verified against.
    """

    num_perm: int = 128
    ngram: int = 5
    threshold: float = 0.8
    bands: Optional[int] = None   # None -> chosen from the FP/FN trade-off for ``threshold``
    rows: Optional[int] = None
    seed: int = 1
    scheme: str = MINHASH_SCHEME
    margin_sigmas: float = 2.0
    fp_weight: float = 0.1
    fn_weight: float = 0.9
    cc_rounds: int = 4
    max_residual_edges: int = 5_000_000
    max_leaders: int = 8

    def __post_init__(self):
        require(isinstance(self.num_perm, int) and 8 <= self.num_perm <= 4096, "num_perm", self.num_perm,
               "an integer in [8, 4096]")
        require(isinstance(self.ngram, int) and 1 <= self.ngram <= 64, "ngram", self.ngram, "an integer in [1, 64]")
        require(is_number(self.threshold) and 0.0 < self.threshold < 1.0, "threshold", self.threshold,
               "a number strictly between 0 and 1")
        for name in ("bands", "rows"):
            v = getattr(self, name)
            require(v is None or (isinstance(v, int) and 1 <= v <= self.num_perm), name, v,
                   f"null or an integer in [1, num_perm={self.num_perm}]")
        if self.bands is not None and self.rows is not None:
            require(self.bands * self.rows <= self.num_perm, "bands*rows", self.bands * self.rows,
                   f"at most num_perm={self.num_perm}")
        require(isinstance(self.seed, int), "seed", self.seed, "an integer")
        require(self.scheme == MINHASH_SCHEME, "scheme", self.scheme,
               f"{MINHASH_SCHEME!r} (one-permutation MinHash; datasketch's k-permutation schemes were replaced "
               "by it for speed: drop the key)")
        require(is_number(self.margin_sigmas) and 0 <= self.margin_sigmas <= 6, "margin_sigmas", self.margin_sigmas,
               "a number in [0, 6]")
        for name in ("fp_weight", "fn_weight"):
            require(is_number(getattr(self, name)) and getattr(self, name) >= 0, name, getattr(self, name),
                   "a non-negative number")
        require(isinstance(self.cc_rounds, int) and 1 <= self.cc_rounds <= 50, "cc_rounds", self.cc_rounds,
               "an integer in [1, 50]")
        require(isinstance(self.max_residual_edges, int) and self.max_residual_edges >= 0, "max_residual_edges",
               self.max_residual_edges, "a non-negative integer")
        require(isinstance(self.max_leaders, int) and self.max_leaders >= 1, "max_leaders", self.max_leaders,
               "a positive integer")


@dataclass(frozen=True)
class SemDedupConfig:
    """SemDedup settings (semantics in pipelines/dedupe/semantic.py).

    keep_fraction: share of documents kept; the removal cut-off is the global quantile of each document's
      highest cosine similarity to an earlier document of its k-means cluster.
    n_clusters: None -> ceil(documents / docs_per_cluster), at most sample_size // 4.
    sample_size: documents sampled (side input) to fit k-means.
    max_chars: characters of each document given to the embedding model (it truncates at 256 word pieces).
    model: ``static-minilm-l6`` (default: a static model distilled from the packaged all-MiniLM-L6-v2, ~5,000
      documents per CPU-second) or ``minilm-l6`` (the transformer: ~14 per CPU-second, for GPUs);
      ``pipelines/dedupe/embed.py`` says why.
    device: ``auto`` (cuda when the worker has a GPU), ``cpu`` or ``cuda``.
    gpu_precision: ``fp16`` (default: ~30,000 c4 documents/s on an H200, differing from the CPU's removals
      only at documents within float tolerance of the cut-off) or ``fp32`` (the CPU's removals exactly, ~6,000/s).
    """

    keep_fraction: float = 0.8
    n_clusters: Optional[int] = None  # None -> chosen from the corpus size
    seed: int = 0
    sample_size: int = 20_000
    docs_per_cluster: int = 1_000
    kmeans_iters: int = 50
    batch_size: int = 64
    max_chars: int = 2_000
    model: str = "static-minilm-l6"
    device: str = "auto"
    gpu_precision: str = "fp16"

    def __post_init__(self):
        require(is_number(self.keep_fraction) and 0.0 < self.keep_fraction <= 1.0, "keep_fraction", self.keep_fraction,
               "a number in (0, 1]")
        require(self.n_clusters is None or (isinstance(self.n_clusters, int) and self.n_clusters >= 1),
               "n_clusters", self.n_clusters, "null or a positive integer")
        require(isinstance(self.seed, int), "seed", self.seed, "an integer")
        for name in ("sample_size", "docs_per_cluster", "kmeans_iters", "batch_size", "max_chars"):
            v = getattr(self, name)
            require(isinstance(v, int) and v >= 1, name, v, "a positive integer")
        require(self.model in ("static-minilm-l6", "minilm-l6"), "model", self.model,
                "static-minilm-l6 or minilm-l6")
        require(self.device in ("auto", "cpu", "cuda"), "device", self.device, "auto, cpu or cuda")
        require(self.gpu_precision in ("fp16", "fp32"), "gpu_precision", self.gpu_precision, "fp16 or fp32")


@dataclass(frozen=True)
class DedupeConfig:
    exact: bool = True
    minhash: Optional[MinHashConfig] = None
    semantic: Optional[SemDedupConfig] = None


def _dataclass_from(cls, value: Any, where: str):
    if value is False or value is None:
        return None
    if value is True or value == "default":
        return cls()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected true/false or a mapping, got {value!r}")
    return build(cls, value, "", f"{where}.")


def parse_dedupe(spec: Any, default: Mapping[str, Any], where: str = "dedupe") -> DedupeConfig:
    if spec is None or spec == "default":
        spec = dict(default)
    elif spec == "none":
        return DedupeConfig(exact=False)
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected 'default', 'none' or a mapping, got {spec!r}")
    unknown = set(spec) - {"exact", "minhash", "semantic"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: exact, minhash, semantic")
    exact = spec.get("exact", True)
    if not isinstance(exact, bool):
        raise ConfigError(f"{where}.exact: expected true or false, got {exact!r}")
    return DedupeConfig(
        exact=exact,
        minhash=_dataclass_from(MinHashConfig, spec.get("minhash"), f"{where}.minhash"),
        semantic=_dataclass_from(SemDedupConfig, spec.get("semantic"), f"{where}.semantic"),
    )
