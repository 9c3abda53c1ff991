"""The MCC training loop: one process or many (`torchrun` + DistributedDataParallel).

One iteration (1-based `step`, as the official counts), following ``appmotioncomp_model.py``:

1. generator + motion estimator: for each of `accumulate` micro-batches, forward the model
   (training outputs on) and the keypoint detector on a randomly transformed driving frame,
   sum the active weighted terms (`TrainingObjective`), backward (loss / accumulate; DDP
   syncs gradients on the last micro-batch only); step both Adam optimisers;
2. the generator's EMA (decay 0.995);
3. from the GAN's start iteration: the discriminator, hinge loss on real then on the
   detached fakes (two backward passes, like the official), its Adam step;
4. the three MultiStepLR schedulers.

Randomness: model initialisation from `seed` (identical on every rank); the equivariance
transform of micro-batch m of step s from a generator keyed on (seed, s, m) (m counted over
all ranks), so a resumed run, or a run with a different split of the same micro-batches
over ranks, draws the same transforms; data items are keyed on (seed, epoch, index) by the
dataset. The global torch / Python / NumPy generators (which the loop itself never draws
from) are seeded from (seed, rank) at the start, and a resume restores their saved states,
so a checkpoint's RNG states match a straight run's. Mixed precision: bf16 autocast, or fp16
autocast with gradient scalers; flows and VQ distances stay fp32.

Divergence: a step whose loss (or a discriminator loss) is NaN or Inf stops the run with a
`TrainingDiverged` error naming the last checkpoint to resume from (its update made the
weights non-finite; no checkpoint of them is written, so none of the earlier ones is pruned).
Under fp16 the gradient scaler skips such an update instead, and the step is only logged, until
`MAX_SKIPPED_IN_A_ROW` steps in a row were skipped so (a loss that stays non-finite: no progress).

Run folder: a fresh run (no resume) refuses a folder whose ``checkpoints/`` already holds
checkpoints unless `overwrite` (which deletes them first). A run resumed from step S of its
own folder moves the checkpoints after S (an abandoned branch) into
``checkpoints/abandoned-<time>/`` when it writes its first checkpoint. Resuming applies the
config's optimiser settings (lr, betas, weight decay, schedule) over the checkpoint's,
logging the ones that changed.
"""
from __future__ import annotations

import contextlib
import errno
import math
import os
import random
import shutil
import signal
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, get_worker_info

from mcc_fast.model.model import Model

from . import checkpointing  # (its _write_file looked up at call time: tests patch it)
from .checkpointing import (
    STATE_NAME,
    CheckpointError,
    Checkpoint,
    TrainingWeights,
    checkpoint_step,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_init_weights,
    prune_checkpoints,
    save_checkpoint,
)
from .config import ConfigError, TrainConfig, safe_yaml
from .distributed import DistributedContext
from .ema import ModelEma
from .losses import PatchDiscriminator, PatchDiscriminatorConfig, hinge_fake_loss, hinge_real_loss
from .monitor import TrainingMonitor, image_grid
from .objective import TrainingObjective, build_perceptual_network
from .sampler import DistributedStepSampler, MicroBatchStream
from .validation import ValidationResult, validate

__all__ = ["Trainer", "TrainResult", "TrainingDiverged", "CheckpointWriteError", "train"]

_AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, I/O or permission error): the message names
    the step, the cause, the newest checkpoint kept and how to continue; `errno` is the cause's."""

    def __str__(self) -> str:
        return str(self.strerror)


class TrainingDiverged(RuntimeError):
    """A step's loss was not finite (fp32 / bf16): its update made the weights non-finite, so the
    run stops without a checkpoint of them; the message names the last checkpoint to resume.
    Under fp16: the loss was not finite for `MAX_SKIPPED_IN_A_ROW` steps in a row."""


#: fp16: consecutive steps whose (backpropagated) loss is not finite, each update skipped by the
#: gradient scaler, after which the run stops (the scale only fixes gradients, not the forward).
MAX_SKIPPED_IN_A_ROW = 10


#: The losses that are backpropagated (a non-finite one poisons the weights of an unscaled step).
_BACKPROPAGATED = ("total", "d_real", "d_fake")


@dataclass
class TrainResult:
    """What a run did: its folder, the last step, per-step losses of this rank, the last
    checkpoint written, the last validation, and the names of unreadable (skipped) videos."""

    out_dir: Path | None
    step: int
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    validation: ValidationResult | None = None
    unreadable_videos: list[str] = field(default_factory=list)
    interrupted: bool = False


class _GeneratorStep(nn.Module):
    """Everything that needs the generator's and motion estimator's gradients in one forward
    (one DDP module): the model with its training outputs, and the keypoints of the
    transformed driving frame for the equivariance losses."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, source: torch.Tensor, driving: torch.Tensor, transformed: torch.Tensor | None = None):
        output = self.model(source, driving, return_all=True, training=True)
        kp_transformed = None
        if transformed is not None:
            kp_transformed = self.model.motion_estimator.keypoint_detector(transformed)
        return output, kp_transformed


def _micro_generator(seed: int, step: int, micro: int) -> torch.Generator:
    """The CPU generator of micro-batch `micro` (global index) of iteration `step`."""
    key = (seed * 1_000_003 + step) * 65_537 + micro
    return torch.Generator().manual_seed(key % (2**63 - 1))


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _seed_global_rngs(seed: int, rank: int) -> None:
    """Seed torch's, Python's and NumPy's global generators from (seed, rank), so the RNG
    states a checkpoint records are the same in a straight run and a resumed one (nothing
    of the trainer draws from them; code a user adds may)."""
    key = (seed * 1_000_003 + rank) % 2**32
    torch.manual_seed(key)
    random.seed(key)
    np.random.seed(key)


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _scheduled_lr(lr: float, milestones, gamma: float, step: int) -> float:
    """MultiStepLR's learning rate after `step` scheduler steps, multiplied in the order the
    scheduler itself does (gamma ** count at each milestone passed)."""
    for milestone, count in sorted(Counter(milestones).items()):
        if milestone <= step:
            lr = lr * gamma ** count
    return lr


def _data_changed(position: dict, sampler) -> bool:
    """Whether a saved data position was taken over another training set (its size, or for
    older checkpoints its steps per epoch, differ)."""
    if "dataset_size" in position:
        return position["dataset_size"] != sampler.dataset_size
    return position.get("steps_per_epoch", sampler.steps_per_epoch) != sampler.steps_per_epoch


def _saved_config(text: str | None) -> dict | None:
    """The training config a checkpoint recorded (its YAML text), or None when unreadable."""
    try:
        saved = safe_yaml(text, "the checkpoint's config") if text else None
    except (yaml.YAMLError, ConfigError):  # nested too deeply, aliases expanding to millions of values
        return None
    return saved if isinstance(saved, dict) else None


def _section_changes(saved: dict | None, current: dict, section: str) -> list[str]:
    """'section.key: saved (checkpoint) vs current (config)' for each key of the config section
    `section` whose value differs from the saved config's (none without a saved section)."""
    old = saved.get(section) if saved else None
    if not isinstance(old, dict):
        return []
    new = current[section]
    return [f"{section}.{k}: {old.get(k)!r} (checkpoint) vs {new[k]!r} (config)" for k in new if old.get(k) != new[k]]


