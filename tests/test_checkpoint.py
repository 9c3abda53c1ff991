"""mcc_fast.model.checkpoint and mcc_fast.io.atomic: loading and saving edge cases (small models)."""
from __future__ import annotations

import json
import os
import time

import pytest
import torch

import mcc_fast
from mcc_fast.model import CheckpointError, ModelConfig
from mcc_fast.model.checkpoint import FORMAT_VERSION, metadata


@pytest.fixture(scope="module")
def small_model() -> mcc_fast.Model:
    torch.manual_seed(0)
    return mcc_fast.Model(ModelConfig.small(64)).eval()


def _write_authors_pair(model: mcc_fast.Model, folder, generator_name="net_g_latest.pth",
                        motion_name="net_motion_estimator_latest.pth"):
    from mcc_fast.model.generator.keys import official_key_map
    from mcc_fast.model.motion.keys import motion_estimator_key_map

    to_g = {ours: off for off, ours in official_key_map(model.config.generator).items()}
    to_m = {ours: off for off, ours in motion_estimator_key_map(model.config.motion).items()}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": {to_g[k]: v for k, v in model.generator.state_dict().items()}}, folder / generator_name)
    torch.save({"params": {to_m[k]: v for k, v in model.motion_estimator.state_dict().items()}}, folder / motion_name)
    return folder


def _same_weights(a: mcc_fast.Model, b: mcc_fast.Model) -> bool:
    sb = b.state_dict()
    return all(torch.equal(t, sb[k]) for k, t in a.state_dict().items())


# ---- global state ---------------------------------------------------------------------------------

def test_loading_leaves_the_global_rng_alone(tmp_path, small_model):
    """from_pretrained (ours and the authors' pair) draws nothing from torch's global generator:
    the random initialisation its weights replace ran on it, so a seeded script's later draws
    depended on whether (and which) model it loaded."""
    ours = small_model.save_pretrained(tmp_path / "m.safetensors")
    authors = _write_authors_pair(small_model, tmp_path / "authors")
    for path, config in ((ours, None), (authors, small_model.config)):
        state = torch.get_rng_state()
        mcc_fast.Model.from_pretrained(path, device="cpu", config=config)
        assert torch.equal(torch.get_rng_state(), state), path


# ---- the authors' format: config -------------------------------------------------------------------

def test_authors_pair_of_another_config_needs_config_and_says_so(tmp_path, small_model):
    folder = _write_authors_pair(small_model, tmp_path / "authors")
    with pytest.raises(CheckpointError, match=r"store no model config.*pass config="):
        mcc_fast.Model.from_pretrained(folder, device="cpu")
    loaded = mcc_fast.Model.from_pretrained(folder, device="cpu", config=small_model.config)
    assert loaded.config == small_model.config and _same_weights(loaded, small_model)
    with pytest.raises(TypeError, match="config must be a ModelConfig"):
        mcc_fast.Model.from_pretrained(folder, device="cpu", config={"image_size": 64})


def test_our_file_refuses_a_different_config(tmp_path, small_model):
    path = small_model.save_pretrained(tmp_path / "m.safetensors")
    assert _same_weights(mcc_fast.Model.from_pretrained(path, device="cpu", config=small_model.config), small_model)
    with pytest.raises(CheckpointError, match="differs from the config given"):
        mcc_fast.Model.from_pretrained(path, device="cpu", config=ModelConfig())
    # the error names the fields that differ, with the file's and the given values
    with pytest.raises(CheckpointError, match=r"generator\.num_keypoints: 10 \(file\) vs 5 \(given\)") as info:
        mcc_fast.Model.from_pretrained(path, device="cpu", config=ModelConfig.small(64, num_kp=5))
    assert "motion.num_kp: 10 (file) vs 5 (given)" in str(info.value)
    assert "image_size" not in str(info.value)


# ---- arguments checked before reading -----------------------------------------------------------

