"""MPT's low-precision LayerNorm (llm-foundry ``LPLayerNorm``) as plain torch.

Under autocast a stock ``nn.LayerNorm`` runs and returns fp32, which doubles the activation traffic
of every block. MPT instead casts input and weight to the autocast dtype and runs the norm there;
outside autocast it is exactly ``F.layer_norm``. MPT has no norm bias (``no_bias=True``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def low_precision_layernorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type=device_type, enabled=False):
            return F.layer_norm(x.to(dtype), (x.shape[-1],), weight.to(dtype), None, eps)
    return F.layer_norm(x, (x.shape[-1],), weight, None, eps)
