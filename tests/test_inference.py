"""Inference API: `Model.animate`, FOMM relative motion, input conversion (tiny CPU model)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from mcc_fast.inference import (
    ResizeNote,
    center_square_box,
    convex_hull_area,
    crop_images,
    movement_scale,
    normalize_keypoints,
    parse_crop,
    relative_keypoints,
    to_image_tensor,
)
from mcc_fast.inference.relative_motion import _hull_area_monotone_chain
from mcc_fast.model.config import ModelConfig
from mcc_fast.model.model import Model
from mcc_fast.model.motion.keypoint_detector import Keypoints

SIZE = 64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The CI machine's 2 cores are shared: one intra-op thread is several times faster here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Model:
    """A random-weight small model, saved in our format and loaded back (eval, CPU)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    Model(ModelConfig.small(SIZE, num_kp=5, width=16)).save_pretrained(path)
    return Model.from_pretrained(path, device="cpu")


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """Driving video: 3 frames uint8 (3, 64, 64, 3), a moving bright square on noise."""
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 80, (3, SIZE, SIZE, 3), dtype=np.uint8)
    for i in range(3):
        frames[i, 16 + 4 * i:40 + 4 * i, 20:44] = 230
    return frames


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    rng = np.random.default_rng(2)
    return rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).movedim(-1, -3).float() / 127.5 - 1


@pytest.fixture(scope="module")
def reference_output(model, face, clip) -> torch.Tensor:
    """Relative animation of `face` by `clip` from uint8 arrays, (3, 3, S, S) float."""
    return torch.stack(list(model.animate(face, clip, batch_size=3, output="tensor")))


# ---- the API on each input form ----------------------------------------------------------------

def test_numpy_frames_out(model, face, clip, reference_output):
    frames = list(model.animate(face, clip, batch_size=2))
    assert len(frames) == 3
    for frame in frames:
        assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape == (SIZE, SIZE, 3)
    expected = ((reference_output.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
    # batch size 2 vs 3 gives the same frames up to float noise (one uint8 step at most)
    assert np.abs(np.stack(frames).astype(int) - expected.astype(int)).max() <= 1


def test_tensor_output(model, reference_output):
    assert reference_output.shape == (3, 3, SIZE, SIZE)
    assert reference_output.dtype == torch.float32 and reference_output.device.type == "cpu"
    assert reference_output.min() >= -1 and reference_output.max() <= 1
    assert torch.isfinite(reference_output).all()


def test_pil_images_and_generator(model, face, clip, reference_output):
    frames = (Image.fromarray(f) for f in clip)  # a generator: streamed
    out = torch.stack(list(model.animate(Image.fromarray(face), frames, batch_size=2, output="tensor")))
    torch.testing.assert_close(out, reference_output, atol=1e-4, rtol=0)


def test_tensors_and_list_of_frames(model, face, clip, reference_output):
    out = torch.stack(list(model.animate(to_tensor(face)[None], list(to_tensor(clip)), batch_size=1, output="tensor")))
    torch.testing.assert_close(out, reference_output, atol=1e-4, rtol=0)


def test_explicit_reference_frame_is_the_default(model, face, clip, reference_output):
    out = torch.stack(list(model.animate(face, to_tensor(clip), reference=clip[0], batch_size=3, output="tensor")))
    torch.testing.assert_close(out, reference_output, atol=1e-4, rtol=0)


def test_relative_with_source_as_reference_reproduces_absolute(model, clip):
    relative = torch.stack(list(model.animate(clip[0], clip, relative=True, adapt_scale=True, output="tensor")))
    absolute = torch.stack(list(model.animate(clip[0], clip, relative=False, output="tensor")))
    torch.testing.assert_close(relative, absolute, atol=1e-4, rtol=0)
    # and absolute animation of the source by itself is the plain forward pass
    source = to_tensor(clip[:1])
    with torch.no_grad():
        direct = model(source, source).clamp(-1, 1)
    torch.testing.assert_close(absolute[:1], direct, atol=1e-4, rtol=0)


def test_relative_differs_from_absolute_for_another_face(model, face, clip, reference_output):
    absolute = torch.stack(list(model.animate(face, clip, relative=False, output="tensor")))
    assert (absolute - reference_output).abs().max() > 1e-3


def test_side_by_side_layout(model, face, clip):
    frame = next(model.animate(face, clip, side_by_side=True))
    assert frame.shape == (SIZE, 3 * SIZE, 3)
    np.testing.assert_array_equal(frame[:, :SIZE], face)
    np.testing.assert_array_equal(frame[:, SIZE:2 * SIZE], clip[0])


def test_driving_frames_are_read_one_batch_at_a_time(model, face, clip):
    """Frames are consumed lazily: the first output needs only the first batch_size driving frames."""
    read = []

    def frames():
        for frame in clip:
            read.append(frame)
            yield frame

    for batch_size in (1, 2):
        read.clear()
        outputs = model.animate(face, frames(), batch_size=batch_size)
        assert read == []  # nothing read before the first next()
        next(outputs)
        assert len(read) == batch_size


def test_train_mode_and_grad_mode_left_alone(model, face, clip):
    model.train()
    try:
        frames = model.animate(face, clip[:2], batch_size=1)
        next(frames)
        assert torch.is_grad_enabled()  # no_grad is not leaked across the yield
        assert model.training
        next(frames)
    finally:
        model.eval()


def _modes(module: torch.nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in module.named_modules()}


def test_each_submodules_mode_is_restored(model, face, clip):
    """A training model with a frozen (eval-mode) motion estimator keeps it frozen after animate
    (restoring with model.train(True) put every submodule in training mode)."""
    model.train()
    model.motion_estimator.eval()
    before = _modes(model)
    try:
        list(model.animate(face, clip[:2], batch_size=1))
        assert _modes(model) == before
    finally:
        model.eval()


def test_a_training_submodule_of_an_eval_model_runs_in_eval_mode(model, face, clip, reference_output):
    """An eval model with one submodule in training mode still animates in eval mode (its
    BatchNorm running statistics are neither used nor updated) and the submodule's mode is kept."""
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    model.motion_estimator.train()
    try:
        frames = torch.stack(list(model.animate(face, clip, batch_size=3, output="tensor")))
        assert model.motion_estimator.training and not model.training
    finally:
        model.eval()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, buffers[k])]
    assert not changed, changed[:3]
    assert torch.equal(frames, reference_output)


