"""`mcc-fast info`: versions, the CUDA kernels (compiled module and NVRTC fallback) and every
backend with the reason it can or cannot run."""
from __future__ import annotations

import json

import mcc_fast
from mcc_fast.cli import main


def test_info_json_and_text(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mcc_fast"] == mcc_fast.__version__
    assert set(info["backends"]) == {"cuda", "triton", "torch"}
    assert all(set(s) == {"available", "reason"} and s["reason"] for s in info["backends"].values())
    assert info["backends"]["torch"]["available"] is True
    fallback = info["cuda_runtime_compiler"]
    assert isinstance(fallback["available"], bool) and fallback["reason"]
    ext = info["cuda_extension"]
    assert ext is None or ext["runtime"] in ("compiled", "nvrtc")
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"mcc_fast {mcc_fast.__version__}")
    assert "NVRTC fallback:" in text and "CUDA kernels:" in text
    for name in ("cuda", "triton", "torch"):
        assert f"  {name}" in text
