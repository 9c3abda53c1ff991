"""`mcc-fast train` and its config: bad input is one clear line naming the key or option (exit 2)."""
from __future__ import annotations

import re

import pytest

from mcc_fast.cli import main
from mcc_fast.model import ModelConfig
from mcc_fast.training.config import ConfigError, load_config


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("text, where", [
    ("1: 2\nfoo: 3\n", "config: key 1 (int)"),
    ("model: {1: 2, foo: 3}\n", "config model: key 1 (int)"),
    ("model: {motion: {1: 2, foo: 3}}\n", "config model.motion: key 1 (int)"),
    ("loss: {equivariance: {true: 1, points_tps: 3}}\n", "config loss.equivariance: key True (bool)"),
])
def test_non_text_keys_are_named(tmp_path, text, where):
    path = tmp_path / "intkey.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"^" + where.replace("(", r"\(").replace(")", r"\)") + ".*field name"):
        load_config(path)


@pytest.mark.parametrize("override", ["loss.start_iters=5", "loss.start_iters=null", "loss.start_iters=[gan]"])
def test_start_iters_must_be_a_mapping(override):
    with pytest.raises(ConfigError, match=r"loss\.start_iters: expected a mapping"):
        load_config("smoke", [override])


def test_start_iters_in_yaml_and_a_good_one(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss: {start_iters: 5}\n")
    with pytest.raises(ConfigError, match=r"loss\.start_iters"):
        load_config(path)
    assert load_config("smoke", ["loss.start_iters={gan: 7}"]).loss.start_iter("gan") == 7


def test_binary_config_names_the_file(tmp_path, capsys):
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="model.bin.*not a text"):
        load_config(path)
    assert "model.bin" in _error(capsys, ["train", "--config", str(path)])


@pytest.mark.parametrize("override, key", [
    ("data.num_workers=1000", "data.num_workers"), ("data.num_workers=65", "data.num_workers"),
    ("model.image_size=100000", "model.image_size"), ("model.image_size=1025", "model.image_size"),
])
def test_sizes_are_bounded(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + r": expected an integer in \["):
        load_config("smoke", [override])


def test_bounds_themselves_are_accepted():
    config = load_config("smoke", ["data.num_workers=64"])
    assert config.data.num_workers == 64
    with pytest.raises(ConfigError) as exc:  # 1024 passes the bound (the small preset may still refuse it)
        load_config("smoke", ["model.image_size=1024", "model.width=0"])
    assert "image_size" not in str(exc.value)


@pytest.mark.parametrize("step", ["0", "-5", "x", "1.5"])
def test_stop_at_must_be_at_least_one(capsys, step):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", "smoke", "--stop-at", step])
    assert exc.value.code == 2
    assert "--stop-at" in capsys.readouterr().err


def test_out_must_be_a_folder(tmp_path, capsys):
    src = tmp_path / "src.png"
    src.write_bytes(b"not a folder")
    for out, says in ((src, "it is an existing file"), (src / "run", "its parent"), ("", "empty")):
        err = _error(capsys, ["train", "--config", "smoke", "--out", str(out)])
        assert "--out" in err and says in err and "Errno" not in err
    assert src.read_bytes() == b"not a folder"


def test_a_shipped_config_name_is_not_shadowed_by_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").mkdir()  # e.g. the run folder of an earlier smoke run
    from mcc_fast.training.config import CONFIG_DIR

    assert load_config("smoke").to_dict() == load_config(CONFIG_DIR / "smoke.yaml").to_dict()
    (tmp_path / "demo").write_text("name: my-local-demo\n")  # a local file of that name is read
    assert load_config("demo").name == "my-local-demo"