# ---- resizing and cropping -----------------------------------------------------------------------

@pytest.mark.parametrize("fast", [False, True])
def test_source_tensor_is_read_when_animate_is_called(model, face, clip, fast):
    """The source is taken at call time: refilling the caller's tensor before the frames are read changes nothing."""
    source = to_tensor(face)
    expected = torch.stack(list(model.animate(source.clone(), clip, batch_size=2, output="tensor", fast=fast,
                                              side_by_side=True)))
    buffer = source.clone()
    frames = model.animate(buffer, clip, batch_size=2, output="tensor", fast=fast, side_by_side=True)
    buffer.copy_(-source)
    assert torch.equal(torch.stack(list(frames)), expected)


def test_resize_note_strict_and_crop(model, face, clip):
    big = np.zeros((80, 100, 3), np.uint8)
    big[8:72, 20:84] = face
    with pytest.warns(ResizeNote, match="source: resized from 100x80 to 64x64.*aspect ratio"):
        resized = next(model.animate(big, clip[:1], output="tensor"))
    with pytest.raises(ValueError, match="source: expected 64x64 images \\(strict\\)"):
        model.animate(big, clip[:1], strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the crop makes it 64x64: no note
        cropped = next(model.animate(big, clip[:1], source_crop=(20, 8, 64, 64), strict=True, output="tensor"))
        direct = next(model.animate(face, clip[:1], output="tensor"))
    torch.testing.assert_close(cropped, direct)
    assert resized.shape == direct.shape
    notes = []
    list(model.animate(face, [np.zeros((70, 70, 3), np.uint8)] * 2, batch_size=1, note=notes.append))
    assert notes == ["driving: resized from 70x70 to 64x64 (width x height)"]  # once per size


def test_crop_helpers():
    assert center_square_box(80, 100) == (10, 0, 80, 80)
    assert center_square_box(100, 80) == (0, 10, 80, 80)
    assert parse_crop("4,5,30,31") == (4, 5, 30, 31)
    assert parse_crop(" center ") == "center"
    with pytest.raises(ValueError, match="crop must be 'x,y,w,h'"):
        parse_crop("1,2,3")
    images = torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).reshape(2, 3, 6, 8)
    assert torch.equal(crop_images(images, (1, 2, 3, 4)), images[..., 2:6, 1:4])
    assert torch.equal(crop_images(images, "center"), images[..., :, 1:7])
    with pytest.raises(ValueError, match="source crop .* must lie inside the 8x6"):
        crop_images(images, (4, 0, 5, 6), name="source")


