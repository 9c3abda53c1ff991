"""Subcommands of `mcc-fast`, one module each (see mcc_fast/cli.py)."""
