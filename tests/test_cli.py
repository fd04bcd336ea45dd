"""CLI wiring: every command listed, and the runtime imports no torch."""
import subprocess
import sys

from click.testing import CliRunner

from mimicsearch.cli import main


def test_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for name in main.commands:
        assert name in result.output


def test_runtime_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import mimicsearch, mimicsearch.cli, mimicsearch.model_manifest, mimicsearch.fileio\n"
        "import importlib, pkgutil\n"
        "for m in pkgutil.iter_modules(mimicsearch.__path__):\n"
        "    if m.name != 'spark':\n"
        "        importlib.import_module('mimicsearch.' + m.name)\n"
        "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
