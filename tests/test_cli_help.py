"""Every command's --help says what the command does, and every option has help text."""

import re

import pytest

from mielib.__main__ import main

SUBCOMMANDS = [
    ["render"], ["data", "inspect"], ["lab", "build"], ["lab", "card"], ["miex", "build"], ["miex", "info"],
    ["gan", "train"], ["gan", "edit"], ["results", "ls"], ["results", "rm"], ["notebooks"],
    ["cuda-ci", "check"], ["cuda-ci", "install"], ["cuda-ci", "run"],
]


def _help(words, capsys) -> str:
    try:
        main(words + ["--help"])
    except SystemExit as exc:  # some commands let argparse exit, others return its code
        assert exc.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=[" ".join(w) for w in SUBCOMMANDS])
def test_help_has_a_description_and_every_option_is_explained(words, capsys):
    text = _help(words, capsys)
    paragraphs = text.split("\n\n")
    assert len(paragraphs) > 2 and not paragraphs[1].lstrip().startswith(("options:", "positional arguments:")), \
        f"`{' '.join(words)} --help` has no description:\n{text}"
    lines = text[text.index("options:"):].splitlines()[1:]
    for i, line in enumerate(lines):
        # "  --seed SEED        help" or "  --seed SEED" with the help indented on the next line
        if re.match(r"  -", line) and not re.search(r"\S  +\S", line.strip()):
            following = lines[i + 1] if i + 1 < len(lines) else ""
            assert re.match(r" {6,}\S", following), f"`{' '.join(words)}`: {line.strip()!r} has no help text"


def test_lab_card_is_wrapped_for_the_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["lab", "card"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  clips: 442" in lines and max(map(len, lines)) <= 80
