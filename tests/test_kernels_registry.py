"""The attention-backend registry (``kernels.attention.BACKENDS``) is the one statement of what each backend
supports: the trainer's config validation, ``auto`` and the kernels read it, and no other module states
head dims of its own. (That ``auto`` is resolved once, at model build, is tested in test_trainer_model.py.)"""

from __future__ import annotations

import ast
import dataclasses
import itertools

import pytest
import torch

from kernels.attention import AUTO_ORDER, BACKEND_NAMES, BACKENDS, resolve_backend
from tests.conftest import REPO
from trainer.config import ConfigError, ModelConfig, load_config

# head dims of every kind: tiny, odd, multiples of 8 inside and outside the kernels' sets, MPT's 112 and 128
HEAD_DIMS = (4, 36, 48, 64, 80, 100, 112, 128, 136, 256, 264)


def _model(head_dim: int, attn_impl: str, packed: bool = False, alibi_bias_max: int = 8) -> ModelConfig:
    return ModelConfig(d_model=2 * head_dim, n_heads=2, attn_impl=attn_impl, attn_uses_sequence_id=packed,
                       alibi_bias_max=alibi_bias_max)


@pytest.mark.parametrize("name", [n for n in BACKENDS])
def test_config_validation_is_the_registry_verdict(name):
    """A backend named by hand is refused exactly where its registry entry says it cannot compute the
    model, and the error carries the registry's reason."""
    spec = BACKENDS[name]
    for hd, packed, abm in itertools.product(HEAD_DIMS, (False, True), (4, 8)):
        why = spec.unsupported(head_dim=hd, packed=packed, alibi_bias_max=abm)
        if why is None:
            _model(hd, name, packed, abm)
        else:
            with pytest.raises(ConfigError, match="model.attn_impl") as err:
                _model(hd, name, packed, abm)
            assert why in str(err.value)
        _model(hd, "auto", packed, abm)  # auto is always valid: it only picks backends that can


def test_config_follows_a_changed_registry_entry(monkeypatch):
    """Change what the registry says and the config's verdict changes with it: no copy elsewhere."""
    _model(128, "triton")
    _model(128, "flex", packed=True)
    monkeypatch.setitem(BACKENDS, "triton", dataclasses.replace(BACKENDS["triton"], head_dims=(64,),
                                                                 head_dims_text="64 only (patched)"))
    monkeypatch.setitem(BACKENDS, "flex", dataclasses.replace(BACKENDS["flex"], packed_documents=False))
    with pytest.raises(ConfigError, match=r"head dim 128 \(it supports 64 only \(patched\)\)"):
        _model(128, "triton")
    with pytest.raises(ConfigError, match="packed documents"):
        _model(128, "flex", packed=True)
    _model(64, "triton")


def test_run_precision_is_checked_against_the_backend_dtypes():
    """``precision: fp32`` runs attention in fp32, which the GPU kernels do not take (registry dtypes)."""
    base = ["model.d_model=256", "model.n_heads=2", "seq_len=64", "model.max_seq_len=64"]
    for name, spec in BACKENDS.items():
        for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            overrides = [*base, f"model.attn_impl={name}", f"precision={precision}"]
            why = spec.unsupported(dtype=dtype)
            if why is None:
                assert load_config(None, overrides).compute_dtype == dtype
            else:
                with pytest.raises(ConfigError, match=f"precision {precision}") as err:
                    load_config(None, overrides)
                assert why in str(err.value)
    assert BACKENDS["triton"].unsupported(dtype=torch.float32) == "dtype fp32 (it supports bf16, fp16)"


def test_names_and_auto_come_from_the_registry():
    assert BACKEND_NAMES == (*BACKENDS, "auto")
    with pytest.raises(ConfigError, match=", ".join(BACKEND_NAMES)):
        ModelConfig(attn_impl="fast")
    assert all(name in BACKENDS for order in AUTO_ORDER.values() for name in order)
    assert resolve_backend("auto", "cpu", head_dim=128) == AUTO_ORDER["cpu"][0]
    # on CUDA, auto takes the first backend in AUTO_ORDER that the registry says can run the call and that
    # is available here (no GPU here: cuDNN's probe is false, so the answer comes from Triton / flex)
    for hd, packed, abm in itertools.product(HEAD_DIMS, (False, True), (4, 8)):
        want = next(n for n in AUTO_ORDER["cuda"]
                    if BACKENDS[n].unsupported(head_dim=hd, packed=packed, alibi_bias_max=abm) is None
                    and BACKENDS[n].available())
        assert resolve_backend("auto", "cuda", head_dim=hd, packed=packed, alibi_bias_max=abm) == want
        assert BACKENDS[want].unsupported(head_dim=hd, packed=packed, alibi_bias_max=abm) is None
    assert resolve_backend("auto", "cuda", head_dim=128, dtype=torch.float32) == "flex"  # fp32: no GPU kernel


