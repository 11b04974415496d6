"""The model is MPT as released: sizes, names, init, norm, and logits equal to transformers' MptForCausalLM."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kernels.layernorm import low_precision_layernorm
from trainer.config import PRESETS, ConfigError, ModelConfig
from trainer.export import export_model
from trainer.model import MPTForCausalLM

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

# Parameter counts of the released MPT sizes with V=50432 (alibi, no_bias, tied), from llm-foundry's formula.
REFERENCE_PARAMS = {
    "125m": 123_685_632, "350m": 353_682_432, "760m": 757_016_064, "1b": 1_311_344_640,
    "3b": 2_645_854_720, "7b": 6_649_286_656, "13b": 12_841_538_560, "30b": 29_957_200_896,
}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_parameter_counts(preset):
    cfg = ModelConfig(preset=preset)
    with torch.device("meta"):
        model = MPTForCausalLM(cfg)
    assert model.num_params() == cfg.num_params() == REFERENCE_PARAMS[preset]


def test_names_and_shapes_equal_transformers():
    from transformers import MptConfig
    from transformers import MptForCausalLM as HFMpt

    cfg = ModelConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=512, max_seq_len=32)
    ours = {k: v.shape for k, v in MPTForCausalLM(cfg).state_dict().items()}
    hf = HFMpt(MptConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=512, max_seq_len=32))
    theirs = {k: v.shape for k, v in hf.state_dict().items() if not k.startswith("lm_head.")}
    assert ours == theirs
    assert not any(k.endswith(".bias") for k in ours)


def test_kaiming_init_with_residual_scaling():
    d, L = 256, 6
    torch.manual_seed(0)
    model = MPTForCausalLM(ModelConfig(d_model=d, n_heads=4, n_layers=L, vocab_size=4096, max_seq_len=16))
    sd = model.state_dict()
    std = lambda key: float(torch.cat([sd[k].flatten() for k in sd if k.endswith(key)]).std())
    res = math.sqrt(2 * L)
    expected = {"attn.Wqkv.weight": math.sqrt(2 / d), "ffn.up_proj.weight": math.sqrt(2 / d),
                "attn.out_proj.weight": math.sqrt(2 / d) / res, "ffn.down_proj.weight": math.sqrt(2 / (4 * d)) / res,
                "wte.weight": math.sqrt(2 / d)}
    for key, want in expected.items():
        assert std(key) == pytest.approx(want, rel=0.03), key
    for k, v in sd.items():
        if "norm" in k:
            assert torch.equal(v, torch.ones_like(v)), k


def test_low_precision_layernorm():
    x, w = torch.randn(3, 5, 32), torch.rand(32) + 0.5
    torch.testing.assert_close(low_precision_layernorm(x, w), F.layer_norm(x, (32,), w, None, 1e-5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = low_precision_layernorm(x, w)
    assert y.dtype == torch.bfloat16  # stock LayerNorm would return fp32 here
    torch.testing.assert_close(y, F.layer_norm(x.bfloat16(), (32,), w.bfloat16(), None, 1e-5))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.attn_impl"):
        ModelConfig(attn_impl="fast")
    with pytest.raises(ConfigError, match="model.preset"):
        ModelConfig(preset="2b")
    with pytest.raises(ConfigError, match="not divisible"):
        ModelConfig(d_model=100, n_heads=12)


@pytest.mark.parametrize("d,H,L,S,max_seq_len", [(64, 4, 2, 16, 32), (96, 12, 3, 20, 24), (80, 20, 2, 7, 7)])
def test_logits_equal_transformers_from_export(tmp_path, d, H, L, S, max_seq_len):
    """Acceptance: export -> AutoModelForCausalLM -> same logits (fp32, < 1e-4), incl. 12 and 20 heads."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    cfg = ModelConfig(d_model=d, n_heads=H, n_layers=L, vocab_size=512, max_seq_len=max_seq_len, attn_impl="torch")
    model = MPTForCausalLM(cfg).eval()
    # move norms off their all-ones init so a dropped or misnamed norm weight cannot go unnoticed
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    export_model(model.state_dict(), cfg, tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "MptForCausalLM"
    ids = torch.randint(0, 512, (3, S), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
        assert (ours - theirs).abs().max() < 1e-4
        assert model(ids, labels=ids).item() == pytest.approx(hf(ids, labels=ids).loss.item(), abs=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_model_backends_agree_with_reference(backend):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=96, n_heads=12, n_layers=2, vocab_size=256, max_seq_len=64, attn_impl="torch")
    model = MPTForCausalLM(cfg).eval()
    ids = torch.randint(0, 256, (2, 64))
    with torch.no_grad():
        ref = model(ids)
        for block in model.transformer.blocks:
            block.attn.backend = backend
        out = model(ids)
    assert (out - ref).abs().max() < 1e-4


def test_loss_is_next_token_cross_entropy():
    torch.manual_seed(0)
    model = MPTForCausalLM(ModelConfig(d_model=32, n_heads=2, n_layers=1, vocab_size=64, max_seq_len=8, attn_impl="torch"))
    ids = torch.randint(0, 64, (2, 8))
    logits = model(ids)
    want = F.cross_entropy(logits[:, :-1].reshape(-1, 64), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(model(ids, labels=ids), want)
    labels = ids.clone()
    labels[:, 5:] = -100  # ignored targets drop out of the mean
    want = F.cross_entropy(logits[:, :4].reshape(-1, 64), ids[:, 1:5].reshape(-1))
    torch.testing.assert_close(model(ids, labels=labels), want)


def test_seq_id_restricts_attention_to_documents():
    torch.manual_seed(0)
    model = MPTForCausalLM(ModelConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=64, max_seq_len=16, attn_impl="torch"))
    a, b = torch.randint(1, 64, (1, 6)), torch.randint(1, 64, (1, 10))
    packed = torch.cat([a, b], dim=1)
    seq_id = torch.tensor([[0] * 6 + [1] * 10])
    with torch.no_grad():
        out = model(packed, seq_id=seq_id)
        torch.testing.assert_close(out[:, :6], model(a))
        torch.testing.assert_close(out[:, 6:], model(b), rtol=1e-5, atol=1e-5)


def test_activation_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=64, max_seq_len=16, attn_impl="torch")
    model = MPTForCausalLM(cfg)
    ids = torch.randint(0, 64, (2, 16))
    model(ids, labels=ids).backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.cfg.activation_checkpointing = True
    model(ids, labels=ids).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n])


