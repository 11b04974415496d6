"""Beam pipelines that turn raw corpora into per-source NeoX-tokenized MDS shards."""
