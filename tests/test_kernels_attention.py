"""The Triton ALiBi flash attention computes MPT's attention, forward and backward.

The reference is ``kernels.attention.torch_attention`` (MPT's torch path: key-only bias, finfo.min
causal mask) evaluated in float64. A low-precision kernel passes when its error against that is at
most a small multiple of the error of the same torch reference run in the kernel's own dtype (the
usual bf16/fp16 tolerance), plus an absolute floor. Inputs are fresh random tensors on every run.

On CPU the same Triton kernels run under ``TRITON_INTERPRET=1`` in a subprocess, so CI without a GPU
still checks the kernel's indexing, masking and ALiBi arithmetic.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from kernels.attention import alibi_slopes, resolve_backend, torch_attention
from tests.conftest import run_in_triton_interpreter

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def _one_config_per_kernel(monkeypatch):
    """One autotune config per kernel variant (kernels/triton_alibi.py): a cold GPU suite compiles each variant
    once instead of once per config; ``test_autotuned_kernel_matches_reference`` keeps the autotuner."""
    monkeypatch.setenv("MPT_TRITON_AUTOTUNE", "first")


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref).norm() / ref.norm()).item()


def _packed_seq_id(B: int, S: int, device, n_docs: int = 4) -> torch.Tensor:
    """Random document boundaries, the layout packing produces (runs of equal ids)."""
    cuts = torch.rand(B, S, device=device) < (n_docs / S)
    cuts[:, 0] = False
    return torch.cumsum(cuts.to(torch.int32), dim=1)


def _check_against_reference(B, H, S, D, dtype, *, seq=False, fused_qkv=False, scale=None, device="cuda",
                             backward="split"):
    from kernels.triton_alibi import set_backward, triton_alibi_attention

    set_backward(backward)
    try:
        _check(B, H, S, D, dtype, seq, fused_qkv, scale, device, triton_alibi_attention)
    finally:
        set_backward("split")


def _check(B, H, S, D, dtype, seq, fused_qkv, scale, device, triton_alibi_attention):
    if fused_qkv:
        # the trainer's layout: one (B, S, 3, H, D) projection, q/k/v are strided views of it
        qkv = torch.randn(B, S, 3, H, D, device=device, dtype=dtype)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    else:
        q, k, v = (torch.randn(B, H, S, D, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    slopes = alibi_slopes(H, device=device)
    seq_id = _packed_seq_id(B, S, device) if seq else None
    do = torch.randn(B, H, S, D, device=device, dtype=dtype)

    out = triton_alibi_attention(q, k, v, slopes, seq_id=seq_id, softmax_scale=scale)
    assert out.shape == (B, H, S, D) and out.dtype == dtype
    out.backward(do)
    got = [out.detach(), q.grad, k.grad, v.grad]

    def run_ref(prec):
        qq, kk, vv = (t.detach().to(prec).requires_grad_() for t in (q, k, v))
        o = torch_attention(qq, kk, vv, slopes, seq_id=seq_id, softmax_scale=scale)
        o.backward(do.to(prec))
        return [o.detach(), qq.grad, kk.grad, vv.grad]

    exact = run_ref(torch.float64)
    lowp = run_ref(dtype)
    for name, g, e, lp in zip(["out", "dq", "dk", "dv"], got, exact, lowp):
        assert torch.isfinite(g).all(), f"{name} has non-finite values"
        err, base = _rel(g, e), _rel(lp, e)
        assert err <= 2.0 * base + 2e-3, f"{name}: rel err {err:.2e} vs torch {dtype} reference {base:.2e}"


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("D", [64, 80, 96, 112, 128])
def test_matches_reference(dtype, D):
    _check_against_reference(2, 4, 512, D, dtype)


def test_autotune_first_keeps_one_fitting_config(monkeypatch):
    """The switch the GPU suite uses: the first config whose tiles fit the sequence, and only that one."""
    pytest.importorskip("triton")
    from kernels.triton_alibi import _bwd_kv_configs, _keep_small_for_short

    configs = _bwd_kv_configs()
    monkeypatch.delenv("MPT_TRITON_AUTOTUNE")
    fits_64 = _keep_small_for_short(configs, {"S": 64})
    assert len(fits_64) > 1 and all(max(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) <= 64 for c in fits_64)
    assert _keep_small_for_short(configs, {"S": 4096}) == configs
    monkeypatch.setenv("MPT_TRITON_AUTOTUNE", "first")
    assert _keep_small_for_short(configs, {"S": 64}) == fits_64[:1]
    assert _keep_small_for_short(configs, {"S": 4096}) == configs[:1]


@cuda
@pytest.mark.gpu
@pytest.mark.slow
def test_autotuned_kernel_matches_reference(monkeypatch):
    """Every config the autotuner tries compiles and the one it picks is right (slow: compiles them all)."""
    monkeypatch.delenv("MPT_TRITON_AUTOTUNE")
    _check_against_reference(2, 4, 1536, 128, torch.bfloat16)
    _check_against_reference(2, 4, 1536, 64, torch.bfloat16, seq=True)


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("seq", [False, True])
@pytest.mark.parametrize("D", [64, 112, 128])
def test_one_pass_backward(D, seq):
    """The one-pass backward (dQ accumulated with atomics in the dK/dV kernel) matches the reference."""
    _check_against_reference(2, 4, 1000, D, torch.bfloat16, seq=seq, backward="one_pass")
    _check_against_reference(1, 4, 2048, D, torch.bfloat16, fused_qkv=True, backward="one_pass")


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("H,S", [(12, 333), (20, 1000), (6, 64), (3, 17)])
def test_odd_heads_and_lengths(H, S):
    """Non-power-of-2 head counts use MPT's interleaved slopes; lengths that are not a tile multiple."""
    _check_against_reference(2, H, S, 128, torch.bfloat16)


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("D", [64, 112, 128])
def test_packed_documents(D):
    _check_against_reference(2, 4, 700, D, torch.bfloat16, seq=True)


