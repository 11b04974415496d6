"""Dedupe stages: exact (normalized-text hash), MinHash-LSH near-dup, and SemDedup."""
