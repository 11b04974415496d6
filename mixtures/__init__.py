"""MPT training mixtures: specs (YAML data), planner, packing, streams config, manifest and report.

Entry points: ``mixtures.build.build_mixture`` (Python) and ``python -m mixtures.build`` (CLI);
``mixtures.spec.MIXTURE_NAMES`` lists the built-in mixtures. This package never re-tokenizes text: it
reads the per-source token shards the pipelines write.
"""
from mixtures.spec import MIXTURE_NAMES, load_spec

__all__ = ["MIXTURE_NAMES", "load_spec"]