@pytest.mark.parametrize("override, expected", [
    ("optim.lr=-1", "config optim.lr: expected a number >= 0, got -1"),
    ("train.ema_decay=2", "config train.ema_decay: expected a number in [0, 1], got 2"),
    ("optim.milestones=[5000, 3000]", "config optim.milestones: expected increasing iterations, got (5000, 3000)"),
    ("loss.equivariance.points_tps=1", "config loss.equivariance.points_tps: expected 0 (no TPS) or an integer >= 2"),
    ("checkpoint.keep_last=0", "config checkpoint.keep_last: expected an integer >= 1, got 0"),
])
def test_number_bounds_are_said_plainly(override, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config("smoke", [override])


def test_validation_frames_must_include_more_than_the_source(capsys):
    with pytest.raises(ConfigError, match=r"log\.val_frames: expected 0 \(all frames\) or at least 2"):
        load_config("smoke", ["log.val_frames=1"])
    assert "log.val_frames" in _error(capsys, ["train", "--config", "smoke", "--set", "log.val_frames=1"])
    assert load_config("smoke", ["log.val_frames=0", "log.val_videos=0"]).log.val_videos == 0


def test_a_run_refused_while_setting_up_leaves_no_run_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    err = _error(capsys, ["train", "--config", "smoke", "--data", str(tmp_path / "empty"), "--out", str(out),
                          "--random-vgg"])
    assert "train" in err and "does not exist" in err
    assert not out.exists()  # no empty train.log (nor a progress bar) from a run that never started


@pytest.mark.parametrize("inside", ["train/run", "test", "train/a/b"])
def test_a_run_folder_inside_the_datasets_splits_is_refused(tmp_path, capsys, inside):
    """It would be listed as one of the split's videos (an unreadable one) on the next run or resume."""
    for split in ("train", "test"):
        (tmp_path / "data" / split).mkdir(parents=True)
    out = tmp_path / "data" / inside
    err = _error(capsys, ["train", "--config", "smoke", "--data", str(tmp_path / "data"), "--out", str(out),
                          "--random-vgg"])
    assert "--out" in err and f"inside the dataset's {inside.split('/')[0]}/ folder" in err
    assert not (tmp_path / "data" / "train" / "run").exists()


def test_yaml_syntax_errors_are_one_line_with_the_position(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("optim:\n\tlr: 1e-4\n")  # a tab indent
    err = _error(capsys, ["train", "--config", str(path)])
    assert "broken.yaml" in err and "not valid YAML (line 2, column 1: found character '\\t'" in err
    err = _error(capsys, ["train", "--config", "smoke", "--set", "optim.lr=[1"])
    assert "--set 'optim.lr=[1': the value is not valid YAML (line 1, column 3: expected ','" in err


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_config_file_is_refused_not_read_as_the_official_defaults(tmp_path, capsys, text):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    err = _error(capsys, ["train", "--config", str(path)])
    assert "mine.yaml" in err and "holds no settings; leave out --config for the official defaults" in err


def test_data_warnings_are_notes_not_python_warnings(tmp_path, capsys):
    data = tmp_path / "data"
    for split in ("train", "test"):
        (data / split).mkdir(parents=True)
    (data / "train" / "clip.mp4").write_text("not a video")
    argv = ["train", "--config", "smoke", "--data", str(data), "--random-vgg", "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "mcc-fast train: note: skipping unreadable video" in err and "clip.mp4" in err
    assert "Warning" not in err and ".py:" not in err  # no raw `warnings` output with the source line
    assert err.strip().splitlines()[-1].startswith("mcc-fast train: error: ")


@pytest.mark.parametrize("override", ["model.num_kp=10", "model.image_size=128", "model.width=16"])
def test_small_preset_sizes_are_refused_with_the_official_preset(override):
    """model.image_size / num_kp / width size the small preset; with preset official they were
    silently ignored (num_kp=10 trained the 15-keypoint 82M model)."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.") + ".*preset 'small' only"):
        load_config("official", [override])
    assert load_config("official", ["model.num_kp=15", "model.image_size=256"]).model_config == ModelConfig()


def test_an_earlier_official_runs_config_with_an_unused_size_says_to_remove_it(tmp_path):
    """Before the refusal, a run of preset official with model.num_kp=10 trained the 15-keypoint
    model and recorded num_kp: 10 in its config.yaml. Resuming with that file now fails, and only
    said to set preset small (a model its checkpoints do not fit) or to override other fields."""
    import yaml

    data = load_config("official").to_dict()
    data["model"]["num_kp"] = 10
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"model\.num_kp: .*remove it .*earlier official run"):
        load_config(saved)


def test_model_float_overrides_in_exponent_notation_are_numbers():
    """PyYAML reads 1e-2 as a string; optim.lr took it, model.motion / model.generator refused it."""
    config = load_config("smoke", ["model.motion.kp_variance=1e-2", "model.generator.beta=1e-1"]).model_config
    assert config.motion.kp_variance == 0.01 and config.generator.beta == 0.1
    with pytest.raises(ConfigError, match=r"model\.motion.*kp_variance.*'abc'"):
        load_config("smoke", ["model.motion.kp_variance=abc"])
    with pytest.raises(ConfigError, match=r"model\.generator.*base_channels.*'8'"):
        load_config("smoke", ["model.generator.base_channels='8'"])  # ints stay strict


def test_integer_fields_in_exponent_notation_are_integers():
    """PyYAML reads 5e3 as a string: train.total_iter=5e3 was refused though optim.lr=8e-5 was read."""
    config = load_config("smoke", ["train.total_iter=5e3", "data.batch_size=2E0", "optim.milestones=[1e3, 2e3]"])
    assert config.train.total_iter == 5000 and config.data.batch_size == 2 and config.optim.milestones == (1000, 2000)
    assert isinstance(config.train.total_iter, int)
    for bad in ("2.5e0", "1e400", "5eggs", "'8'"):
        with pytest.raises(ConfigError, match=r"train\.total_iter: expected an integer"):
            load_config("smoke", [f"train.total_iter={bad}"])


@pytest.mark.parametrize("override", ["model=null", "optim=", "loss=3", "loss.equivariance=null", "data=[1]"])
def test_a_whole_section_set_to_a_non_mapping_is_refused(override):
    """--set model=null read as "no model section": the smoke config silently trained the 82M model."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=re.escape(key) + r" is a section, expected a mapping"):
        load_config("smoke", [override])
    assert load_config("smoke", ["model={preset: small, image_size: 32}"]).model_config.image_size == 32


def test_no_jacobians_needs_the_jacobian_loss_off():
    """Without jacobians the jacobian equivariance term cannot be computed: said when the config is
    read (it was a ValueError at the first training step, after the whole set-up)."""
    with pytest.raises(ConfigError, match=r"loss\.equivariance_jacobian.*model\.motion\.kp_estimate_jacobian"):
        load_config("smoke", ["model.motion.kp_estimate_jacobian=false"])
    config = load_config("smoke", ["model.motion.kp_estimate_jacobian=false", "loss.equivariance_jacobian=0"])
    assert not config.model_config.motion.kp_estimate_jacobian


def _alias_bomb(levels: int = 9) -> str:
    """YAML of 9 anchors, each a list of 9 aliases of the one before: 70 bytes per level, 9**9
    (387 million) strings once its aliases are expanded (the 'billion laughs')."""
    items = ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


@pytest.mark.parametrize("where", ["seed: {}\n", "optim:\n  lr: {}\n", "model:\n  generator:\n    channel_multipliers: {}\n"])
def test_a_config_whose_aliases_expand_to_millions_of_values_is_refused(tmp_path, capsys, where):
    """A shared config's anchors and aliases: safe_load builds the shared lists once, but the
    error message naming the bad value printed all 387 million strings (a hang, then memory)."""
    path = tmp_path / "shared.yaml"
    path.write_text(where.format(_alias_bomb()))
    with pytest.raises(ConfigError, match=r"shared\.yaml.*aliases.*more than"):
        load_config(path)
    assert "shared.yaml" in _error(capsys, ["train", "--config", str(path)])


def test_a_config_nested_too_deeply_is_refused_naming_the_file(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text("seed: " + "[" * 20000 + "]" * 20000 + "\n")
    err = _error(capsys, ["train", "--config", str(path)])
    assert "deep.yaml" in err and "nested" in err


def test_a_config_with_ordinary_anchors_still_loads(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("discriminator:\n  base_channels: &n 8\n  num_layers: *n\n")
    assert load_config(path).discriminator.num_layers == 8


def test_a_saved_config_whose_aliases_explode_reads_as_unreadable():
    from mcc_fast.training.trainer import _saved_config

    assert _saved_config("seed: " + _alias_bomb() + "\n") is None
    assert _saved_config("seed: " + "[" * 20000 + "]" * 20000 + "\n") is None
    assert _saved_config("seed: 3\n") == {"seed": 3}