@cuda
@pytest.mark.gpu
def test_fused_qkv_views_and_scale():
    _check_against_reference(2, 8, 384, 128, torch.bfloat16, fused_qkv=True, scale=0.05)


@cuda
@pytest.mark.gpu
def test_long_sequence():
    """At 4k tokens the key-only MPT bias reaches -slope*4095; the relative form must not lose it."""
    _check_against_reference(1, 4, 4096, 128, torch.bfloat16)


@cuda
@pytest.mark.gpu
def test_seq_id_separates_documents():
    """Changing a token in document A must not move any output of document B."""
    from kernels.triton_alibi import triton_alibi_attention

    B, H, S, D = 1, 4, 256, 64
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    seq_id = torch.zeros(B, S, dtype=torch.int64, device="cuda")
    seq_id[:, 100:] = 1
    slopes = alibi_slopes(H, device="cuda")
    o1 = triton_alibi_attention(q, k, v, slopes, seq_id=seq_id)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 10] += 3.0
    v2[:, :, 10] -= 3.0
    o2 = triton_alibi_attention(q, k2, v2, slopes, seq_id=seq_id)
    assert torch.equal(o1[:, :, 100:], o2[:, :, 100:])
    assert not torch.equal(o1[:, :, 10:100], o2[:, :, 10:100])


@cuda
@pytest.mark.gpu
def test_rejects_unsupported_inputs():
    from kernels.triton_alibi import triton_alibi_attention

    slopes = alibi_slopes(2, device="cuda")
    q = torch.randn(1, 2, 16, 48, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="head dim"):
        triton_alibi_attention(q, q, q, slopes)
    q = torch.randn(1, 2, 16, 64, device="cuda", dtype=torch.float32)
    with pytest.raises(ValueError, match="bf16 or fp16"):
        triton_alibi_attention(q, q, q, slopes)