@pytest.mark.parametrize("device", ["gpu", "tpu:0", True, 1.5])
def test_bad_device_is_refused_before_reading(tmp_path, device):
    with pytest.raises(ValueError, match="device"):
        mcc_fast.Model.from_pretrained(tmp_path / "does-not-exist", device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", 0, torch.device("cuda")])
def test_cuda_device_without_cuda_is_a_clear_error(tmp_path, device):
    with pytest.raises(ValueError, match=r"device .*(no CUDA|CUDA GPU).*use device='cpu'"):
        mcc_fast.Model.from_pretrained(tmp_path / "does-not-exist", device=device)


@pytest.mark.parametrize("fast", ["no", "false", 1, 0])
def test_fast_must_be_a_bool(tmp_path, small_model, fast):
    path = small_model.save_pretrained(tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="fast must be True, False or None"):
        mcc_fast.Model.from_pretrained(path, device="cpu", fast=fast)
    assert mcc_fast.Model.from_pretrained(path, device="cpu", fast=False).fast_path is False


def test_fast_path_with_float64_is_refused_at_load(tmp_path, small_model):
    path = small_model.save_pretrained(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="fast=True with dtype float64"):
        mcc_fast.Model.from_pretrained(path, device="cpu", dtype=torch.float64, fast=True)
    model = mcc_fast.Model.from_pretrained(path, device="cpu", dtype="fp64")
    assert model.fast_path is False and next(model.parameters()).dtype == torch.float64


# ---- training folders ---------------------------------------------------------------------------

def _training_checkpoint(tmp_path, model):
    from mcc_fast.training.checkpointing import save_checkpoint
    from mcc_fast.training.losses import PatchDiscriminator, PatchDiscriminatorConfig

    disc = PatchDiscriminator(PatchDiscriminatorConfig())
    return save_checkpoint(tmp_path / "run" / "checkpoints", 7, config=model.config, generator=model.generator,
                           generator_ema=model.generator, motion_estimator=model.motion_estimator,
                           discriminator=disc, state={"step": 7}, discriminator_config=vars(disc.config))


def test_step_folder_is_checked_against_its_recorded_hash(tmp_path, small_model):
    step = _training_checkpoint(tmp_path, small_model)
    assert _same_weights(mcc_fast.Model.from_pretrained(step, device="cpu"), small_model)
    weights = step / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # one bit of tensor data: still a valid file
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="content hash differs"):
        mcc_fast.Model.from_pretrained(step, device="cpu")


def test_training_checkpoint_of_mismatched_parts_or_a_later_state_version_is_refused(tmp_path, small_model):
    """load_checkpoint: a generator.safetensors written for another model config (its record in
    state.pt consistent) and a state file of a later version are CheckpointErrors naming them."""
    import hashlib

    from safetensors.torch import load_file, save_file

    from mcc_fast.training.checkpointing import load_checkpoint

    step = _training_checkpoint(tmp_path, small_model)
    assert load_checkpoint(step).step == 7
    state_path, generator = step / "state.pt", step / "generator.safetensors"
    state = torch.load(state_path, weights_only=True)
    other = ModelConfig.small(64, num_kp=5)
    save_file(load_file(str(generator)), str(generator),
              metadata={"format": "mcc_fast.training", "part": "generator", "config": other.to_json()})
    state["files"]["generator.safetensors"] = {"bytes": generator.stat().st_size,
                                               "sha256": hashlib.sha256(generator.read_bytes()).hexdigest()}
    torch.save(state, state_path)
    with pytest.raises(CheckpointError, match=r"generator\.safetensors: its model config differs"):
        load_checkpoint(step)
    torch.save(dict(state, version=2), state_path)
    with pytest.raises(CheckpointError, match=r"state\.pt: training state version 2, expected 1"):
        load_checkpoint(step)


def test_run_folder_names_its_newest_checkpoint(tmp_path, small_model):
    step = _training_checkpoint(tmp_path, small_model)
    for folder in (tmp_path / "run", tmp_path / "run" / "checkpoints"):
        with pytest.raises(CheckpointError, match=f"training run folder.*{step.name}"):
            mcc_fast.Model.from_pretrained(folder, device="cpu")


