"""The laptop core never imports the GPU-side or UI libraries (import hygiene)."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "textual", "ray", "pyarrow")
EXTRAS = ("tui", "train", "export")  # subpackages that bring Textual or torch on purpose


def core_modules() -> list[str]:
    """Every module of the core: annotator and its rooms, not the extras' subpackages."""
    import pkgutil

    import annotator

    names = ["annotator"]
    for info in pkgutil.walk_packages(annotator.__path__, "annotator."):
        if info.name.split(".")[1] not in EXTRAS and not info.name.endswith("__main__"):
            names.append(info.name)
    return names


CORE_MODULES = core_modules()


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_no_heavy_library(module):
    code = f"import sys, {module}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_core_commands_import_no_heavy_library(tmp_path):
    """Run the commands of the core in-process and look at sys.modules afterwards."""
    code = f"""
import sys
from click.testing import CliRunner
from annotator.cli.main import cli
runner = CliRunner()
for args in (["--help"], ["doctor"], ["annotate", "--help"], ["results", "--help"],
             ["agree", "--help"], ["review", "import", "--help"], ["inspect", "--help"],
             ["project", "split", "--help"], ["project", "merge", "--help"],
             ["train", "--help"], ["export", "--help"]):
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, (args, result.output)
from annotator.modelfile import default_model_path, read_model_info
read_model_info(default_model_path())
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
