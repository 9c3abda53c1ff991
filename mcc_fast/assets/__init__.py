"""Files shipped inside mcc_fast: the embedded demo model and its sample inputs.

The demo model is our own (the MCC architecture at 64x64 with narrow widths, trained by
`mcc_fast.training` on synthetic talking heads; recipe: training/configs/demo.yaml). The
sample source portrait and driving clip are synthetic people it never saw in training.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["ASSETS", "DEMO_MODEL", "DEMO_SOURCE", "DEMO_DRIVING", "DEMO_MODEL_NOTE"]

ASSETS = Path(__file__).resolve().parent
#: fp16 safetensors file in our format (`Model.from_pretrained` loads it).
DEMO_MODEL = ASSETS / "demo_model.safetensors"
#: 64x64 RGB portrait of a held-out synthetic identity.
DEMO_SOURCE = ASSETS / "demo_source.png"
#: 64x64 driving clip of another held-out synthetic identity.
DEMO_DRIVING = ASSETS / "demo_driving.mp4"
#: What the console says when the demo model stands in for a user's checkpoint.
DEMO_MODEL_NOTE = ("using the embedded demo model (synthetic talking heads, 64x64); real faces need the "
                   "authors' checkpoint or a model trained with `mcc-fast train` (--checkpoint PATH)")