def _checkpoint_folder(path: Path) -> Path:
    """`path` when it may be a checkpoint folder; a ConfigError naming --resume when it is
    missing, a file, or a run folder / its checkpoints/ folder (with the folder to pass)."""
    if not path.exists():
        raise ConfigError(f"--resume {os.fspath(path)!r}: no such checkpoint folder")
    if not path.is_dir():
        raise ConfigError(f"--resume {os.fspath(path)!r}: expected a checkpoint folder (step_XXXXXXXX), "
                          "got a file")
    if (path / STATE_NAME).is_file():
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    newest = latest_checkpoint(root)
    if newest is not None:
        run = path if root != path else path.parent
        raise ConfigError(f"--resume {os.fspath(path)!r}: a run folder, not a checkpoint folder: continue it "
                          f"with --out {os.fspath(run)} --resume, or pass a checkpoint such as {newest}")
    return path  # loading names the missing file


def _remove_probe(folder: Path) -> None:
    """Remove the probe folder of `_check_checkpoint_room` and its one file (what exists of them)."""
    with contextlib.suppress(OSError):
        (folder / STATE_NAME).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def _intact(folder: Path) -> bool:
    """Whether a checkpoint folder's files match the sizes and hashes its state file records."""
    from mcc_fast.model.checkpoint import WEIGHTS_NAME

    from .checkpointing import DISCRIMINATOR_NAME, GENERATOR_NAME, verify_recorded_files

    try:
        verify_recorded_files(folder, (WEIGHTS_NAME, GENERATOR_NAME, DISCRIMINATOR_NAME))
    except CheckpointError:
        return False
    return True


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def _quiet_data_warnings() -> None:
    """Ranks other than 0 (and their workers) leave the per-video data warnings to rank 0;
    unreadable videos of every rank are gathered into rank 0's log."""
    from .data import AspectRatioWarning, UnreadableVideoWarning

    for category in (AspectRatioWarning, UnreadableVideoWarning):
        warnings.filterwarnings("ignore", category=category)


