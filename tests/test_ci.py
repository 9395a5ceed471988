"""CI runs exactly what README's Quick start tells a new user to run."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _quick_start_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_readme_quick_start_has_the_demo_and_the_test_suite():
    commands = _quick_start_commands()
    assert len(commands) == 2, commands
    assert "hyperspy-lorentz demo" in commands[0]
    assert commands[1].endswith("python3 -m pytest")


def test_ci_runs_readme_commands_in_a_fresh_virtual_environment():
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in script.splitlines()]
    venv_at = next(i for i, line in enumerate(lines) if line.startswith("python3 -m venv"))
    activate_at = next(i for i, line in enumerate(lines) if "bin/activate" in line
                       and not line.startswith("#"))
    assert venv_at < activate_at
    for command in _quick_start_commands():
        assert command in lines, f".ci/run does not run README's command:\n{command}"
        assert lines.index(command) > activate_at, "README's command runs outside the new venv"
