"""cuDNN's fused attention with its native ALiBi computes MPT's attention, forward and backward.

Same reference and tolerance as the Triton kernel's tests (``tests/test_kernels_attention.py``): MPT's
torch path in float64, error at most 2x that of the torch path in the kernel's own dtype + 2e-3. The
CPU tests pin down what makes the backend exact at all: cuDNN applies the ALiBi paper's slopes, and
those must be MPT's ``gen_slopes`` for every head count, else ``auto`` must not pick it.
"""

from __future__ import annotations

import pytest
import torch

from kernels.attention import alibi_slopes, resolve_backend, torch_attention
from tests.test_kernels_attention import _check, _one_config_per_kernel, _rel  # noqa: F401 - autouse fixture
from trainer.config import ConfigError, ModelConfig

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _cudnn():
    from kernels import cudnn_alibi

    if not cudnn_alibi.available():
        pytest.skip("nvidia-cudnn-frontend / cuDNN >= 9 not available here")
    return cudnn_alibi


@pytest.mark.parametrize("n_heads", list(range(1, 97)) + [128])
def test_paper_slopes_are_mpt_slopes(n_heads):
    """cuDNN's ALiBi uses the paper's slope schedule; it equals MPT's gen_slopes (alibi_bias_max 8),
    including the interleaved non-power-of-2 head counts (12, 20, 56, ...)."""
    from kernels.cudnn_alibi import paper_slopes

    assert torch.allclose(paper_slopes(n_heads), alibi_slopes(n_heads), rtol=1e-6, atol=0)


def test_supports_checks_slopes_seq_id_and_head_dim():
    from kernels.cudnn_alibi import supports

    good = alibi_slopes(16)
    assert supports(128, good) and supports(112, good) and supports(64)
    assert not supports(128, alibi_slopes(16, alibi_bias_max=4))
    assert not supports(128, good, seq_id=torch.zeros(1, 4))
    assert not supports(100, good) and not supports(256, good)
    good.mul_(2)  # the same tensor changed in place: checked again, not served from the cache
    assert not supports(128, good)


def test_auto_never_picks_cudnn_where_it_would_be_wrong():
    assert resolve_backend("auto", "cpu", head_dim=128) == "torch"
    for kw in ({"packed": True}, {"alibi_bias_max": 4}):
        assert resolve_backend("auto", "cuda", head_dim=128, **kw) != "cudnn", kw
    assert resolve_backend("auto", "cuda", head_dim=100) != "cudnn"


def test_config_refuses_cudnn_where_it_cannot_run():
    ModelConfig(d_model=256, n_heads=2, attn_impl="cudnn")  # head dim 128: fine
    for kw, why in (({"attn_uses_sequence_id": True}, "attn_uses_sequence_id"),
                    ({"alibi_bias_max": 16}, "alibi_bias_max"),
                    ({"d_model": 200, "n_heads": 2}, "head dim 100")):
        with pytest.raises(ConfigError, match=why):
            ModelConfig(**{"d_model": 256, "n_heads": 2, "attn_impl": "cudnn", **kw})


def _check_cudnn(B, H, S, D, dtype, *, fused_qkv=False, scale=None):
    cudnn_alibi = _cudnn()
    _check(B, H, S, D, dtype, False, fused_qkv, scale, "cuda", cudnn_alibi.cudnn_alibi_attention)


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("D", [64, 80, 96, 112, 128])
def test_matches_reference(dtype, D):
    _check_cudnn(2, 4, 512, D, dtype)


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("H,S", [(12, 333), (20, 1000), (6, 64), (3, 17)])
def test_odd_heads_and_lengths(H, S):
    _check_cudnn(2, H, S, 128, torch.bfloat16)


@cuda
@pytest.mark.gpu
def test_fused_qkv_views_scale_and_long_sequence():
    _check_cudnn(2, 8, 384, 128, torch.bfloat16, fused_qkv=True, scale=0.05)
    _check_cudnn(1, 4, 4096, 112, torch.bfloat16, fused_qkv=True)


@cuda
@pytest.mark.gpu
def test_deterministic_mode_gives_bitwise_equal_gradients():
    cudnn_alibi = _cudnn()
    B, H, S, D = 2, 8, 1024, 128
    slopes = alibi_slopes(H, device="cuda")
    q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    do = torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16)
    torch.use_deterministic_algorithms(True)
    try:
        grads = []
        for _ in range(3):
            q.grad = k.grad = v.grad = None
            cudnn_alibi.cudnn_alibi_attention(q, k, v, slopes).backward(do)
            grads.append(torch.cat([q.grad.flatten(), k.grad.flatten(), v.grad.flatten()]))
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(grads[0], grads[1]) and torch.equal(grads[0], grads[2])


