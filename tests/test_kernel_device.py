"""kernels/_device.py: Triton entry points launch on their tensors' CUDA device (Triton itself
launches on the current device: tensors on cuda:1 with cuda:0 current failed in Triton)."""
from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import re
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

os.environ.setdefault("TRITON_INTERPRET", "1")
from mcc_fast.kernels._device import on_tensor_device  # noqa: E402

KERNEL_MODULES = ("compose_flow", "dense_motion_input", "grid_sample", "group_norm_swish", "keypoint_heatmaps",
                  "sparse_motions", "vq_codebook_grad", "vq_search", "warp", "warp_many")


@pytest.fixture()
def devices(monkeypatch):
    """cuda:0 current; records each torch.cuda.device(...) entered and the device current inside."""
    state = {"current": 0, "entered": []}

    @contextlib.contextmanager
    def device(d):
        previous, state["current"] = state["current"], torch.device(d).index
        state["entered"].append(state["current"])
        try:
            yield
        finally:
            state["current"] = previous

    monkeypatch.setattr(torch.cuda, "current_device", lambda: state["current"])
    monkeypatch.setattr(torch.cuda, "device", device)
    return state


def _fake(device: str) -> torch.Tensor:
    with FakeTensorMode():
        return torch.empty(2, device=device)


def test_a_launch_runs_on_its_first_tensors_device(devices):
    seen = []
    launch = on_tensor_device(lambda *args, **kwargs: seen.append(devices["current"]) or "done")
    assert launch([1, 2], _fake("cuda:1"), _fake("cuda:0")) == "done"  # the first *tensor* argument
    assert launch(codebook=_fake("cuda:2")) == "done"  # keyword tensors too
    assert seen == [1, 2] and devices["entered"] == [1, 2] and devices["current"] == 0


def test_a_launch_on_the_current_device_or_the_cpu_switches_nothing(devices):
    seen = []
    launch = on_tensor_device(lambda *args: seen.append(devices["current"]))
    launch(_fake("cuda:0"))
    launch(torch.zeros(2))
    launch(3, "no tensor")
    assert seen == [0, 0, 0] and devices["entered"] == []


def test_an_error_inside_restores_the_current_device(devices):
    def fail(x):
        raise ValueError("kernel failed")

    with pytest.raises(ValueError, match="kernel failed"):
        on_tensor_device(fail)(_fake("cuda:1"))
    assert devices["current"] == 0


def test_every_entry_point_the_ops_call_is_guarded():
    """Each kernels/*.py function that mcc_fast/ops calls (`<module>.<name>(`) launches on its device."""
    ops_source = "\n".join(p.read_text() for p in (Path(__file__).parents[1] / "mcc_fast" / "ops").glob("*.py"))
    called = 0
    for name in KERNEL_MODULES:
        module = importlib.import_module(f"mcc_fast.kernels.{name}")
        for attr, fn in vars(module).items():
            if inspect.isfunction(fn) and fn.__module__ == module.__name__ and not attr.startswith("_") \
                    and re.search(rf"\.{attr}\(", ops_source):
                called += 1
                assert getattr(fn, "on_tensor_device", False), f"kernels/{name}.py: {attr} is not @on_tensor_device"
    assert called >= 15
