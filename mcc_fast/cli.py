"""The `mcc-fast` command (also `python -m mcc_fast`): one subcommand per module.

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int`. Errors a user
can fix (bad paths, bad arguments, no GPU) print one line and exit non-zero, no traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import sys
import warnings

# name -> (module, help). Every module is imported to build the parser (its add_arguments).
COMMANDS = {
    "info": ("mcc_fast.commands.info", "version, backends available and why not, GPU, build flags"),
    "animate": ("mcc_fast.commands.animate", "animate a portrait with a driving video"),
    "demo": ("mcc_fast.commands.demo", "run the embedded demo model offline"),
    "synth": ("mcc_fast.commands.synth", "write a synthetic talking-head dataset"),
    "train": ("mcc_fast.commands.train", "train MCC on a folder of videos"),
    "evaluate": ("mcc_fast.commands.evaluate", "evaluate a checkpoint on a test set"),
}


class CommandError(Exception):
    """An error the user can fix: printed as one line, exit status 2."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse names the option and exits with status 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def print_note(prog: str, message: str) -> None:
    """One `PROG: note: MESSAGE` line on stderr (above a tqdm progress bar when one is shown)."""
    from tqdm import tqdm

    tqdm.write(f"{prog}: note: {message}", file=sys.stderr)


@contextlib.contextmanager
def warnings_as_notes(prog: str):
    """Inside the block, Python warnings (unreadable videos, resized frames, ...) print as one-line
    `print_note` lines, not with the source file and line that raised them."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *args, **kwargs: print_note(prog, str(message))
        yield


DEVICE_HELP = "cuda, cuda:N or cpu (default: cuda when available, else cpu)"


def device_option(text: str | None, option: str = "--device"):
    """The torch.device a --device value names (None: CUDA when available, else CPU); a
    CommandError naming `option` for a bad value or a GPU this machine does not have."""
    from .devices import resolve_device

    try:
        return resolve_device(text, option)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _available_commands() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (module, help_text) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            out[name] = (module, help_text)
    return out


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="mcc-fast", description="Fast MCC talking-head generation.")
    parser.add_argument("--version", action="version", version=f"mcc_fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in _available_commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("mcc-fast: interrupted", file=sys.stderr)
        return 130
    except (CommandError, FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"mcc-fast {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