def test_kernels_read_their_support_from_the_registry():
    from kernels import cudnn_alibi

    assert cudnn_alibi.SUPPORTED_HEAD_DIMS is BACKENDS["cudnn"].head_dims
    assert cudnn_alibi.supports(64) and not cudnn_alibi.supports(100) and not cudnn_alibi.supports(
        64, seq_id=torch.zeros(1, 4))
    pytest.importorskip("triton")
    from kernels import triton_alibi

    assert triton_alibi.SUPPORTED_HEAD_DIMS is BACKENDS["triton"].head_dims
    assert not hasattr(triton_alibi, "_SUPPORTED_HEAD_DIMS")  # the dead alias is gone: one name


# ---------------------------------------------------------------- no head dims stated outside the registry
REGISTRY = "kernels/attention.py"
_HEAD_DIM_NAMES = ("hd", "head_dim", "head_dims", "D")


def _int(node) -> int | None:
    return node.value if isinstance(node, ast.Constant) and type(node.value) is int else None


def _names(node) -> set[str]:
    return {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node)
            if isinstance(n, (ast.Name, ast.Attribute))}


def _head_dim_statements(tree: ast.AST) -> list[tuple[int, str]]:
    """Places that state which head dims something supports: a literal set of 3+ head-dim-like ints
    (multiples of 8 with 64 and 128 among them), a ``range`` of constants up to 128 or more, a name like
    SUPPORTED_HEAD_DIMS bound to a value with numbers in it, or a head dim compared / taken modulo a number."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            ints = [_int(e) for e in node.elts]
            if len(ints) >= 3 and None not in ints and {64, 128} <= set(ints) and all(i % 8 == 0 for i in ints):
                found.append((node.lineno, "literal head dims"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
            args = [_int(a) for a in node.args]
            if args and None not in args and max(args) >= 128:
                found.append((node.lineno, "range of head dims"))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            named = any("HEAD_DIM" in n.upper() for t in targets for n in _names(t))
            if named and node.value is not None and any(_int(n) is not None for n in ast.walk(node.value)):
                found.append((node.lineno, "head dims bound to numbers"))
        elif isinstance(node, (ast.Compare, ast.BinOp)):
            sides = [node.left, *node.comparators] if isinstance(node, ast.Compare) else [node.left, node.right]
            has_hd = any(isinstance(s, ast.Name) and s.id in _HEAD_DIM_NAMES for s in sides)
            numbers = [_int(s) for s in sides if _int(s) is not None]
            if has_hd and any(n >= 8 for n in numbers):
                found.append((node.lineno, "head dim compared with a number"))
    return found


def test_detector_finds_the_old_restatements():
    """The check below would have caught each restatement this registry replaced."""
    for src in ("SUPPORTED_HEAD_DIMS = tuple(range(8, 129, 8))", "SUPPORTED_HEAD_DIMS = (64, 80, 96, 112, 128)",
                "_SUPPORTED_HEAD_DIMS = (64, 80, 96, 112, 128)[:]",
                "why = 'head dim' if hd % 8 or hd > 128 else None", "ok = head_dim in (64, 80, 96, 112, 128)"):
        assert _head_dim_statements(ast.parse(src)), src
    for src in ("SUPPORTED_HEAD_DIMS = SPEC.head_dims", "BLOCK = 128", "cfg = (128, 64, 4, 3)",
                "n = triton.cdiv(S, 128)"):
        assert not _head_dim_statements(ast.parse(src)), src


def test_no_module_but_the_registry_states_supported_head_dims():
    offenders = []
    for path in sorted(p for d in ("kernels", "trainer", "scripts") for p in (REPO / d).rglob("*.py")):
        rel = str(path.relative_to(REPO))
        if rel == REGISTRY:
            continue
        for line, what in _head_dim_statements(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{rel}:{line}: {what}")
    assert offenders == []
    assert _head_dim_statements(ast.parse((REPO / REGISTRY).read_text(encoding="utf-8")))  # it is stated there