@cuda
@pytest.mark.gpu
def test_rejects_what_it_cannot_compute():
    cudnn_alibi = _cudnn()
    q = torch.randn(1, 4, 64, 128, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="slopes"):
        cudnn_alibi.cudnn_alibi_attention(q, q, q, alibi_slopes(4, alibi_bias_max=4, device="cuda"))
    with pytest.raises(ValueError, match="seq_id"):
        cudnn_alibi.cudnn_alibi_attention(q, q, q, alibi_slopes(4, device="cuda"),
                                          seq_id=torch.zeros(1, 64, dtype=torch.int32, device="cuda"))
    q = torch.randn(1, 4, 64, 100, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="head dim"):
        cudnn_alibi.cudnn_alibi_attention(q, q, q, alibi_slopes(4, device="cuda"))


@cuda
@pytest.mark.gpu
def test_inside_compiled_attention_block():
    """Under torch.compile(fullgraph=True) on fused-QKV views, as the trainer's compiled blocks run it."""
    cudnn_alibi = _cudnn()
    B, S, H, D = 2, 1024, 8, 128
    wqkv = torch.nn.Linear(H * D, 3 * H * D, bias=False, device="cuda", dtype=torch.bfloat16)
    slopes = alibi_slopes(H, device="cuda")
    assert cudnn_alibi.supports(D, slopes)

    def attn_block(x):
        q, k, v = wqkv(x).split(H * D, dim=-1)
        q, k, v = (t.view(B, S, H, D).transpose(1, 2) for t in (q, k, v))
        return cudnn_alibi.cudnn_alibi_attention(q, k, v, slopes).transpose(1, 2).reshape(B, S, H * D)

    x = torch.randn(B, S, H * D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(B, S, H * D, device="cuda", dtype=torch.bfloat16)
    y = torch.compile(attn_block, fullgraph=True)(x)
    y.backward(dy)
    gx, gw = x.grad.clone(), wqkv.weight.grad.clone()
    x.grad = wqkv.weight.grad = None
    y_ref = attn_block(x)
    y_ref.backward(dy)
    assert _rel(y, y_ref.detach().double()) < 1e-3
    assert _rel(gx, x.grad.double()) < 1e-3 and _rel(gw, wqkv.weight.grad.double()) < 1e-3


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("packed", [False, True])
def test_mpt_auto_uses_cudnn_unless_documents_are_packed(packed):
    """``attn_impl: auto`` picks cuDNN for MPT-30B's head dim (112) and the Triton kernel when the model
    packs documents (``attn_uses_sequence_id``), once, when the model is built; loss and gradients match
    the torch backend either way."""
    _cudnn()
    from trainer.data import sequence_ids
    from trainer.model import MPTForCausalLM

    torch.manual_seed(0)
    cfg = ModelConfig(d_model=448, n_heads=4, n_layers=2, vocab_size=50432, max_seq_len=512, attn_impl="auto",
                      attn_uses_sequence_id=packed)
    model = MPTForCausalLM(cfg).cuda()
    ids = torch.randint(0, 50432, (2, 512), device="cuda")
    ids[:, 200] = 0  # an EOS: two documents per row when packed
    seq_id = sequence_ids(ids) if packed else None

    def loss_and_grads():
        model.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(ids, labels=ids, seq_id=seq_id)
        loss.backward()
        return float(loss), torch.cat([p.grad.flatten().float() for p in model.parameters()])

    assert model.attn_backend == ("triton" if packed else "cudnn")  # chosen at build, before any call
    loss, grad = loss_and_grads()
    assert model.transformer.blocks[0].attn.backend == ("triton" if packed else "cudnn")
    # chosen once: a call of the other kind does not switch it. Triton also runs calls without seq_id; cuDNN
    # has no document mask, so a model built without attn_uses_sequence_id refuses seq_id and says so
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        if packed:
            assert torch.isfinite(model(ids)).all()
        else:
            with pytest.raises(ValueError, match="attn_uses_sequence_id"):
                model(ids, seq_id=sequence_ids(ids))
    assert model.transformer.blocks[0].attn.backend == ("triton" if packed else "cudnn")
    for b in model.transformer.blocks:  # set by hand: auto leaves it alone from now on
        b.attn.backend = "torch"
    ref_loss, ref_grad = loss_and_grads()
    assert abs(loss - ref_loss) / ref_loss < 1e-2
    assert _rel(grad, ref_grad.double()) < 5e-2


def test_reference_is_what_cudnn_computes_on_cpu():
    """cuDNN's form (relative bias slope*(j-i), paper slopes) equals MPT's key-only torch path: checked
    in float64 on CPU, so the equivalence the backend rests on is tested without a GPU."""
    H, S, D = 12, 65, 16
    q, k, v = (torch.randn(1, H, S, D, dtype=torch.float64) for _ in range(3))
    from kernels.cudnn_alibi import paper_slopes

    i = torch.arange(S, dtype=torch.float64)
    rel = paper_slopes(H).double().view(1, H, 1, 1) * (i.view(1, S) - i.view(S, 1))
    scores = q @ k.transpose(-1, -2) / D ** 0.5 + rel
    scores = scores.masked_fill(i.view(1, S) > i.view(S, 1), float("-inf"))
    out = torch.softmax(scores, -1) @ v
    assert torch.allclose(out, torch_attention(q, k, v, alibi_slopes(H)), atol=1e-12)
