"""Attention, LayerNorm and loss kernels for the MPT trainer.

Every fast path here is checked against a plain torch reference in the tests; the model only picks a
backend by name (``kernels.attention.BACKENDS``), so a new kernel plugs in without touching the model.
"""
