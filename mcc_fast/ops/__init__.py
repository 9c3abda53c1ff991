"""Public ops. Each takes `backend=None | "torch" | "triton" | "cuda"` (see mcc_fast.backends())."""
from .vq import nearest_code

__all__ = ["nearest_code"]
