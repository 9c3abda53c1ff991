"""The model's output records print shapes, not tensor values (mcc_fast/model/summary.py)."""
from __future__ import annotations

import dataclasses

import torch

import mcc_fast
from mcc_fast.model.summary import describe, summary_repr


def test_describe_shows_shape_dtype_and_grad_not_values():
    x = torch.full((2, 3), 7.25, requires_grad=True)
    assert describe(x) == "Tensor((2, 3), float32, requires_grad)"
    assert describe(torch.zeros(4, dtype=torch.bool)) == "Tensor((4,), bool)"
    assert describe((torch.zeros(1),)) == "(Tensor((1,), float32),)"
    assert describe([torch.zeros(1, 2), None]) == "[Tensor((1, 2), float32), None]"
    assert describe({"a": torch.zeros(())}) == "{'a': Tensor((), float32)}"
    assert describe(3) == "3"


def test_summary_repr_skips_fields_marked_repr_false():
    @dataclasses.dataclass
    class Record:
        __repr__ = summary_repr
        big: torch.Tensor
        hidden: int = dataclasses.field(default=0, repr=False)

    assert repr(Record(torch.zeros(5, 5))) == "Record(big=Tensor((5, 5), float32))"


def test_model_output_repr_is_short():
    torch.manual_seed(0)
    small_model = mcc_fast.Model(mcc_fast.ModelConfig.small(64)).eval()
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        out = small_model(image, image, return_all=True)
        text = repr(out)
        cache = small_model.fast().prepare_source(image)
    assert text.startswith("ModelOutput(frame=Tensor((1, 3, ")
    assert "Keypoints(value=Tensor(" in text and "GeneratorOutput(" in text
    assert "tensor(" not in text and text.count("\n") == 0 and len(text) < 3000
    assert repr(cache).startswith("SourceCache(keypoints=Keypoints(")
    assert "tensor(" not in repr(cache)
