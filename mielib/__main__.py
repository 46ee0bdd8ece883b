"""`python -m mielib WORD ...`: the command-line entry point.

Each WORD belongs to the module that owns the concept; this file only dispatches, so `--help`
of each command lives beside its code.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "render": ("face", "render one face from an identity and AU intensities to an image file"),
    "data": ("datasets", "inspect a real dataset folder or a simulated stand-in"),
    "lab": ("lab", "generate or inspect the simulated lab"),
    "miex": ("miex", "build the MiE-X synthetic dataset"),
    "gan": ("ganimation", "train or apply GANimation"),
    "results": ("experiments", "list or invalidate cached experiment results"),
    "notebooks": ("notebooks", "run the numbered notebooks with papermill (regenerates figures/)"),
    "cuda-ci": ("cudaci", "the CUDA CI behind `make ci-cuda` (needs an NVIDIA GPU; `make test` is the CPU suite)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: python -m mielib COMMAND [options]\n\ncommands:")
        for word, (_, text) in COMMANDS.items():
            print(f"  {word:<10} {text}")
        print("\n`python -m mielib COMMAND --help` explains each command.")
        return 0
    word, rest = argv[0], argv[1:]
    if word not in COMMANDS:
        print(f"error: unknown command {word!r}; known commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"mielib.{COMMANDS[word][0]}")
    try:
        code = int(module.cli(rest) or 0)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader left (`... | head`): stop quietly, as Unix tools do. Point stdout at devnull
        # so Python's own flush at exit does not print a second BrokenPipeError.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
