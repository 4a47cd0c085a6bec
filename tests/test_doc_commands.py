"""Every `python -m adlkit ...` command in a code block of the README and docs/ parses with today's command line:
a renamed or removed option cannot stay documented."""
import re
import shlex
from pathlib import Path

import pytest

from adlkit import cli

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.DOTALL):
            block = block.replace("\\\n", " ")
            for line in block.splitlines():
                line = line.split(" #")[0].strip()
                if line.startswith("python -m adlkit ") and "..." not in line:
                    yield page.name, line


COMMANDS = list(_commands())


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize("page,line", COMMANDS, ids=[f"{p}:{i}" for i, (p, _) in enumerate(COMMANDS)])
def test_a_documented_command_parses(page, line, capsys):
    argv = shlex.split(re.sub(r"\$\{?\w+\}?", "0", line))[3:]  # a shell variable (an array job's index): a value
    try:
        cli.build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{page}: `{line}` does not parse: {capsys.readouterr().err.strip()}")