def test_chunked_loss_switch_matches_torch_loss():
    pytest.importorskip("kernels.cross_entropy")
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_heads=4, n_layers=1, vocab_size=300, max_seq_len=16, attn_impl="torch")
    model = MPTForCausalLM(cfg)
    ids = torch.randint(0, 300, (2, 16))
    ref = model(ids, labels=ids)
    model.cfg.loss_impl, model.cfg.loss_chunk_size = "chunked", 7
    torch.testing.assert_close(model(ids, labels=ids), ref, rtol=1e-5, atol=1e-5)


def test_fused_norm_switch_matches_torch_norm():
    pytest.importorskip("kernels.fused_layernorm")
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_heads=4, n_layers=2, vocab_size=128, max_seq_len=16, attn_impl="torch")
    model = MPTForCausalLM(cfg)
    ids = torch.randint(0, 128, (2, 16))
    ref = model(ids, labels=ids)
    for m in model.modules():
        if hasattr(m, "impl"):
            m.impl = "fused"
    torch.testing.assert_close(model(ids, labels=ids), ref, rtol=1e-5, atol=1e-5)


def _no_resolving(*args, **kwargs):
    raise AssertionError("attention backend resolved after the model was built")


def test_auto_backend_is_resolved_once_at_build(monkeypatch):
    """``attn_impl: auto`` becomes a concrete backend when the model is built (for the device it will run
    on) and is recorded on the model and its blocks before any forward; forward never resolves again."""
    import kernels.attention
    import trainer.model
    from trainer.data import sequence_ids

    torch.manual_seed(0)
    cfg = ModelConfig(d_model=64, n_heads=4, n_layers=2, vocab_size=1000, max_seq_len=64, attn_impl="auto")
    model = MPTForCausalLM(cfg, attn_device="cpu")
    assert model.attn_backend == "torch"  # CPU: the torch reference
    assert [b.attn.backend for b in model.transformer.blocks] == ["torch", "torch"]
    assert cfg.attn_impl == "auto"  # the config (what checkpoints record) is not rewritten

    monkeypatch.setattr(kernels.attention, "resolve_backend", _no_resolving)
    monkeypatch.setattr(trainer.model, "resolve_backend", _no_resolving)
    ids = torch.randint(0, 1000, (2, 64))
    ids[:, 30] = 0  # EOS: two documents per row
    loss = model(ids, labels=ids)
    loss.backward()
    packed = model(ids, labels=ids, seq_id=sequence_ids(ids))  # torch masks documents: same backend
    assert not torch.isclose(loss, packed)  # the document mask changed the attention
    assert [b.attn.backend for b in model.transformer.blocks] == ["torch", "torch"]
    for b in model.transformer.blocks:  # set by hand: looked up here, used as is
        b.attn.backend = "sdpa"
    assert torch.allclose(model(ids, labels=ids), loss, atol=1e-5)
    assert [b.attn.backend for b in model.transformer.blocks] == ["sdpa", "sdpa"]
    with pytest.raises(ValueError, match="resolved when the model is built"):
        model.transformer.blocks[0].attn.backend = "auto"
    with pytest.raises(ValueError, match="unknown attention backend 'nope'"):
        model.transformer.blocks[0].attn.backend = "nope"


