"""The contract every part of the toolkit shares, at the bottom of the import graph.

``registry`` (the ten sources), ``layout`` (where a build's outputs live), ``tokens`` (the token format)
``stats`` (the per-source stats record, its reconciliation and summary table) and ``config`` (the one
typed config mechanism). Nothing here imports ``pipelines``, ``mixtures`` or ``trainer``, nor Beam or
torch: both sides of the contract (the data pipeline that writes, the mixture builder and trainer that
read) depend on it, never on each other.
"""