@cuda
@pytest.mark.gpu
def test_inside_compiled_attention_block():
    """Under torch.compile(fullgraph=True), as in the trainer's compiled blocks: no graph break, same result."""
    from kernels.triton_alibi import triton_alibi_attention

    B, S, H, D = 2, 1024, 8, 128
    wqkv = torch.nn.Linear(H * D, 3 * H * D, bias=False, device="cuda", dtype=torch.bfloat16)
    slopes = alibi_slopes(H, device="cuda")

    def attn_block(x):
        q, k, v = wqkv(x).split(H * D, dim=-1)
        q, k, v = (t.view(B, S, H, D).transpose(1, 2) for t in (q, k, v))
        return triton_alibi_attention(q, k, v, slopes).transpose(1, 2).reshape(B, S, H * D)

    x = torch.randn(B, S, H * D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(B, S, H * D, device="cuda", dtype=torch.bfloat16)
    compiled = torch.compile(attn_block, fullgraph=True)
    y = compiled(x)
    y.backward(dy)
    gx, gw = x.grad.clone(), wqkv.weight.grad.clone()
    x.grad = None
    wqkv.weight.grad = None
    y_ref = attn_block(x)
    y_ref.backward(dy)
    assert _rel(y, y_ref.detach().double()) < 1e-3
    assert _rel(gx, x.grad.double()) < 1e-3 and _rel(gw, wqkv.weight.grad.double()) < 1e-3


_INTERPRETER_SCRIPT = textwrap.dedent(
    """
    import torch, sys
    sys.path.insert(0, {root!r})
    from tests.test_kernels_attention import _check_against_reference
    torch.manual_seed({seed})
    _check_against_reference(1, 3, 77, 64, torch.float16, device="cpu")
    _check_against_reference(1, 2, 128, 64, torch.float16, device="cpu")
    _check_against_reference(2, 2, 130, 64, torch.float16, seq=True, fused_qkv=True, scale=0.2, device="cpu")
    print("ok")
    """
)

_INTERPRETER_HEAD_DIMS_SCRIPT = textwrap.dedent(
    """
    import torch, sys
    sys.path.insert(0, {root!r})
    from tests.test_kernels_attention import _check_against_reference
    torch.manual_seed({seed})
    _check_against_reference(1, 2, 77, 112, torch.float16, device="cpu")  # MPT-30B: 7168 / 64 heads
    _check_against_reference(1, 2, 128, 112, torch.float16, seq=True, fused_qkv=True, device="cpu")
    _check_against_reference(1, 2, 96, 80, torch.float16, device="cpu")
    _check_against_reference(1, 2, 70, 96, torch.float16, seq=True, device="cpu")
    # the one-pass backward (dQ by atomics from the dK/dV kernel)
    _check_against_reference(1, 2, 77, 112, torch.float16, device="cpu", backward="one_pass")
    _check_against_reference(2, 2, 130, 64, torch.float16, seq=True, fused_qkv=True, scale=0.2, device="cpu",
                             backward="one_pass")
    print("ok")
    """
)


def test_kernels_in_triton_interpreter():
    """The same Triton source, run by Triton's CPU interpreter (fp16: the interpreter has no bf16 dot)."""
    run_in_triton_interpreter(_INTERPRETER_SCRIPT)


def test_head_dims_in_triton_interpreter():
    """Head dims that are not a power of 2 (80, 96, 112) run padded to the next power-of-2 tile with
    the padding masked off: same Triton source, CPU interpreter, forward and backward."""
    run_in_triton_interpreter(_INTERPRETER_HEAD_DIMS_SCRIPT)


def test_every_preset_resolves_to_a_backend_that_supports_its_head_dim():
    """``attn_impl: auto`` on CUDA must never pick a kernel that rejects the model's head dim (MPT-30B's
    112 did, before 80/96/112 were added). Every preset and every shipped config is checked."""
    import yaml

    from kernels.attention import triton_head_dims
    from trainer.config import PRESETS

    pytest.importorskip("triton")
    dims = {name: d // h for name, (d, h, _) in PRESETS.items()}
    for cfg_path in sorted((ROOT / "trainer" / "configs").glob("*.yaml")):
        model = (yaml.safe_load(cfg_path.read_text()) or {}).get("model", {})
        if "preset" in model:
            assert model["preset"] in dims, cfg_path
        elif "d_model" in model:
            dims[cfg_path.name] = model["d_model"] // model["n_heads"]
    assert dims["30b"] == 112
    from kernels.cudnn_alibi import SUPPORTED_HEAD_DIMS as cudnn_dims

    supported = triton_head_dims()
    assert set(supported) >= {64, 80, 96, 112, 128}
    for name, hd in dims.items():
        for packed in (False, True):  # packed documents (seq_id) rule cuDNN out
            backend = resolve_backend("auto", "cuda", head_dim=hd, packed=packed)
            assert backend in (("triton", "flex") if packed else ("cudnn", "triton", "flex")), (name, hd, backend)
            if backend == "triton":
                assert hd in supported, (name, hd)
            if backend == "cudnn":
                assert hd in cudnn_dims, (name, hd)
    # a head dim neither kernel has falls back to flex, which takes any
    assert resolve_backend("auto", "cuda", head_dim=48, packed=True) == "flex"
    assert resolve_backend("auto", "cuda", head_dim=36) == "flex"
    assert resolve_backend("auto", "cpu", head_dim=112) == "torch"


@cuda
@pytest.mark.gpu
def test_mpt_with_head_dim_112_trains_with_auto():
    """A small MPT with MPT-30B's head dim (112) and ``attn_impl: auto``: loss and gradients in bf16
    match the torch reference backend."""
    from trainer.config import ModelConfig
    from trainer.model import MPTForCausalLM

    torch.manual_seed(0)
    cfg = ModelConfig(d_model=448, n_heads=4, n_layers=2, vocab_size=50432, max_seq_len=512, attn_impl="auto")
    model = MPTForCausalLM(cfg).cuda()
    ids = torch.randint(0, 50432, (2, 512), device="cuda")

    def loss_and_grads():
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, labels=ids)
        loss.backward()
        return float(loss), torch.cat([p.grad.flatten().float() for p in model.parameters()])

    loss, grad = loss_and_grads()
    # cuDNN's native ALiBi when nvidia-cudnn-frontend is installed (the lock has it), else this kernel
    assert model.transformer.blocks[0].attn.backend == resolve_backend("auto", "cuda", head_dim=112)
    assert model.transformer.blocks[0].attn.backend in ("cudnn", "triton")
    for b in model.transformer.blocks:
        b.attn.backend = "torch"
    ref_loss, ref_grad = loss_and_grads()
    assert abs(loss - ref_loss) / ref_loss < 1e-2
    assert _rel(grad, ref_grad.double()) < 5e-2