def _first_sigterm_ignored(signum, frame) -> None:
    """A data worker's SIGTERM handler: this one is ignored, the next one ends the worker."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _worker_init(worker_id: int) -> None:
    """DataLoader workers: one thread each, RNGs seeded from (seed, rank, worker); Ctrl-C ignored,
    and the first SIGTERM.

    A Ctrl-C reaches the whole process group, and SLURM's scancel sends SIGTERM to every process
    of the job: the main process finishes its step and checkpoints (`_StopRequest`), then stops its
    workers itself. A worker that died of the signal would fail that step ("DataLoader worker ...
    is killed by signal"); forked workers inherit the main's handler, but spawned / forkserver ones
    (Python 3.14's default) start with Python's own, and PyTorch's own SIGTERM handler ends the
    worker. A second SIGTERM (the loader's own shutdown of a worker that does not stop) ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _first_sigterm_ignored)
    torch.set_num_threads(1)
    if int(os.environ.get("RANK", "0")) != 0:
        _quiet_data_warnings()
    info = get_worker_info()
    base = getattr(info.dataset, "seed", 0) * 7919 + int(os.environ.get("RANK", "0")) * 104_729 + worker_id
    random.seed(base)
    np.random.seed(base % 2**32)
    torch.manual_seed(base)


class _StopRequest:
    """SIGINT/SIGTERM -> finish the current iteration, checkpoint, stop (a second SIGINT aborts).

    announce: say so on stderr at the first signal (the stop may wait for a validation or a
    checkpoint write); only in this process, not in the data workers forked with the handler."""

    def __init__(self, announce: bool = True) -> None:
        self.requested = False
        self._announce = announce
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):  # not the main thread
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested and self._announce and os.getpid() == self._pid:
            name = signal.Signals(signum).name
            # os.write, not print: a handler may run in the middle of another write to stderr.
            os.write(2, f"mcc-fast train: stop requested ({name}): finishing this step, then a checkpoint "
                        "(Ctrl-C again aborts without one)\n".encode())
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            # None: the previous handler was installed from C (an embedding program); Python cannot
            # put it back, and signal.signal(sig, None) is a TypeError: the default is restored
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


class Trainer:
    """Builds everything from a `TrainConfig` and runs the loop (see the module docstring).

    out_dir: run folder (config.yaml, train.log, tensorboard/, checkpoints/); None writes
    nothing (no checkpoints, no logs). resume: None, "latest" (the newest checkpoint in
    out_dir/checkpoints; a fresh start when there is none; a damaged one is a CheckpointError
    naming the previous intact checkpoint to pass instead) or a checkpoint folder.
    init_from: starting weights (see `checkpointing.load_init_weights`). overwrite: a run
    not resumed from out_dir's own checkpoints deletes those (otherwise it is refused, a
    ConfigError). context: the distributed context (default: from torchrun's environment).
    """

    def __init__(self, config: TrainConfig, out_dir: str | os.PathLike | None = None, *,
                 resume: str | os.PathLike | None = None, init_from: str | os.PathLike | None = None,
                 overwrite: bool = False, context: DistributedContext | None = None) -> None:
        self.config = config.check()
        if config.data.root is None:
            raise ConfigError("no training data: pass --data ROOT (a folder with train/ and test/) or set data.root")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.ctx = context or DistributedContext.from_environment(config.train.device)
        self.device = self.ctx.device
        self.model_config = config.model_config
        self.autocast_dtype = _AUTOCAST_DTYPES[config.train.precision]
        self.monitor = TrainingMonitor(
            self.out_dir, enabled=self.ctx.is_main, total_iter=config.train.total_iter,
            progress=config.log.progress, tensorboard=config.log.tensorboard)
        self._last_visuals: tuple[torch.Tensor, ...] = ()
        self.step_lr: float | None = None  # the generator's lr of the last step (before its schedule step)
        self._abandoned: list[Path] = []  # later checkpoints of this folder, moved aside at the first save
        self._last_checkpoint: Path | None = None  # the one resumed from, then the last one written
        self._skipped_in_a_row = 0  # fp16: steps in a row with a non-finite loss on a rank (updates skipped)
        try:
            resume_path = self._resume_path(resume)
            self._check_run_folder(resume_path, overwrite)
            self._build_networks(init_from)  # seeds the CUDA generators with config.seed on every rank...
            _seed_global_rngs(config.seed, self.ctx.rank)  # ...so after it; a resume restores saved states over these
            self._build_optimisers()
            self.step = 0
            self._position = {"epoch": 0, "step_in_epoch": 0}
            self._earlier_unreadable: list[str] = []  # skipped before the resumed step
            if resume_path is not None:
                self._restore(self._load_resumed(resume_path, latest=str(resume) == "latest"))
                self._last_checkpoint = resume_path
            self._build_data()
            self._wrap_distributed()
        except BaseException:
            self.close()  # the log file and progress bar of a refused run
            raise

    # ---- construction --------------------------------------------------------------------------

    def _build_networks(self, init_from) -> None:
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # the same initial weights on every rank
            self.model = Model(self.model_config)
            self.discriminator = PatchDiscriminator(PatchDiscriminatorConfig(
                base_channels=cfg.discriminator.base_channels, num_layers=cfg.discriminator.num_layers))
        if self.discriminator.config.output_size(self.model_config.image_size) < 1:
            raise ConfigError(f"config discriminator.num_layers {cfg.discriminator.num_layers}: too many for "
                              f"{self.model_config.image_size}x{self.model_config.image_size} images")
        init_weights = None
        if init_from is not None:
            init_weights, description = load_init_weights(init_from, self.model_config)
            self._load_weights(init_weights, str(init_from), with_ema=False)
            self.monitor.info(f"initialised from {description}")
        self.ema = ModelEma(self.model.generator)
        if init_weights is not None:
            self._load_state(self.ema.average, init_weights.generator_ema, f"{init_from} (generator EMA)")
        if self.ctx.is_distributed and cfg.train.sync_bn:
            if self.device.type == "cuda":
                # The motion estimator only: the authors' declares SynchronizedBatchNorm2d, while
                # their VQGANDiscriminator has plain nn.BatchNorm2d (per-process statistics under DDP).
                self.model.motion_estimator = nn.SyncBatchNorm.convert_sync_batchnorm(self.model.motion_estimator)
            else:
                self.monitor.info("train.sync_bn: SyncBatchNorm needs CUDA; on CPU each process normalises "
                                  "its own micro-batch")
        self.model.to(self.device).train()
        fused = cfg.train.fused_ops if cfg.train.fused_ops != "auto" else self.device.type == "cuda"
        self.model.use_fused_ops(fused)
        self.discriminator.to(self.device).train()
        self.ema.to(self.device)
        self.objective = TrainingObjective(cfg.loss, build_perceptual_network(cfg.loss, self.model_config.image_size))
        self.objective.to(self.device)

    def _load_state(self, module: nn.Module, state: dict, source: str) -> None:
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{source}: weights do not fit: {exc}") from None

    def _load_weights(self, weights: TrainingWeights, source: str, with_ema: bool = True) -> None:
        self._load_state(self.model.generator, weights.generator, f"{source} (generator)")
        self._load_state(self.model.motion_estimator, weights.motion_estimator, f"{source} (motion estimator)")
        if with_ema:
            self._load_state(self.ema.average, weights.generator_ema, f"{source} (generator EMA)")
        if weights.discriminator is not None:
            self._load_state(self.discriminator, weights.discriminator, f"{source} (discriminator)")

    def _build_optimisers(self) -> None:
        o = self.config.optim

        def adam(params):
            return torch.optim.Adam(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)

        self.optimizers = {
            "generator": adam(self.model.generator.parameters()),
            "motion_estimator": adam(self.model.motion_estimator.parameters()),
            "discriminator": adam(self.discriminator.parameters()),
        }
        self.schedulers = {name: torch.optim.lr_scheduler.MultiStepLR(opt, list(o.milestones), o.gamma)
                           for name, opt in self.optimizers.items()}
        fp16 = self.config.train.precision == "fp16"
        self.scalers = {name: torch.amp.GradScaler(self.device.type, enabled=fp16)
                        for name in ("generator", "discriminator")}

    def _build_data(self) -> None:
        from .data import FramePairDataset, VideoSequenceDataset

        cfg, d = self.config, self.config.data
        size = self.model_config.image_size
        self.dataset = FramePairDataset(
            d.root, "train", size=size, repeats=d.repeats, id_sampling=d.id_sampling,
            hflip_prob=0.5 if d.hflip else 0.0, time_flip_prob=0.5 if d.time_flip else 0.0,
            seed=cfg.seed, cache_bytes=d.cache_mb * 2**20)
        self.sampler = DistributedStepSampler(
            len(self.dataset), d.batch_size, cfg.train.accumulate, self.ctx.world_size, self.ctx.rank, cfg.seed)
        loader = DataLoader(
            self.dataset, batch_sampler=self.sampler, num_workers=d.num_workers,
            persistent_workers=d.num_workers > 0, pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init if d.num_workers > 0 else None,
            # Its own generator for the base seed each new iterator draws (workers reseed
            # themselves in _worker_init): a resumed run starts an extra iterator mid-epoch,
            # which would otherwise advance the global torch RNG one draw more.
            generator=torch.Generator().manual_seed(cfg.seed))
        position = self._position
        if position.get("global_batch", self.sampler.global_batch) != self.sampler.global_batch:
            # Another world size or batch: keep the epoch, restart it (not an exact resume).
            self.monitor.info(f"resume: global batch {position['global_batch']} -> {self.sampler.global_batch}; "
                              "the data order restarts at the current epoch")
            position = {"epoch": position["epoch"], "step_in_epoch": 0}
        elif _data_changed(position, self.sampler):
            # The training set changed: the saved position indexes another permutation.
            self.monitor.info(f"resume: the training set changed ({position.get('dataset_size', '?')} -> "
                              f"{self.sampler.dataset_size} pairs per epoch); the data order restarts at the "
                              "current epoch (not an exact resume)")
            position = {"epoch": position["epoch"], "step_in_epoch": 0}
        self.stream = MicroBatchStream(loader, self.sampler, position["epoch"],
                                       min(position["step_in_epoch"], self.sampler.steps_per_epoch))
        self.val_dataset = None
        if self.ctx.is_main and cfg.log.val_every > 0 and (Path(d.root) / "test").is_dir():
            try:
                self.val_dataset = VideoSequenceDataset(d.root, "test", size=size,
                                                        max_frames=cfg.log.val_frames or None)
            except (ValueError, FileNotFoundError) as exc:
                self.monitor.info(f"validation off: {exc}")
        self.monitor.info(
            f"data: {len(self.dataset.videos)} training videos ({len(self.dataset)} items per epoch with repeats "
            f"{d.repeats}), {self.sampler.steps_per_epoch} steps per epoch of {self.sampler.global_batch} pairs "
            f"({self.ctx.world_size} process(es) x {cfg.train.accumulate} micro-batch(es) x {d.batch_size})")

    def _find_unused(self) -> bool:
        setting = self.config.train.find_unused_parameters
        if setting != "auto":
            return bool(setting)
        w = self.objective.weights
        needed = ("motion_vq", "appearance_vq", "motion_recon", "equivariance_value", "equivariance_jacobian")
        return any(getattr(w, t) == 0 or w.start_iter(t) > 0 for t in needed)

    def _wrap_distributed(self) -> None:
        self.step_module: nn.Module = _GeneratorStep(self.model)
        self.discriminator_ddp: nn.Module = self.discriminator
        if not self.ctx.is_distributed:
            return
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.step_module = DistributedDataParallel(self.step_module, device_ids=ids,
                                                   find_unused_parameters=self._find_unused())
        self.discriminator_ddp = DistributedDataParallel(self.discriminator, device_ids=ids)

    # ---- resume --------------------------------------------------------------------------------

    def _resume_path(self, resume) -> Path | None:
        """The checkpoint folder to resume from (None: a fresh start)."""
        if resume is None:
            return None
        if str(resume) == "latest":
            if self.out_dir is None:
                raise ConfigError("--resume needs --out (the run folder holding checkpoints/)")
            found = list_checkpoints(self.out_dir / "checkpoints")
            path = found[-1] if found else None  # a damaged newest one is an error, not skipped
            if path is None:
                self.monitor.info(f"resume: no checkpoint in {self.out_dir / 'checkpoints'}; starting at step 0")
            return path
        return _checkpoint_folder(Path(resume))

    def _load_resumed(self, path: Path, latest: bool) -> Checkpoint:
        """The checkpoint `path`; when it is the newest of the run folder (`latest`) and damaged,
        the CheckpointError names the previous intact checkpoint to pass to --resume."""
        try:
            return load_checkpoint(path)
        except CheckpointError as exc:
            if not latest:
                raise
            older = [p for p in list_checkpoints(path.parent) if checkpoint_step(p) < checkpoint_step(path)]
            good = next((p for p in reversed(older) if _intact(p)), None)
            hint = (f"continue from the previous intact one with --resume {good} (the damaged {path.name} is "
                    "then moved to checkpoints/abandoned-<time>/)" if good is not None
                    else "no earlier checkpoint of this run is intact")
            raise CheckpointError(f"{exc}; the newest checkpoint {path.name} is damaged: {hint}") from None

    def _check_run_folder(self, resume_path: Path | None, overwrite: bool) -> None:
        """Refuse (or with `overwrite`, clear) a run folder holding another run's checkpoints;
        note this folder's checkpoints after the resumed step (moved aside at the first save)."""
        if self.out_dir is None:
            return
        root = self.out_dir / "checkpoints"
        existing = list_checkpoints(root)
        if resume_path is not None and resume_path.resolve().parent == root.resolve():
            if overwrite:
                raise ConfigError(f"--overwrite would delete the checkpoints of {root}, which --resume "
                                  f"continues from ({resume_path.name}); pass only one of them")
            resumed = checkpoint_step(resume_path)
            if resumed is not None:
                self._abandoned = [p for p in existing if checkpoint_step(p) > resumed]
            return
        if not existing:
            return
        if resume_path is not None and resume_path.resolve().parent.parent == root.resolve() \
                and resume_path.parent.name.startswith("abandoned-"):
            raise ConfigError(
                f"--resume {resume_path}: a checkpoint of an abandoned branch of this run (moved aside when an "
                f"earlier step was resumed); {root} now holds the other branch. Continue it in another folder: "
                f"--out NEW_RUN --resume {resume_path}")
        if not overwrite:
            names = ", ".join(p.name for p in existing[-3:])
            raise ConfigError(
                f"run folder {self.out_dir} already holds checkpoints of an earlier run in {root} ({names}): "
                f"pass --resume to continue it, --overwrite to delete them and start afresh, "
                f"or choose another --out")
        if self.ctx.is_main:  # the other ranks read no checkpoint of a fresh run
            for p in existing:
                shutil.rmtree(p)
            self.monitor.info(f"--overwrite: deleted {len(existing)} earlier checkpoint(s) from {root}")

    def _move_abandoned(self) -> None:
        """Move the checkpoints after the resumed step (an abandoned branch) into an
        ``abandoned-<time>`` subfolder of checkpoints/ (main rank, before its first save)."""
        moving = [p for p in self._abandoned if p.is_dir()]
        self._abandoned = []
        if not moving:
            return
        aside = moving[0].parent / f"abandoned-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        aside.mkdir()
        for p in moving:
            os.rename(p, aside / p.name)
        self.monitor.info(f"moved {len(moving)} checkpoint(s) after the resumed step "
                          f"({', '.join(p.name for p in moving)}) of an abandoned branch to {aside}")

    def _check_architecture(self, ckpt: Checkpoint, saved: dict | None) -> None:
        """CheckpointError naming the `model.*` / `discriminator.*` keys (or, without a readable
        saved config `saved`, the ModelConfig fields) in which the checkpoint's run differs from this one."""
        current = self.config.to_dict()
        changes = _section_changes(saved, current, "discriminator")
        if ckpt.config != self.model_config:
            model_changes = _section_changes(saved, current, "model")
            if not model_changes:  # e.g. no saved config: name the ModelConfig fields
                model_changes = [f"model config {d}" for d in ckpt.config.differences(self.model_config,
                                                                                      "checkpoint", "config")]
            changes = model_changes + changes
        if changes:
            raise CheckpointError(f"{ckpt.path}: it was trained with another architecture than the training "
                                  f"config's ({'; '.join(changes[:6])}): resume with the config it was trained "
                                  "with (its run folder's config.yaml)")

    def _restore(self, ckpt: Checkpoint) -> None:
        saved = _saved_config(ckpt.state.get("config"))  # the checkpoint's training config, parsed once
        self._check_architecture(ckpt, saved)
        self._load_weights(ckpt.weights, str(ckpt.path))
        state = ckpt.state
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        self._apply_optim_settings(saved, ckpt.path)
        self._log_other_changes(saved)
        for name, scaler in self.scalers.items():
            if state["scalers"].get(name):
                scaler.load_state_dict(state["scalers"][name])
        self.step = int(state["step"])
        self._position = dict(state["data"])
        self._earlier_unreadable = [str(n) for n in state.get("unreadable_videos", [])]
        rng = state.get("rng", [])
        if len(rng) == self.ctx.world_size:
            _set_rng_state(rng[self.ctx.rank])
        self.monitor.info(f"resumed from {ckpt.path} at step {self.step}")

    def _log_other_changes(self, saved: dict | None) -> None:
        """Log the seed / data / train / loss settings that differ from the checkpoint's config
        `saved` (they apply from the resumed step on; a changed seed or loss is not an exact continuation)."""
        current = self.config.to_dict()
        if saved is None:
            return
        changes = [f"seed {saved.get('seed')!r} -> {current['seed']!r}"] if saved.get("seed") != current["seed"] else []
        for section in ("data", "train", "loss"):
            old = saved.get(section) if isinstance(saved.get(section), dict) else {}
            changes += [f"{section}.{k} {old.get(k)!r} -> {v!r}"
                        for k, v in current[section].items() if old.get(k) != v]
        if changes:
            self.monitor.info("resume: settings changed versus the checkpoint's config (they apply from here on): "
                              + "; ".join(changes))

    def _apply_optim_settings(self, saved_config: dict | None, source: Path) -> None:
        """After loading the optimiser and scheduler states: the config's lr, betas, weight
        decay, milestones and gamma replace the checkpoint's; the lr is recomputed (as a fresh
        run with this schedule would have it at this step) only when lr, milestones or gamma
        changed, so an unchanged config resumes bitwise exactly. Logs what changed."""
        o = self.config.optim
        current = self.config.to_dict()["optim"]
        saved = (saved_config or {}).get("optim")
        if not isinstance(saved, dict):
            changed = set(current)
            self.monitor.info(f"resume: {source} has no readable saved config; applying the config's optim settings")
        else:
            changed = {k for k in current if saved.get(k) != current[k]}
            if changed:
                self.monitor.info("resume: optim settings changed versus the checkpoint's config: " + "; ".join(
                    f"optim.{k} {saved.get(k)!r} -> {current[k]!r}" for k in sorted(changed)))
        reschedule = bool(changed & {"lr", "milestones", "gamma"})
        for name, opt in self.optimizers.items():
            sched = self.schedulers[name]
            if reschedule:
                sched.base_lrs = [o.lr] * len(opt.param_groups)
                sched.milestones = Counter(o.milestones)
                sched.gamma = o.gamma
            for group in opt.param_groups:
                group["betas"] = tuple(o.betas)
                group["weight_decay"] = o.weight_decay
                if reschedule:
                    group["initial_lr"] = o.lr
                    group["lr"] = _scheduled_lr(o.lr, o.milestones, o.gamma, sched.last_epoch)
            if reschedule:
                sched._last_lr = [group["lr"] for group in opt.param_groups]

    # ---- checkpoints ---------------------------------------------------------------------------

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (collective: every rank must call it). When rank 0
        fails to write it, every rank raises (the others a CheckpointWriteError naming rank 0's
        error) instead of waiting for it at a barrier."""
        rng = self.ctx.all_gather_objects(_rng_state())
        unreadable = self._unreadable()
        write = self.out_dir is not None
        return self._on_rank0(lambda: self._write_checkpoint(rng, unreadable) if write else None,
                              f"write the checkpoint of step {self.step}",
                              lambda message: CheckpointWriteError(errno.EIO, message))

    def _on_rank0(self, work, what: str, error=RuntimeError):
        """`work()` on rank 0 (its result; None elsewhere), then a collective: when it raised, rank 0
        re-raises it and the other ranks raise `error(message)` saying so, rather than wait at a
        barrier for a rank that has stopped."""
        result, failure = None, None
        if self.ctx.is_main:
            try:
                result = work()
            except Exception as exc:  # re-raised below, once the other ranks know
                failure = exc
        try:
            said = self.ctx.all_gather_objects(None if failure is None else f"{type(failure).__name__}: {failure}")
        except Exception as gather_error:
            if failure is not None:  # rank 0's own error is the one to report; the collective's comes after it
                raise failure from gather_error
            raise
        if failure is not None:
            raise failure
        if said[0] is not None:
            message = f"rank 0 could not {what}, so this rank stops too: {said[0]}"
            raise error(message)
        return result

    def _write_checkpoint(self, rng: list, unreadable: list[str]) -> Path:
        """Rank 0's part of `save`: the checkpoint of the current step, written and pruned."""
        state = {
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "scalers": {k: v.state_dict() for k, v in self.scalers.items()},
            "data": self.stream.position(),
            "rng": rng,
            "unreadable_videos": unreadable,
            "world_size": self.ctx.world_size,
            "config": self.config.to_yaml(),
            "worker_seeding": "worker RNGs = f(seed, rank, worker id); data items keyed on (seed, epoch, index)",
        }
        self._check_finite_weights()
        root = self.out_dir / "checkpoints"
        try:
            self._move_abandoned()
            path = save_checkpoint(
                root, self.step, config=self.model_config, generator=self.model.generator,
                generator_ema=self.ema.average, motion_estimator=self.model.motion_estimator,
                discriminator=self.discriminator, state=state,
                discriminator_config=vars(self.discriminator.config))
        except OSError as exc:
            raise self._write_error(exc, root) from exc
        self._last_checkpoint = path
        self._prune(root)
        self.monitor.info(f"checkpoint {path}")
        return path

    def _checkpointed_networks(self) -> dict[str, nn.Module]:
        """The networks a checkpoint stores, by name (the EMA generator is not trained itself)."""
        return {"generator": self.model.generator, "generator EMA": self.ema.average,
                "motion estimator": self.model.motion_estimator, "discriminator": self.discriminator}

    def checkpoint_bytes(self) -> int:
        """About how many bytes one checkpoint takes: the four networks' tensors (generator, its
        EMA, motion estimator, discriminator) and Adam's two moments of every trained parameter."""
        networks = self._checkpointed_networks()
        weights = sum(t.numel() * t.element_size() for m in networks.values() for t in m.state_dict().values())
        trained = [m for name, m in networks.items() if name != "generator EMA"]
        moments = 2 * sum(p.numel() * 4 for m in trained for p in m.parameters())
        return weights + moments

    def _check_checkpoint_room(self) -> None:
        """Before the first step (main rank): checkpoints/ must take a file (written, fsynced,
        renamed, removed) and the disk must have room for one checkpoint, else an OSError
        naming --out; room for fewer than keep_last + 1 (a save keeps the old ones until it
        is done) is noted. Found hours in, at the first checkpoint, these cost the run so far."""
        root = self.out_dir / "checkpoints"
        probe = root / f".tmp-step_probe-{os.getpid()}"
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe.mkdir(exist_ok=True)
            checkpointing._write_file(probe / STATE_NAME, b"probe")  # as checkpoint files are written
            os.rename(probe, probe.with_name(probe.name + "-renamed"))
            probe = probe.with_name(probe.name + "-renamed")
        except OSError as exc:
            raise CheckpointWriteError(exc.errno, f"--out {self.out_dir}: cannot write checkpoints to {root}: "
                                                  f"{exc}") from exc
        finally:
            _remove_probe(probe)
        size, free = self.checkpoint_bytes(), shutil.disk_usage(root).free
        if free < size:
            raise CheckpointWriteError(errno.ENOSPC, f"--out {self.out_dir}: {free} bytes free on the disk of {root}, "
                                                     f"a checkpoint takes about {size}: the first one would fail; "
                                                     "free some space or choose another --out")
        wanted = self.config.checkpoint.keep_last + 1
        if free < wanted * size:
            self.monitor.info(f"note: the disk of {root} has room for about {free // size} checkpoint(s) of "
                              f"{size / 2**20:.1f} MiB; checkpoint.keep_last {wanted - 1} needs {wanted} while "
                              "saving: a later checkpoint may fail for lack of space")

    def _write_error(self, exc: OSError, root: Path) -> CheckpointWriteError:
        """The one-line error of a failed checkpoint write (logged too): step, cause, what is kept."""
        last = self._last_checkpoint
        if last is None:
            kept = "no earlier checkpoint of this run: nothing to resume"
        else:
            again = "--resume" if last.parent == root else f"--resume {last}"
            kept = (f"the earlier checkpoints are intact (the newest: {last}): free some space or fix the "
                    f"folder, then continue with {again}")
        message = f"could not write the checkpoint of step {self.step} to {root}: {exc}; {kept}"
        self.monitor.info(message)
        return CheckpointWriteError(exc.errno, message)

    def _prune(self, root: Path) -> None:
        """Delete the checkpoints past `checkpoint.keep_last`; a note names those that could not be."""
        keep = self.config.checkpoint.keep_last
        left = [p for p in prune_checkpoints(root, keep, newest_step=self.step) if p.exists()]
        if left:
            self.monitor.info(f"could not delete the older checkpoint(s) {', '.join(p.name for p in left)} "
                              f"(checkpoint.keep_last {keep}): they still take disk space in {root}")

    def _check_finite_weights(self) -> None:
        """CheckpointError when a network's weights hold NaN or Inf: such a checkpoint would be
        useless, and pruning would delete the good earlier ones for it."""
        from mcc_fast.model.checkpoint import check_finite

        for name, module in self._checkpointed_networks().items():
            try:
                check_finite(module.state_dict(), f"the checkpoint of step {self.step} ({name})")
            except CheckpointError as exc:
                raise CheckpointError(f"not writing {exc}; the earlier checkpoints are kept") from None

    def _check_losses(self, losses: dict[str, float]) -> None:
        """After a step: log its non-finite losses; when a backpropagated one is not finite
        on any rank and no gradient scaler skipped the update (fp32 / bf16), or under fp16 on some
        rank at each of the last `MAX_SKIPPED_IN_A_ROW` steps, raise `TrainingDiverged` naming the
        last checkpoint (collective: every rank calls it)."""
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        scaled = self.scalers["generator"].is_enabled()
        here = any(k in bad for k in _BACKPROPAGATED)
        if bad and (scaled or not here):
            note = " (fp16: the gradient scaler skips this update)" if scaled else ""
            self.monitor.info(f"step {self.step}: non-finite losses {bad}{note}")
        # Any rank's: DDP averages the gradients, so every rank's update is poisoned or skipped
        anywhere = self.ctx.any_flag(here)
        self._skipped_in_a_row = self._skipped_in_a_row + 1 if scaled and anywhere else 0
        if not anywhere or (scaled and self._skipped_in_a_row < MAX_SKIPPED_IN_A_ROW):
            return
        shown = ", ".join(f"{k} {v}" for k, v in bad.items()) or "on another rank"
        last = self._last_checkpoint
        where = (f"The last checkpoint, {last}, is intact: continue from it with --resume {last}" if last
                 else "No checkpoint was written yet: start again")
        why = (f"for {MAX_SKIPPED_IN_A_ROW} steps in a row, each update skipped by the fp16 gradient scaler: "
               "no progress" if scaled else "this step's update made the weights non-finite")
        message = (f"step {self.step}: the loss is not finite ({shown}); training stopped, no checkpoint written "
                   f"({why}). {where}, after a change that avoids "
                   "it (e.g. a lower optim.lr, train.precision fp32, or checking the data)")
        self.monitor.info(message)
        raise TrainingDiverged(message)

    # ---- one iteration -------------------------------------------------------------------------

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def _sync_context(self, module: nn.Module, sync: bool):
        if sync or not isinstance(module, DistributedDataParallel):
            return contextlib.nullcontext()
        return module.no_sync()

    def train_step(self, micro_batches: list[dict]) -> dict[str, float]:
        """Run iteration `self.step + 1` on this rank's micro-batches; returns its mean losses."""
        step = self.step + 1
        accumulate = len(micro_batches)
        objective = self.objective
        use_gan = objective.uses_gan(step)
        use_eq = objective.uses_equivariance(step)
        last_layer = self.model.generator.decoder.conv_out.weight
        self.discriminator.requires_grad_(False)
        for name in ("generator", "motion_estimator"):
            self.optimizers[name].zero_grad(set_to_none=True)

        sums: dict[str, torch.Tensor] = {}
        fakes = []
        for a, batch in enumerate(micro_batches):
            source = batch["source"].to(self.device, non_blocking=True)
            driving = batch["driving"].to(self.device, non_blocking=True)
            transform = transformed = None
            if use_eq:
                generator = _micro_generator(self.config.seed, step, a * self.ctx.world_size + self.ctx.rank)
                transform = objective.sample_transform(source.shape[0], generator, self.device)
                transformed = objective.transform_frame(transform, driving)
            with self._sync_context(self.step_module, a == accumulate - 1):
                with self._autocast():
                    output, kp_transformed = self.step_module(source, driving, transformed)
                    terms, diagnostics = objective.generator_terms(
                        output, driving, step, kp_transformed=kp_transformed, transform=transform,
                        discriminator=self.discriminator if use_gan else None, last_layer=last_layer)
                    if not terms:
                        raise ConfigError(f"no loss term is active at iteration {step}: check the loss weights")
                    total = torch.stack([t.float() for t in terms.values()]).sum()
                self.scalers["generator"].scale(total / accumulate).backward()
            for k, v in {**terms, **diagnostics, "total": total}.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
            fakes.append((driving, output.frame.detach()))
            self._last_visuals = (source, driving, output.frame.detach(),
                                  output.generator.training.low_res_frame.detach())
        for name in ("generator", "motion_estimator"):
            self.scalers["generator"].step(self.optimizers[name])
        self.scalers["generator"].update()
        self.ema.update(self.model.generator, self.config.train.ema_decay)

        if use_gan:
            self.discriminator.requires_grad_(True)
            self.optimizers["discriminator"].zero_grad(set_to_none=True)
            for a, (real, fake) in enumerate(fakes):
                with self._sync_context(self.discriminator_ddp, a == accumulate - 1):
                    with self._autocast():
                        loss_real = hinge_real_loss(self.discriminator_ddp(real))
                    self.scalers["discriminator"].scale(loss_real / accumulate).backward()
                    with self._autocast():
                        loss_fake = hinge_fake_loss(self.discriminator_ddp(fake))
                    self.scalers["discriminator"].scale(loss_fake / accumulate).backward()
                sums["d_real"] = sums.get("d_real", 0) + loss_real.detach()
                sums["d_fake"] = sums.get("d_fake", 0) + loss_fake.detach()
            self.scalers["discriminator"].step(self.optimizers["discriminator"])
            self.scalers["discriminator"].update()
            self.discriminator.requires_grad_(False)

        self.step_lr = self.optimizers["generator"].param_groups[0]["lr"]  # the lr this step used
        with warnings.catch_warnings():  # the discriminator's schedule runs before its first step
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
            for sched in self.schedulers.values():
                sched.step()
        self.step = step
        names = list(sums)
        values = (torch.stack([sums[k] for k in names]) / accumulate).tolist()  # one device sync
        return dict(zip(names, values))

    # ---- reporting -----------------------------------------------------------------------------

    def _unreadable(self) -> list[str]:
        """Names of the training videos skipped as unreadable in this run, those before a
        resume included (when still in the training set). Collective: every rank calls it."""
        names = self.ctx.all_gather_objects(self.dataset.videos.unreadable_videos())
        present = {e.name for e in self.dataset.videos.entries}
        earlier = {n for n in self._earlier_unreadable if n in present}
        return sorted(earlier.union(*map(set, names)))

    def _report(self, window: list[dict[str, float]], unreadable: list[str]) -> None:
        # Every rank logs the same keys (the terms depend only on the iteration).
        keys = sorted({k for row in window for k in row})
        sums = torch.tensor([[row.get(k, 0.0) for k in keys] for row in window], dtype=torch.float64).sum(0)
        counts = torch.tensor([[float(k in row) for k in keys] for row in window], dtype=torch.float64).sum(0)
        totals = self.ctx.all_reduce_sum(torch.cat([sums, counts]).to(self.device)).cpu()
        n = len(keys)
        means = {k: float(totals[i]) / max(float(totals[n + i]), 1.0) for i, k in enumerate(keys)}
        if not self.ctx.is_main:
            return
        rate = self.monitor.iterations_per_second(self.step)
        lr = self.step_lr  # the lr the reported step trained with (the schedule has moved on since)
        text = " ".join(f"{k} {v:.4f}" for k, v in means.items())
        self.monitor.info(f"step {self.step}/{self.config.train.total_iter} lr {lr:.3g} {text} "
                          f"| {rate:.2f} it/s | unreadable videos skipped: {len(unreadable)}")
        self.monitor.scalars(self.step, {**means, "lr": lr, "iterations_per_second": rate,
                                         "unreadable_videos": len(unreadable)})

    def _validate(self) -> ValidationResult | None:
        """Rank 0 validates the EMA generator (collective: every rank calls it; None elsewhere, and
        without a validation set, which only rank 0 holds)."""
        return self._on_rank0(self._validate_here, f"validate at step {self.step}")

    def _validate_here(self) -> ValidationResult | None:
        if self.val_dataset is None:
            return None
        log = self.config.log
        result = validate(self.model.motion_estimator, self.ema.average, self.val_dataset,
                          self.device, max_videos=log.val_videos or 10**9, max_frames=log.val_frames or 10**9,
                          batch_size=self.config.data.batch_size, autocast_dtype=self.autocast_dtype)
        self.monitor.info(
            f"validation step {self.step}: L1 {result.l1:.4f} PSNR {result.psnr:.2f} dB "
            f"(no-motion baseline L1 {result.l1_no_motion:.4f} PSNR {result.psnr_no_motion:.2f} dB) "
            f"on {result.frames} frames of {result.videos} videos"
            + (f" ({result.unreadable} unreadable test videos left out)" if result.unreadable else ""))
        self.monitor.scalars(self.step, result.as_dict(), prefix="val")
        return result

    # ---- the loop ------------------------------------------------------------------------------

    def train(self, stop_at: int | None = None) -> TrainResult:
        """Train until `train.total_iter` (or `stop_at`, then checkpoint as if interrupted).

        A `stop_at` at or before the current (resumed) step is a ConfigError: nothing would be
        trained, and a checkpoint past it would be written."""
        if stop_at is not None and stop_at <= self.step:
            raise ConfigError(f"--stop-at {stop_at}: the run is already at step {self.step} "
                              f"(resumed); give a later step, up to train.total_iter = {self.config.train.total_iter}")
        cfg = self.config
        log, every = cfg.log, cfg.checkpoint.every
        if self.ctx.is_main and self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            from mcc_fast.io.atomic import atomic_write_bytes

            atomic_write_bytes(self.out_dir / "config.yaml", cfg.to_yaml().encode())
            self._check_checkpoint_room()
        params = self.model.num_parameters()
        self.monitor.info(
            f"training {cfg.name}: {params['total'] / 1e6:.2f}M parameters "
            f"(generator {params['generator'] / 1e6:.2f}M, "
            f"motion estimator {params['motion_estimator'] / 1e6:.2f}M), {self.model_config.image_size}px, "
            f"device {self.device}, world size {self.ctx.world_size}, precision {cfg.train.precision}, "
            f"{'fused kernels' if self.model.generator.fused is not None else 'reference ops'}, "
            f"from step {self.step} to {cfg.train.total_iter}")
        result = TrainResult(out_dir=self.out_dir, step=self.step)
        window: list[dict[str, float]] = []
        known_unreadable = 0
        interrupted = False
        self.monitor.iterations_per_second(self.step)
        with _StopRequest(announce=self.ctx.is_main) as stop, warnings.catch_warnings():
            if not self.ctx.is_main:
                _quiet_data_warnings()
            while self.step < cfg.train.total_iter:
                losses = self.train_step(self.stream.next_step())
                self._check_losses(losses)
                result.history.append(losses)
                window.append(losses)
                self.monitor.step(self.step, losses)
                last = self.step >= cfg.train.total_iter
                if (log.print_every and self.step % log.print_every == 0) or last:
                    unreadable = self._unreadable()
                    if len(unreadable) > known_unreadable:
                        self.monitor.info(f"skipped {len(unreadable)} unreadable video(s) so far: "
                                          f"{', '.join(unreadable[:10])}")
                        known_unreadable = len(unreadable)
                    self._report(window, unreadable)
                    window = []
                if self.ctx.is_main and log.image_every and self.step % log.image_every == 0 and self._last_visuals:
                    self.monitor.images(self.step, "train/source_driving_output_lowres",
                                        image_grid(list(self._last_visuals)))
                if log.val_every and self.step % log.val_every == 0:
                    result.validation = self._validate() or result.validation
                interrupted = self.ctx.any_flag(stop.requested or (stop_at is not None and self.step >= stop_at))
                if (every and self.step % every == 0) or last or interrupted:
                    result.checkpoint = self.save() or result.checkpoint
                if interrupted:
                    self.monitor.info(f"stopped at step {self.step}; continue with --resume")
                    break
        result.step = self.step
        result.unreadable_videos = self._unreadable()
        result.interrupted = interrupted
        if result.unreadable_videos:
            self.monitor.info(f"unreadable videos skipped: {len(result.unreadable_videos)} "
                              f"({', '.join(result.unreadable_videos[:10])})")
        self.monitor.info(f"done at step {self.step}")
        return result

    def close(self) -> None:
        """Stop data workers and close the logs (the process group is left to `DistributedContext.close`)."""
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream.close()
        self.monitor.close()


def train(config: TrainConfig, out_dir: str | os.PathLike | None = None, *, resume=None, init_from=None,
          stop_at: int | None = None, overwrite: bool = False) -> TrainResult:
    """Build a `Trainer` from the environment (torchrun or one process), train, clean up."""
    context = DistributedContext.from_environment(config.check().train.device)
    trainer = None
    try:
        trainer = Trainer(config, out_dir, resume=resume, init_from=init_from, overwrite=overwrite,
                          context=context)
        return trainer.train(stop_at=stop_at)
    finally:
        if trainer is not None:
            trainer.close()
        context.close()
