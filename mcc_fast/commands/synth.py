"""`mcc-fast synth`: write a synthetic talking-head dataset (see mcc_fast.training.synth)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..training.synth_cli import add_synth_arguments

    add_synth_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..training.synth_cli import run_synth

    return run_synth(args)
