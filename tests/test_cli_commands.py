"""A CLI command whose module fails to import is reported, not silently dropped; missing extras stay the
command's own message (``zoo demo`` without Gradio)."""

from __future__ import annotations

import sys

import pytest

from zoo.cli import app as cli
from zoo.errors import ZooError


@pytest.fixture
def broken_command(monkeypatch, tmp_path):
    """``zoo broken``, whose module imports a dependency that is not installed."""
    (tmp_path / "zoo_h9_broken_command.py").write_text(
        "import zoo_h9_missing_dependency\nHELP = 'never shown'\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "broken", "zoo_h9_broken_command")
    yield "broken"
    sys.modules.pop("zoo_h9_broken_command", None)


def test_running_a_command_whose_module_fails_to_import_is_an_error_naming_it(broken_command, capsys):
    assert cli.main([broken_command, "model.yaml", "--max-steps", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("zoo: error: 'zoo broken' is unavailable: its module zoo_h9_broken_command failed to import")
    assert "ModuleNotFoundError: No module named 'zoo_h9_missing_dependency'" in err
    assert "--debug" in err


def test_the_broken_command_is_listed_as_unavailable_and_the_others_keep_working(broken_command, capsys):
    assert cli.main(["--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "broken (unavailable: its module zoo_h9_broken_command failed to import)" in help_text
    assert cli.main(["list", "vision", "tiny-clip"]) == 0
    assert "tiny-clip" in capsys.readouterr().out


def test_debug_shows_the_import_error_as_the_cause(broken_command):
    with pytest.raises(ZooError) as caught:
        cli.main(["--debug", broken_command])
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_json_errors_keep_their_shape(broken_command, capsys):
    assert cli.main([broken_command, "--json"]) == 2
    assert '"error": "\'zoo broken\' is unavailable' in capsys.readouterr().out


def test_every_shipped_command_imports():
    parser = cli.make_parser()
    assert "unavailable" not in parser.format_help()


def test_demo_without_gradio_is_still_the_demo_commands_own_message(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert cli.main(["demo", "--help"]) == 0  # the command is there, not "unavailable"
    assert "--share" in capsys.readouterr().out
    assert cli.main(["demo", "tiny-clip-mlp-qwen2"]) == 2
    err = capsys.readouterr().err
    assert "zoo demo needs Gradio: pip install 'zoo-vlm[demo]'" in err
