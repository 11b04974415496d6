"""Export a trainer checkpoint to a Hugging Face ``MptForCausalLM`` directory.

Our parameter names already are HF's, so export is: read the model from the DCP checkpoint (any world
size, no process group needed), drop nothing but the tied ``lm_head`` (HF re-ties it), write
``model.safetensors`` and a config.json with both HF's and llm-foundry's keys. HF native MPT silently
ignores several llm-foundry fields (e.g. ``attn_config.attn_uses_sequence_id``, ``no_bias=False``
variants, non-ALiBi position schemes), so we refuse models it would misread.

    python -m trainer.export --checkpoint runs/x/checkpoints/step_000100 --out hf/ [--dtype bf16]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from contract.tokens import EOS as EOS_ID
from trainer.config import ModelConfig


def hf_config(cfg: ModelConfig, dtype: str = "float32") -> dict:
    if cfg.expansion_ratio != 4 or cfg.alibi_bias_max != 8:
        raise ValueError("HF MptForCausalLM hard-codes expansion_ratio 4 and alibi_bias_max 8; "
                         f"this model has {cfg.expansion_ratio} and {cfg.alibi_bias_max}")
    return {
        "architectures": ["MPTForCausalLM"],
        "model_type": "mpt",
        "d_model": cfg.d_model,
        "n_heads": cfg.n_heads,
        "n_layers": cfg.n_layers,
        "expansion_ratio": cfg.expansion_ratio,
        "max_seq_len": cfg.max_seq_len,
        "vocab_size": cfg.vocab_size,
        "layer_norm_epsilon": cfg.norm_eps,
        "norm_eps": cfg.norm_eps,
        "norm_type": "low_precision_layernorm",
        "no_bias": True,
        "learned_pos_emb": False,
        "logit_scale": None,
        "emb_pdrop": 0,
        "resid_pdrop": 0,
        "embedding_fraction": 1.0,
        "use_cache": False,
        "tie_word_embeddings": True,
        "bos_token_id": EOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": None,
        "torch_dtype": dtype,
        "init_config": {"name": "kaiming_normal_", "fan_mode": "fan_in", "init_nonlinearity": "relu",
                        "init_gain": 0.0, "init_div_is_residual": cfg.init_div_is_residual,
                        "emb_init_std": None, "emb_init_uniform_lim": None, "init_std": None},
        # attn_pdrop is an int in transformers 5 (strict config); 0 reads the same everywhere
        "attn_config": {"attn_type": "multihead_attention", "attn_impl": "torch", "alibi": True,
                        "alibi_bias_max": cfg.alibi_bias_max, "attn_pdrop": 0, "clip_qkv": None,
                        "qk_ln": False, "softmax_scale": None, "attn_uses_sequence_id": False,
                        "prefix_lm": False},
    }


def export_model(state_dict: dict, cfg: ModelConfig, out_dir: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write config.json + model.safetensors for ``AutoModelForCausalLM.from_pretrained(out_dir)``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, t in state_dict.items():
        name = name.removeprefix("model.").removeprefix("_orig_mod.")
        if name.startswith("lm_head."):
            continue
        if hasattr(t, "full_tensor"):
            t = t.full_tensor()
        tensors[name] = t.detach().to("cpu", dtype).contiguous()
    dtype_name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
    tmp = out / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(hf_config(cfg, dtype_name), indent=2) + "\n")
    return out


def load_checkpoint_model(checkpoint: str | Path):
    """Rebuild the model from a checkpoint directory written by ``trainer.checkpoint`` (on CPU)."""
    import torch.distributed.checkpoint as dcp

    from trainer.checkpoint import read_meta
    from trainer.config import model_config_from_dict
    from trainer.model import MPTForCausalLM

    meta = read_meta(checkpoint)
    cfg = model_config_from_dict(meta["config"]["model"])
    model = MPTForCausalLM(cfg, attn_device="cpu")
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=str(checkpoint))
    model.load_state_dict(state["model"])
    return model, cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint dir (step_NNNNNN) or a run's checkpoints/ dir (latest)")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = p.parse_args(argv)
    from trainer.checkpoint import resolve_checkpoint

    try:
        ckpt = resolve_checkpoint(args.checkpoint)
        model, cfg = load_checkpoint_model(ckpt)
        out = export_model(model.state_dict(), cfg, args.out, getattr(torch, args.dtype))
    except (FileNotFoundError, ValueError) as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 1
    print(f"exported {ckpt} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
