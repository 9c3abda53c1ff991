"""What the trainer reports: a progress bar, a text log, TensorBoard scalars and image grids.

Only rank 0 reports. TensorBoard is imported when first used (``log.tensorboard: true``);
without it installed the run goes on with a note in the log. Reporting never stops a run: a
TensorBoard writer that fails (disk full, I/O error) is turned off with one note in the log,
and a train.log that can no longer be written leaves the lines on the console (one note says
so). A train.log that cannot be opened when the run starts is an error.
"""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Mapping

import torch

__all__ = ["TrainingMonitor", "image_grid"]


def image_grid(rows: list[torch.Tensor], max_samples: int = 4) -> torch.Tensor:
    """Side-by-side grid: rows = [source, driving, output, ...] each (B, 3, H, W) in [-1, 1]
    -> (3, min(B, max_samples) * H, len(rows) * W) float32 in [0, 1] (one sample per row)."""
    columns = [r[:max_samples].detach().float().cpu().clamp(-1, 1) for r in rows]
    grid = torch.cat(columns, dim=3)  # (b, 3, H, n W)
    grid = torch.cat(list(grid), dim=1)  # (3, b H, n W)
    return (grid + 1) / 2


class TrainingMonitor:
    """Progress bar + `train.log` + TensorBoard for rank 0 (a silent no-op elsewhere).

    out_dir: the run folder (made, with train.log, at the first line logged); total_iter: for the
    bar (shown from the first step reported); start_iter: where the iteration rate starts from;
    progress: show a tqdm bar; tensorboard: write ``out_dir/tensorboard`` event files.
    """

    def __init__(self, out_dir: Path | None, *, enabled: bool, total_iter: int, start_iter: int = 0,
                 progress: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.out_dir = out_dir
        self._writer = None
        self._tensorboard = tensorboard and enabled and out_dir is not None
        self._bar = None
        self._log_file = None
        self._log_ok = True  # False after a train.log write error
        self._progress = progress and enabled
        self._total_iter = total_iter
        self._last_time = time.perf_counter()
        self._last_step = start_iter
        # The log file and the bar are made when first used: a run refused while it is being set up
        # (bad data, a folder holding another run) leaves no empty train.log or run folder behind.

    def _log(self):
        if self._log_file is None and self.enabled and self._log_ok and self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.out_dir / "train.log", "a", buffering=1)
        return self._log_file

    def _log_failed(self, exc: OSError) -> None:
        """Stop writing train.log after a write error (one note on the console); the run goes on."""
        file, self._log_file = self._log_file, None
        self._log_ok = False
        if file is not None:  # (None when closing it was what failed)
            with contextlib.suppress(OSError):
                file.close()
        print(f"mcc-fast train: note: cannot write {self.out_dir / 'train.log'} ({exc}); "
              "the log goes on on the console only", file=sys.stderr, flush=True)

    def _progress_bar(self, step: int):
        if self._bar is None and self._progress:
            from tqdm import tqdm

            self._bar = tqdm(total=self._total_iter, initial=max(step - 1, 0), unit="it", dynamic_ncols=True,
                             file=sys.stderr, desc="train")
        return self._bar

    # ---- text ----------------------------------------------------------------------------------

    def info(self, message: str) -> None:
        """One line to the log file and the console (above the bar)."""
        if not self.enabled:
            return
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {message}"
        if self._log() is not None:
            try:
                self._log_file.write(line + "\n")
            except OSError as exc:
                self._log_failed(exc)
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def step(self, step: int, losses: Mapping[str, float]) -> None:
        """Advance the bar to `step` and show the main losses."""
        if not self.enabled or self._progress_bar(step) is None:
            return
        self._bar.update(step - self._bar.n)
        shown = {k: f"{v:.4f}" for k, v in losses.items()
                 if k in ("total", "l1", "perceptual", "gan", "d_real", "d_fake")}
        self._bar.set_postfix(shown, refresh=False)

    def iterations_per_second(self, step: int) -> float:
        """Iterations per second since the previous call."""
        now = time.perf_counter()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        return rate

    # ---- TensorBoard ---------------------------------------------------------------------------

    def _tb(self):
        if not self._tensorboard:
            return None
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception as exc:  # tensorboard not installed
                self._tensorboard = False
                self.info(f"TensorBoard logging off: {exc}")
                return None
            try:
                self._writer = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))
            except Exception as exc:
                self._tensorboard_failed(exc)
        return self._writer

    def _tensorboard_failed(self, exc: Exception) -> None:
        """Turn TensorBoard off after an error of its writer (one note in the log); the run goes on."""
        writer, self._writer, self._tensorboard = self._writer, None, False
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass
        self.info(f"TensorBoard logging off after an error writing {self.out_dir / 'tensorboard'}: {exc} "
                  "(training goes on)")

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "train") -> None:
        """TensorBoard scalars `prefix/name` at `step`."""
        writer = self._tb() if self.enabled else None
        if writer is None:
            return
        try:
            for name, value in values.items():
                writer.add_scalar(f"{prefix}/{name}", float(value), step)
        except Exception as exc:
            self._tensorboard_failed(exc)

    def images(self, step: int, name: str, grid: torch.Tensor) -> None:
        """A (3, H, W) [0, 1] image in TensorBoard."""
        writer = self._tb() if self.enabled else None
        if writer is not None:
            try:
                writer.add_image(name, grid, step)
            except Exception as exc:
                self._tensorboard_failed(exc)

    def close(self) -> None:
        """Flush and close everything."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close()
            except Exception as exc:  # the last events may be lost; the run itself is done
                self._tensorboard_failed(exc)
        if self._log_file is not None:
            file, self._log_file = self._log_file, None
            try:
                file.close()
            except OSError as exc:
                self._log_failed(exc)
