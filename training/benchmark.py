"""Training-step benchmark: time per iteration and peak memory of several set-ups, in one run.

    python -m mcc_fast.training.benchmark --config official --batch 4 --runs fp32:reference bf16:fused

Builds a tiny synthetic dataset (a few videos at the model's size) in a temporary folder,
then for each run PRECISION:OPS (precision fp32 | bf16 | fp16; ops "reference" or "fused",
the fused mcc_fast.ops kernels of `Model.use_fused_ops`) a `Trainer` with the GAN on from the
first step (the full official step: generator + motion estimator + equivariance +
discriminator) and a random VGG19 of the standard widths (same cost as real weights). Prints
one JSON line per run: seconds per iteration (median after `--warmup` iterations),
iterations per second and the peak CUDA memory (null on CPU); then one line comparing the
last run with the first (speed-up, memory ratio), the issue's target being >= 1.5x at no
more memory for bf16:fused against fp32:reference.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

__all__ = ["benchmark_step", "main"]


def benchmark_step(config_name: str, data_root: Path, precision: str, batch: int, steps: int, warmup: int,
                   overrides: list[str] = (), fused: bool = False) -> dict:
    """Measure `steps` training iterations of `config_name` at `precision` (see the module docstring)."""
    from .config import load_config
    from .trainer import Trainer

    config = load_config(config_name, [
        f"data.root={data_root}", f"data.batch_size={batch}", "train.accumulate=1", f"train.precision={precision}",
        "data.num_workers=0", "data.repeats=1000", "loss.random_vgg=true", "loss.vgg_weights=null",
        "loss.start_iters={gan: 0}", "log.progress=false", "log.tensorboard=false", "log.val_every=0",
        "log.print_every=0", "log.image_every=0", "checkpoint.every=0", f"train.fused_ops={str(fused).lower()}",
        *overrides])
    trainer = Trainer(config, None)
    device = trainer.device
    try:
        batches = [trainer.stream.next_step() for _ in range(2)]
        times = []
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for i in range(warmup + steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            trainer.train_step(batches[i % 2])
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    finally:
        trainer.close()
    median = statistics.median(times)
    return {"config": config_name, "precision": precision, "ops": "fused" if fused else "reference", "batch": batch, "image_size": config.model_config.image_size,
            "device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
            "seconds_per_iter": round(median, 5), "iters_per_second": round(1 / median, 3),
            "peak_memory_mib": None if peak is None else round(peak, 1), "steps": steps}


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m mcc_fast.training.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="official",
                        help="training config: a YAML file or official, demo, smoke (default official)")
    parser.add_argument("--batch", type=int, default=4, help="micro-batch per step (default 4)")
    parser.add_argument("--runs", nargs="+", default=["fp32:reference", "bf16:fused"], type=_run,
                        metavar="PRECISION:OPS",
                        help="precision fp32|bf16|fp16, ops reference|fused (default fp32:reference bf16:fused)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them (default 3)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, repeatable (as for mcc-fast train)")
    args = parser.parse_args(argv)
    from .config import load_config
    from .synth import write_dataset

    size = load_config(args.config, args.overrides).model_config.image_size
    with tempfile.TemporaryDirectory(prefix="mcc_bench_") as tmp:
        write_dataset(tmp, videos=4, frames=8, size=size, seed=0, format="png", test_fraction=0.0)
        results = []
        for precision, fused in args.runs:
            results.append(benchmark_step(args.config, Path(tmp), precision, args.batch, args.steps, args.warmup,
                                          args.overrides, fused=fused))
            print(json.dumps(results[-1]), flush=True)
    if len(results) > 1:
        first, last = results[0], results[-1]
        memory = (None if first["peak_memory_mib"] is None
                  else round(last["peak_memory_mib"] / first["peak_memory_mib"], 3))
        print(json.dumps({"compare": [f"{r['precision']}:{r['ops']}" for r in (last, first)],
                          "speedup": round(first["seconds_per_iter"] / last["seconds_per_iter"], 3),
                          "memory_ratio": memory}), flush=True)
    return 0


def _run(text: str) -> tuple[str, bool]:
    precision, _, ops = text.partition(":")
    if precision not in ("fp32", "bf16", "fp16") or ops not in ("reference", "fused"):
        raise argparse.ArgumentTypeError(f"expected PRECISION:OPS with precision fp32|bf16|fp16 and ops "
                                         f"reference|fused, got {text!r}")
    return precision, ops == "fused"


if __name__ == "__main__":
    sys.exit(main())
