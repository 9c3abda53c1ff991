"""`python -m mcc_fast.training` / `torchrun -m mcc_fast.training`: the `mcc-fast train` command."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse the `train` options and run (errors a user can fix: one line, exit status 2)."""
    from mcc_fast.commands import train as command

    parser = argparse.ArgumentParser(prog="python -m mcc_fast.training", description="Train MCC.")
    command.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return command.run(args)
    except KeyboardInterrupt:
        print("mcc_fast.training: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"mcc_fast.training: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
