import subprocess
import sys

from kubeletpy.cli import COMMANDS, main


def test_help_lists_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "images" in out or "up" in out


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "kubeletpy", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "kubeletpy" in r.stdout


def test_every_command_names_a_module():
    for name, (module, summary) in COMMANDS.items():
        assert module.startswith("kubeletpy.cli."), name
        assert summary