def test_init_from_refuses_non_finite_weights_and_finds_numbered_authors_files(tmp_path, small_model):
    from mcc_fast.training.checkpointing import load_init_weights

    folder = _write_authors_pair(small_model, tmp_path / "authors", "net_g_5000.pth", "net_motion_estimator_5000.pth")
    weights, description = load_init_weights(folder, small_model.config)
    assert "authors" in description
    assert all(torch.equal(v, small_model.generator.state_dict()[k]) for k, v in weights.generator_ema.items())
    broken = mcc_fast.Model(small_model.config)
    broken.load_state_dict(small_model.state_dict())
    with torch.no_grad():
        next(broken.generator.parameters()).view(-1)[0] = float("nan")
    from safetensors.torch import save_file

    path = tmp_path / "nan.safetensors"
    good = small_model.save_pretrained(tmp_path / "good.safetensors")
    meta = {"format": "mcc_fast", "config": small_model.config.to_json()}
    save_file({k: v.contiguous() for k, v in broken.state_dict().items()}, str(path), metadata=meta)
    assert load_init_weights(good, small_model.config)[0].discriminator is None
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        load_init_weights(path, small_model.config)


def test_authors_pair_with_non_finite_weights_is_refused(tmp_path, small_model):
    """from_pretrained of the authors' pair refuses NaN/Inf weights as it does for our files."""
    broken = mcc_fast.Model(small_model.config)
    broken.load_state_dict(small_model.state_dict())
    with torch.no_grad():
        next(broken.generator.parameters()).view(-1)[0] = float("inf")
    folder = _write_authors_pair(broken, tmp_path / "authors")
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        mcc_fast.Model.from_pretrained(folder, device="cpu", config=small_model.config)


def test_several_numbered_authors_files_are_an_error_naming_them(tmp_path, small_model):
    """No net_g_latest.pth but two net_g_*.pth: a CheckpointError naming both, never one picked silently."""
    folder = _write_authors_pair(small_model, tmp_path / "authors", "net_g_5000.pth")
    (folder / "net_g_10000.pth").write_bytes((folder / "net_g_5000.pth").read_bytes())
    with pytest.raises(CheckpointError, match=r"2 files match net_g\*\.pth \(net_g_10000\.pth, net_g_5000\.pth\)"):
        mcc_fast.Model.from_pretrained(folder, device="cpu", config=small_model.config)


# ---- saving -------------------------------------------------------------------------------------

def test_fp16_save_refuses_values_that_overflow(tmp_path, small_model):
    model = mcc_fast.Model(small_model.config)
    model.load_state_dict(small_model.state_dict())
    name, buffer = next((k, b) for k, b in model.named_buffers() if k.endswith("running_var"))
    buffer.fill_(7e4)
    with pytest.raises(ValueError, match=rf"{name}: values up to 7e\+04 do not fit torch.float16"):
        model.save_pretrained(tmp_path / "half.safetensors", dtype="fp16")
    assert not list(tmp_path.iterdir())  # nothing written
    loaded = mcc_fast.Model.from_pretrained(model.save_pretrained(tmp_path / "bf16.safetensors", dtype="bf16"),
                                            device="cpu")
    assert float(dict(loaded.named_buffers())[name].max()) == pytest.approx(7e4, rel=1e-2)


def test_save_path_edge_cases(tmp_path, small_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for empty in ("", "  "):
        with pytest.raises(ValueError, match="path is empty"):
            small_model.save_pretrained(empty)
        with pytest.raises(ValueError, match="path is empty"):
            mcc_fast.Model.from_pretrained(empty, device="cpu")
    assert not list(tmp_path.iterdir())
    upper = small_model.save_pretrained(tmp_path / "U.SAFETENSORS")
    assert upper == tmp_path / "U.SAFETENSORS" and upper.is_file()
    assert _same_weights(mcc_fast.Model.from_pretrained(upper, device="cpu"), small_model)
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(ValueError, match=r"d\.safetensors' is a folder"):
        small_model.save_pretrained(tmp_path / "d.safetensors")
    for foreign in ("w.PTH", "w.Bin", "w.pt"):  # another format's suffix, in any case: refused, no folder made
        with pytest.raises(ValueError, match="save_pretrained writes safetensors"):
            small_model.save_pretrained(tmp_path / foreign)
        assert not (tmp_path / foreign).exists()
    half = small_model.save_pretrained(tmp_path / "h.safetensors", dtype="FP16")  # dtype names in any case
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(str(half)).values() if t.is_floating_point()} == {torch.float16}


