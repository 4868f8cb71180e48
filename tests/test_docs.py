"""The docs: generated pages are fresh, the site builds with no warning, and every `fleet` command the
docs and the README show is one the real parser accepts."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from clients.errors import InputError
from fleet.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md"))
SHOWN = [ROOT / "README.md", ROOT / "scenarios" / "README.md", *PAGES]
SHELL_ENDS = {"&&", "||", "|", ";", ">", ">>", "2>&1", "&"}


def test_every_generated_page_is_fresh():
    """cog rewrites the blocks generated from the code and results/ (docs/generate.py); --check fails
    when a page differs from what its block would write now."""
    result = subprocess.run([sys.executable, "-m", "cogapp", "--check", "-I", "docs", *map(str, PAGES)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, (
        f"stale docs: run `.venv/bin/cog -r -I docs docs/**/*.md`\n{result.stdout}{result.stderr}")


def test_the_site_builds_with_no_warning(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "index.html").is_file() and (tmp_path / "reference" / "cli" / "index.html").is_file()


def shown_commands() -> list[tuple[str, str]]:
    """(where, command) for every `fleet ...` command in a code block or span of the docs."""
    found = []
    for path in SHOWN:
        text = path.read_text()
        blocks = re.findall(r"```(?:bash|sh|console|text)?\n(.*?)```", text, re.S)
        lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
        lines += re.findall(r"`((?:\.venv/bin/)?fleet [^`]+)`", text)
        for line in lines:
            line = line.strip().removeprefix("$ ")
            for start in re.finditer(r"(?:^|&& |; )((?:\.venv/bin/)?fleet \S.*)", line):
                found.append((f"{path.relative_to(ROOT)}", start.group(1)))
    return found


def test_the_docs_show_commands():
    assert len(shown_commands()) > 40


@pytest.mark.parametrize("where, command", shown_commands(), ids=lambda v: v if " " not in v else None)
def test_every_command_the_docs_show_parses(where, command):
    try:
        words = shlex.split(command, comments=True)
    except ValueError as err:
        pytest.fail(f"{where}: `{command}` is not a shell command: {err}")
    cut = next((i for i, w in enumerate(words) if w in SHELL_ENDS), len(words))
    args = words[1:cut]
    if "--help" in args or "-h" in args:
        return
    try:
        build_parser().parse_args(args)
    except (InputError, SystemExit) as err:
        pytest.fail(f"{where}: `{command}` does not parse: {err}")


def test_the_readme_is_short_and_its_links_lead_somewhere():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    for target in re.findall(r"\]\(([^)#]+)", text):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"
