"""Which device a user asked for: one check shared by the API (`Model.from_pretrained`) and the CLI."""
from __future__ import annotations

import torch


def resolve_device(device, name: str = "device") -> torch.device:
    """None (CUDA when available, else CPU), "cpu", "cuda", "cuda:N", an int N (cuda:N) or a
    torch.device -> a usable torch.device; ValueError naming `name` for anything else, a
    CUDA device on a machine without one, or an index past the visible GPUs."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise ValueError(f"{name} must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got {type(device).__name__}")
    try:
        resolved = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ValueError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        hint = f"{name} cpu" if name.startswith("--") else f"{name}='cpu'"
        raise ValueError(f"{name} {device}: {why}; use {hint}")
    if resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"{name} {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    return resolved