def test_save_through_a_symlink_keeps_the_link(tmp_path, small_model):
    real = small_model.save_pretrained(tmp_path / "real.safetensors")
    link = tmp_path / "link.safetensors"
    link.symlink_to(real)
    other = mcc_fast.Model(small_model.config)
    other.save_pretrained(link)
    assert link.is_symlink() and os.path.samefile(link, real)
    assert _same_weights(mcc_fast.Model.from_pretrained(real, device="cpu"), other)


def test_a_killed_writers_temporary_file_is_removed_by_the_next_save(tmp_path, small_model):
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    old = time.time() - 2 * 3600
    stale = tmp_path / f".model.{dead_pid}-0123456789ab.tmp.safetensors"
    legacy = tmp_path / ".model.ba9876543210.tmp.safetensors"  # a name without a pid (older versions)
    recent = tmp_path / f".model.{dead_pid}-aaaaaaaaaaaa.tmp.safetensors"
    live = tmp_path / f".model.{os.getppid()}-bbbbbbbbbbbb.tmp.safetensors"
    for p in (stale, legacy, recent, live):
        p.write_bytes(b"partial")
    for p in (stale, legacy, live):
        os.utime(p, (old, old))
    small_model.save_pretrained(tmp_path)
    assert not stale.exists() and not legacy.exists()
    assert recent.exists() and live.exists()  # maybe still being written
    assert (tmp_path / "model.safetensors").is_file()


# ---- our format: versions and dtypes ------------------------------------------------------------

def _rewrite(path, *, meta_update=None, tensors_update=None):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(meta_update or {})
    tensors.update(tensors_update or {})
    save_file(tensors, str(path), metadata=meta)


def test_metadata_reports_the_writer_and_later_formats_are_named(tmp_path, small_model):
    path = small_model.save_pretrained(tmp_path / "m.safetensors")
    meta = metadata(path)
    assert meta["format_version"] == FORMAT_VERSION and meta["mcc_fast_version"] == mcc_fast.__version__
    assert meta["config"] == json.loads(small_model.config.to_json())
    _rewrite(path, meta_update={"format_version": str(FORMAT_VERSION + 1), "mcc_fast_version": "99.0"})
    with pytest.raises(CheckpointError, match=r"written by mcc_fast 99\.0 in format version 2.*upgrade"):
        mcc_fast.Model.from_pretrained(path, device="cpu")
    config = json.loads(small_model.config.to_json())
    config["generator"]["a_future_field"] = 1
    _rewrite(path, meta_update={"format_version": "1", "config": json.dumps(config)})
    with pytest.raises(CheckpointError, match=r"written by mcc_fast 99\.0\) is not one this"):
        mcc_fast.Model.from_pretrained(path, device="cpu")


@pytest.mark.parametrize("dtype", [torch.bool, torch.int32])
def test_a_float_weight_stored_as_another_kind_is_refused(tmp_path, small_model, dtype):
    path = small_model.save_pretrained(tmp_path / "m.safetensors")
    name, value = next((k, v) for k, v in small_model.state_dict().items() if v.is_floating_point())
    _rewrite(path, tensors_update={name: torch.ones(value.shape, dtype=dtype)})
    with pytest.raises(CheckpointError, match=rf"wrong kind of dtype: {name} \({dtype}"):
        mcc_fast.Model.from_pretrained(path, device="cpu")


def test_safetensors_files_are_identical_for_identical_contents(tmp_path):
    """safetensors writes its metadata map in a random order; our files (and their sha256) must not vary."""
    from safetensors import safe_open

    from mcc_fast.io.safetensors_bytes import safetensors_bytes

    tensors = {"b": torch.arange(6.0).view(2, 3), "a": torch.ones(4, dtype=torch.float16)}
    metadata = {k: f"value {i} é" for i, k in enumerate("qwertyuiop")}
    files = {safetensors_bytes(tensors, metadata) for _ in range(20)}
    assert len(files) == 1
    path = tmp_path / "w.safetensors"
    path.write_bytes(files.pop())
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == metadata
        assert torch.equal(f.get_tensor("b"), tensors["b"]) and torch.equal(f.get_tensor("a"), tensors["a"])
    assert len({safetensors_bytes(tensors) for _ in range(3)}) == 1  # no metadata at all


