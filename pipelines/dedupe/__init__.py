"""Pure dedupe algorithms, no Beam: configs, exact keys, MinHash-LSH, SemDedup clustering, the embedders and their word pieces."""