def test_build_model_resolves_auto_for_the_run_device(monkeypatch, tmp_path):
    """The trainer's build_model chooses the backend for the run's device and compute dtype, once."""
    import kernels.attention
    import trainer.model
    from trainer.config import load_config
    from trainer.train import Dist, build_model

    cfg = load_config(None, ["model.d_model=64", "model.n_heads=4", "model.n_layers=2", "model.vocab_size=256",
                             "model.max_seq_len=32", "model.attn_impl=auto", "seq_len=32", "device=cpu",
                             "fsdp=off", f"run_dir={tmp_path}"])
    model = build_model(cfg, Dist(device=torch.device("cpu")))
    assert model.attn_backend == "torch" and model.attn_device_type == "cpu"
    monkeypatch.setattr(kernels.attention, "resolve_backend", _no_resolving)
    monkeypatch.setattr(trainer.model, "resolve_backend", _no_resolving)
    ids = torch.randint(0, 256, (2, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(ids, labels=ids)
    loss.backward()
    assert torch.isfinite(loss)


def test_backend_chosen_at_build_refuses_calls_it_was_not_chosen_for():
    """A model built for another device, or a backend without a document mask called with seq_id, fails
    with a message that says how to build it instead of silently switching backend per call."""
    from trainer.data import sequence_ids

    cfg = ModelConfig(d_model=64, n_heads=4, n_layers=1, vocab_size=1000, max_seq_len=64, attn_impl="auto")
    model = MPTForCausalLM(cfg, attn_device="cuda")  # a GPU kernel or flex, chosen without a GPU present
    assert model.attn_backend != "torch" and model.attn_device_type == "cuda"
    ids = torch.randint(1, 1000, (1, 64))
    with pytest.raises(ValueError, match=r"attn_device='cpu'"):
        model(ids)
    model = MPTForCausalLM(cfg, attn_device="cpu")
    model.transformer.blocks[0].attn.backend = "cudnn"  # no packed-document mask (kernels.attention.BACKENDS)
    with pytest.raises(ValueError, match=r"'cudnn' cannot mask packed documents"):
        model(ids, seq_id=sequence_ids(ids))