# ---- bad inputs ------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, message", [
    (np.zeros((SIZE, SIZE, 4), np.uint8), "source: expected 3 \\(RGB\\) channels .* got 4"),
    (np.zeros((SIZE, SIZE), np.uint8), "source: expected 3 \\(RGB\\) channels, got a 2-D array"),
    (np.zeros((SIZE, SIZE, 3), np.float32), "source: image arrays must be uint8"),
    (torch.zeros(1, SIZE, SIZE), "source: expected 3 \\(RGB\\) channels in dim 1"),
    (torch.full((3, SIZE, SIZE), float("nan")), "source: contains NaN"),
    (torch.full((3, SIZE, SIZE), 255.0), "source: float tensor values must lie in \\[-1, 1\\]"),
    (torch.zeros(3, SIZE, SIZE, dtype=torch.uint8), "source: tensors must be floating point"),
    (torch.zeros(3, SIZE, SIZE, device="meta"), "source is on meta but the model is on cpu"),
    (np.zeros((2, SIZE, SIZE, 3), np.uint8), "source: animate takes one source image, got a batch of 2"),
    (np.zeros((0, SIZE, 3), np.uint8), "source: empty image array"),
])
def test_bad_source(model, clip, source, message):
    with pytest.raises(ValueError, match=message):
        model.animate(source, clip)


def test_bad_driving_and_options(model, face, clip, tmp_path):
    for empty in ([], np.zeros((0, SIZE, SIZE, 3), np.uint8), iter(())):
        with pytest.raises(ValueError, match="driving: empty video"):
            list(model.animate(face, empty))
    with pytest.raises(ValueError, match="driving: expected 3 \\(RGB\\) channels"):
        list(model.animate(face, [np.zeros((SIZE, SIZE, 1), np.uint8)]))
    # a grey video (F, H, W) is read as one frame: the error names the shape that was passed
    with pytest.raises(ValueError, match=r"driving: a 3-D input is one RGB frame .*got shape \(2, 64, 64\)"):
        model.animate(face, np.zeros((2, SIZE, SIZE), np.uint8))
    with pytest.raises(ValueError, match=r"driving: a 3-D input is one RGB frame .*got shape \(2, 64, 64\)"):
        model.animate(face, torch.zeros(2, SIZE, SIZE))
    with pytest.raises(ValueError, match="driving: contains NaN"):
        list(model.animate(face, torch.full((2, 3, SIZE, SIZE), float("nan"))))
    with pytest.raises(ValueError, match="driving is on meta"):
        list(model.animate(face, torch.zeros(2, 3, SIZE, SIZE, device="meta")))
    with pytest.raises(TypeError, match="driving: expected a video path"):
        model.animate(face, 5)
    with pytest.raises(RuntimeError, match="driving video .* does not exist"):
        model.animate(face, tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        model.animate(face, clip, batch_size=0)
    with pytest.raises(ValueError, match="output must be one of"):
        model.animate(face, clip, output="list")
    with pytest.raises(ValueError, match="reference: expected one frame"):
        model.animate(face, clip, reference=clip[:2])


def test_arguments_are_checked_at_call_time(model, face, clip):
    frames = list(model.animate(face, clip[:2], batch_size=np.int64(2)))  # numpy integers are integers
    assert len(frames) == 2
    for flag in ("relative", "adapt_scale", "side_by_side", "strict"):
        with pytest.raises(TypeError, match=f"{flag} must be True or False, got 'False'"):
            model.animate(face, clip, **{flag: "False"})
    with pytest.raises(TypeError, match="fast must be True, False or None"):
        model.animate(face, clip, fast="no")
    with pytest.raises(TypeError, match="note must be a callable"):
        model.animate(face, clip, note="quiet")
    for crop in ("foo", (1, 2, 3), (0, 0, -4, 8), (8.9, 8.9, 40.9, 40.9), (True, 0, 8, 8)):
        with pytest.raises(ValueError, match="crop"):
            model.animate(face, iter(clip), crop=crop)  # not only at the first frame
    with pytest.raises(ValueError, match="source_crop"):
        model.animate(face, clip, source_crop=(0, 0, 0, 4))
    box = (2.0, 2, np.int64(40), torch.tensor(40).item())  # integral values of any integer type
    assert len(list(model.animate(face, clip[:1], crop=box))) == 1
    with pytest.raises(TypeError, match="source must be a tensor"):  # the reference path too
        model(face, torch.zeros(1, 3, SIZE, SIZE))


def test_zero_to_one_float_images_are_warned_about(model, face):
    from mcc_fast.inference.inputs import UnitRangeWarning

    unit = torch.from_numpy(face).permute(2, 0, 1).float() / 255  # torchvision ToTensor's range
    with pytest.warns(UnitRangeWarning, match=r"source: every value lies in \[0, 1\].*x \* 2 - 1"):
        to_image_tensor(unit, name="source")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnitRangeWarning)
        to_image_tensor(unit * 2 - 1, name="source")


