"""`busted ui` refuses clearly when it cannot open a window, before touching anything."""

from __future__ import annotations

import subprocess
import sys

from busted.cli import main


def test_no_display_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["ui", "--demo"]) == 1
    err = capsys.readouterr().err
    assert "No display" in err and "Xvfb" in err
    assert "Traceback" not in err


def test_missing_dear_pygui_names_the_extra(monkeypatch, capsys):
    monkeypatch.setenv("DISPLAY", ":999")
    # A None entry makes `import dearpygui...` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "dearpygui", None)
    monkeypatch.setitem(sys.modules, "dearpygui.dearpygui", None)
    assert main(["ui", "--demo"]) == 1
    err = capsys.readouterr().err
    assert "Dear PyGui is not installed" in err
    assert "busted[ui]" in err


def test_flags_that_exclude_each_other(capsys):
    assert main(["ui", "--demo", "--endpoint", "ipc:///tmp/x.sock"]) == 2
    assert "exclude" in capsys.readouterr().err


def test_help_ends_with_examples():
    out = subprocess.run([sys.executable, "-m", "busted", "ui", "--help"], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert "busted ui --demo" in out and "--max-events" in out