def test_saving_a_model_twice_gives_the_same_bytes(small_model, tmp_path):
    from mcc_fast.model.checkpoint import save_model

    first = save_model(small_model, tmp_path / "one.safetensors").read_bytes()
    second = save_model(small_model, tmp_path / "two.safetensors").read_bytes()
    assert first == second


def test_weight_files_are_written_without_a_second_copy_of_the_weights():
    """safetensors_chunks hands out the tensor bytes as a view of safetensors' own buffer."""
    import tracemalloc

    from mcc_fast.io.safetensors_bytes import safetensors_chunks

    tensors = {"w": torch.zeros(4 * 2**20 // 4)}  # 4 MiB
    tracemalloc.start()
    try:
        head, body = safetensors_chunks(tensors, {"b": "2", "a": "1"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(body, memoryview) and body.nbytes == 4 * 2**20
    assert peak < 1.5 * 4 * 2**20, peak  # one copy (safetensors'), not two or three
    assert b'"__metadata__":{"a":"1","b":"2"}' in head


# ---- files from elsewhere: a config that declares more than the file holds ---------------------

@pytest.mark.parametrize("field, value", [("motion_codebook_size", 3_000_000_000), ("motion_layers", 100_000),
                                          ("image_size", 2**70)])
def test_a_config_declaring_a_model_the_file_does_not_hold_is_refused_before_building_it(
        tmp_path, small_model, field, value):
    """A shared file's config is read before its weights: one declaring a 3-billion-row codebook or
    100000 layers over a handful of tensors made from_pretrained allocate 192 GB (a RuntimeError,
    or the OOM killer) or build layers for hours. It is checked against the file's tensors first."""
    from mcc_fast.io.safetensors_bytes import safetensors_bytes

    config = json.loads(small_model.config.to_json())
    config["generator"][field] = value
    if field == "image_size":  # keep the motion estimator consistent, so the generator is what is refused
        config["motion"][field] = value
    meta = {"format": "mcc_fast", "format_version": "1", "config": json.dumps(config)}
    path = tmp_path / "shared.safetensors"
    path.write_bytes(safetensors_bytes({"generator.codebook": torch.zeros(4, 4)}, meta))
    with pytest.raises(CheckpointError, match=rf"{path.name}: .*(does not hold|cannot be built|too large)"):
        mcc_fast.Model.from_pretrained(path, device="cpu")


def test_a_file_missing_tensors_of_its_config_names_them(tmp_path, small_model):
    path = small_model.save_pretrained(tmp_path / "m.safetensors")
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    del tensors[name]
    first = sorted(tensors)[1]
    tensors[first] = torch.zeros(3, 5)
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=rf"does not hold the tensors its config declares.*missing {name}"
                                              rf".*{first}: \(3, 5\)"):
        mcc_fast.Model.from_pretrained(path, device="cpu")


# ---- files from elsewhere: pickled objects in torch.save files ---------------------------------

class _Payload:
    """Unpickling this runs os.makedirs(marker): what a malicious .pth does with a worse command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _loaders(tmp_path, small_model):
    """(name, function of a .pth path) for each place a user-given torch.save file is read."""
    from mcc_fast.training.checkpointing import STATE_NAME, load_checkpoint, load_init_weights
    from mcc_fast.training.losses.vgg19 import read_vgg19_weights

    def authors(path):
        motion = tmp_path / "me.pth"
        torch.save({"params": {}}, motion)
        return mcc_fast.Model.from_pretrained((path, motion), device="cpu", config=small_model.config)

    def init_from(path):
        motion = tmp_path / "me.pth"
        torch.save({"params": {}}, motion)
        return load_init_weights(f"{path},{motion}", small_model.config)

    def state_file(path):
        folder = tmp_path / "step_00000001"
        folder.mkdir(exist_ok=True)
        os.replace(path, folder / STATE_NAME)
        return load_checkpoint(folder)

    return [("authors", authors), ("init_from", init_from), ("state_file", state_file), ("vgg19", read_vgg19_weights)]


@pytest.mark.parametrize("which", ["authors", "init_from", "state_file", "vgg19"])
def test_a_pickled_object_in_a_torch_file_is_never_run_and_is_one_line(tmp_path, small_model, which):
    """weights_only=True refused the payload, but the error was torch's several lines advising to
    re-run with weights_only=False (arbitrary code execution) and did not fit the one-line errors."""
    marker = tmp_path / "pwned"
    path = tmp_path / "shared.pth"
    torch.save({"params_ema": {}, "params": {}, "format": "x", "extra": _Payload(marker)}, path)
    load = dict(_loaders(tmp_path, small_model))[which]
    with pytest.raises((CheckpointError, ValueError)) as info:
        load(path)
    message = str(info.value)
    assert not marker.exists()
    assert "weights_only" not in message and len(message.splitlines()) == 1, message
    assert "os.makedirs" in message and "pickled object" in message


def test_an_authors_file_with_a_float_weight_stored_as_integers_is_refused(tmp_path, small_model):
    """Our format refused it; the authors' pair cast the integers to float without a word."""
    folder = _write_authors_pair(small_model, tmp_path / "authors")
    data = torch.load(folder / "net_g_latest.pth", weights_only=True)
    name = next(k for k, v in data["params_ema"].items() if v.is_floating_point())
    data["params_ema"][name] = torch.ones(data["params_ema"][name].shape, dtype=torch.int64)
    torch.save(data, folder / "net_g_latest.pth")
    with pytest.raises(CheckpointError, match=r"authors: 1 tensor\(s\) stored with the wrong kind of dtype: "
                                              r"generator\..*torch\.int64"):
        mcc_fast.Model.from_pretrained(folder, device="cpu", config=small_model.config)


@pytest.mark.parametrize("files", [{"model.safetensors": "x"}, ["model.safetensors"],
                                   {"model.safetensors": {"bytes": "12", "sha256": 5}}, None])
def test_a_state_file_whose_file_records_are_malformed_names_it(tmp_path, small_model, files):
    """A step folder from elsewhere whose state file's "files" record is not the mapping it writes
    gave a TypeError / AttributeError from deep inside the check."""
    from mcc_fast.training.checkpointing import STATE_NAME

    step = _training_checkpoint(tmp_path, small_model)
    state = torch.load(step / STATE_NAME, weights_only=True)
    state["files"] = files
    torch.save(state, step / STATE_NAME)
    with pytest.raises(CheckpointError, match=rf"{STATE_NAME}: .*(record|lists no)"):
        mcc_fast.Model.from_pretrained(step, device="cpu")


def test_a_file_whose_config_declares_a_giant_image_size_is_refused(tmp_path, small_model):
    """Only the position embeddings grow with the image size over the token grid: a file of 16
    narrow levels (a few hundred kB) could declare 65536x65536 images, and animating a portrait then
    upsampled it to 51 GB of float32 before the first convolution. Sizes above 4096 are refused."""
    with pytest.raises(ValueError, match=r"image_size 8192.*at most 4096"):
        ModelConfig.small(8192)
    path = small_model.save_pretrained(tmp_path / "m.safetensors")
    config = json.loads(small_model.config.to_json())
    for part in ("motion", "generator"):
        config[part]["image_size"] = 65536
    config["generator"]["channel_multipliers"] = [1] * 12  # token grid 32, flow 64, as the small model's
    config["motion"]["kp_scale_factor"] = config["motion"]["dm_scale_factor"] = 1 / 1024
    _rewrite(path, meta_update={"config": json.dumps(config)})
    with pytest.raises(CheckpointError, match=r"m\.safetensors: .*image_size 65536.*at most 4096"):
        mcc_fast.Model.from_pretrained(path, device="cpu")