def test_to_image_tensor_forms():
    array = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    batch = to_image_tensor(array, name="x")
    assert batch.shape == (2, 3, 4, 5) and batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1
    torch.testing.assert_close(to_image_tensor(Image.fromarray(array[1])), batch[1:])
    torch.testing.assert_close(to_image_tensor(batch[0]), batch[:1])
    grey = Image.fromarray(array[0, ..., 0], mode="L")  # PIL modes are converted to RGB
    assert to_image_tensor(grey).shape == (1, 3, 4, 5)


def test_image_helpers_check_size_dtype_and_strict():
    # public helpers: bad arguments name themselves (they gave a [-1, 0] int tensor, or a resize note
    # "resized to 0x0" then torch's error, or a truthy strict string taken as strict=True)
    from mcc_fast.inference import fit_to_size, prepare_images

    array = np.zeros((8, 8, 3), np.uint8)
    for bad in (torch.int64, torch.uint8, torch.bool, "float32"):
        with pytest.raises(ValueError, match="dtype must be a floating torch.dtype"):
            to_image_tensor(array, dtype=bad)
        with pytest.raises(ValueError, match="dtype must be a floating torch.dtype"):
            prepare_images(array, size=8, dtype=bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before any resize note
        for bad in (0, -4, 1.5, "8", True, None):
            with pytest.raises(ValueError, match="size must be a positive int"):
                fit_to_size(torch.zeros(1, 3, 8, 8), bad)
            with pytest.raises(ValueError, match="size must be a positive int"):
                prepare_images(array, size=bad)
    for bad in ("no", 1, None):
        with pytest.raises(TypeError, match="strict must be True or False"):
            fit_to_size(torch.zeros(1, 3, 8, 8), 4, strict=bad)
    assert fit_to_size(torch.zeros(1, 3, 8, 8), np.int64(8)).shape == (1, 3, 8, 8)


# ---- relative motion ------------------------------------------------------------------------------

def _random_keypoints(batch: int, k: int, seed: int) -> Keypoints:
    g = torch.Generator().manual_seed(seed)
    value = torch.rand(batch, k, 2, generator=g) * 1.6 - 0.8
    jacobian = torch.eye(2) + 0.3 * torch.randn(batch, k, 2, 2, generator=g)
    return Keypoints(value, jacobian)


def test_relative_keypoints_formula():
    kp_s, kp_d0, kp_d = _random_keypoints(1, 5, 0), _random_keypoints(1, 5, 1), _random_keypoints(4, 5, 2)
    out = relative_keypoints(kp_s, kp_d, kp_d0, scale=torch.tensor([0.7]))
    torch.testing.assert_close(out.value, kp_s.value + 0.7 * (kp_d.value - kp_d0.value))
    expected_jacobian = kp_d.jacobian @ torch.linalg.inv(kp_d0.jacobian) @ kp_s.jacobian  # FOMM order
    torch.testing.assert_close(out.jacobian, expected_jacobian, atol=1e-5, rtol=1e-5)
    # the reference frame itself maps to the source keypoints
    same = relative_keypoints(kp_s, kp_d0, kp_d0, scale=0.7)
    torch.testing.assert_close(same.value, kp_s.value)
    torch.testing.assert_close(same.jacobian, kp_s.jacobian, atol=1e-5, rtol=1e-5)
    # absolute: the driving keypoints unchanged; no jacobians: the driving's (None)
    assert normalize_keypoints(kp_s, kp_d, kp_d0, relative=False) is kp_d
    bare = relative_keypoints(Keypoints(kp_s.value), Keypoints(kp_d.value), Keypoints(kp_d0.value))
    assert bare.jacobian is None
    # only the driving frame has jacobians: they are passed through, as the docstring says
    partial = relative_keypoints(Keypoints(kp_s.value), kp_d, Keypoints(kp_d0.value))
    assert partial.jacobian is kp_d.jacobian


def test_relative_keypoints_half_precision():
    kp_s, kp_d0, kp_d = (_random_keypoints(1, 5, i) for i in range(3))
    half = [Keypoints(k.value.half(), k.jacobian.half()) for k in (kp_s, kp_d, kp_d0)]
    out = relative_keypoints(*half, scale=1.0)
    assert out.value.dtype == torch.float16 and out.jacobian.dtype == torch.float16


def test_convex_hull_area_and_movement_scale():
    square = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [0, 0], [0.5, 0.2]])
    assert convex_hull_area(square) == pytest.approx(4.0)
    assert _hull_area_monotone_chain(square) == pytest.approx(4.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        points = rng.uniform(-1, 1, (15, 2))
        assert convex_hull_area(points, use_scipy=False) == pytest.approx(convex_hull_area(points))
    assert convex_hull_area(np.array([[0, 0], [1, 1], [2, 2]])) == 0.0  # collinear
    for bad in (np.nan, np.inf):  # a non-finite point gives NaN (documented), on both implementations
        points = np.array([[-1, -1], [1, -1], [1, 1], [bad, 0.5]])
        assert np.isnan(convex_hull_area(points)) and np.isnan(convex_hull_area(points, use_scipy=False))
    kp = torch.from_numpy(rng.uniform(-0.5, 0.5, (2, 10, 2))).float()
    torch.testing.assert_close(movement_scale(2 * kp, kp), torch.tensor([2.0, 2.0]))
    # per sample (FOMM takes sample 0's scale for the whole batch), and a batch-1 reference broadcasts
    per_sample = torch.stack([2 * kp[0], 0.5 * kp[1]])
    torch.testing.assert_close(movement_scale(per_sample, kp), torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(movement_scale(torch.stack([3 * kp[0], kp[0]]), kp[:1]), torch.tensor([3.0, 1.0]))
    with pytest.warns(RuntimeWarning, match="degenerate keypoint hull"):
        scale = movement_scale(kp[:1], torch.zeros(1, 10, 2))
    assert scale.tolist() == [1.0]
    scaled = normalize_keypoints(Keypoints(2 * kp[:1]), Keypoints(kp[1:] + 0.1), Keypoints(kp[:1]))
    torch.testing.assert_close(scaled.value, 2 * kp[:1] + 2 * (kp[1:] + 0.1 - kp[:1]))


# ---- the fast path -------------------------------------------------------------------------------

@pytest.mark.parametrize("relative", [True, False])
def test_fast_path_gives_the_reference_frames(model, face, relative):
    # A noise clip: with the square clip one absolute flow lies 7e-6 from |flow| = 1, where the
    # discrete out-of-frame token mask may legitimately flip between two float32 paths.
    clip = np.random.default_rng(5).integers(0, 255, (3, SIZE, SIZE, 3), dtype=np.uint8)
    ref = torch.stack(list(model.animate(face, clip, relative=relative, batch_size=2, output="tensor", fast=False)))
    fast = torch.stack(list(model.animate(face, clip, relative=relative, batch_size=2, output="tensor", fast=True)))
    assert fast.shape == ref.shape
    assert (fast - ref).abs().max() < 1e-3


def test_fast_path_follows_the_model_flag(model, face, clip, reference_output, monkeypatch):
    calls = []
    real_fast = model.fast

    def spy(*args, **kwargs):
        calls.append(1)
        return real_fast(*args, **kwargs)

    monkeypatch.setattr(model, "fast", spy)
    monkeypatch.setattr(model, "fast_path", True)
    frames = torch.stack(list(model.animate(face, clip, batch_size=3, output="tensor")))
    assert calls, "model.fast_path=True must route animate through the fast path"
    assert (frames - reference_output).abs().max() < 1e-3


def test_fast_path_prepares_the_source_again_after_a_weight_update(model, face):
    """animate holds the source image: a weight update between batches re-prepares its cache
    (the fast path refuses stale caches) instead of failing or using the old weights."""
    import copy

    clip = np.random.default_rng(6).integers(0, 255, (3, SIZE, SIZE, 3), dtype=np.uint8)
    mine = copy.deepcopy(model)
    frames = mine.animate(face, clip, relative=False, batch_size=1, output="tensor", fast=True)
    next(frames)
    with torch.no_grad():
        mine.generator.encoder.stem.weight.mul_(1.3)
    rest = torch.stack(list(frames))
    expected = torch.stack(list(mine.animate(face, clip[1:], relative=False, batch_size=1, output="tensor", fast=True)))
    assert torch.equal(rest, expected)
