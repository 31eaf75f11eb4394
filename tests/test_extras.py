"""The extras' test files fail, not skip, when an extra is installed but broken; they skip
only where it is not installed at all, and not even then under `make test`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT, import_extra


def test_an_extra_that_is_not_installed_skips_unless_required(monkeypatch):
    import conftest

    monkeypatch.setattr(conftest, "EXTRAS_REQUIRED", False)
    with pytest.raises(pytest.skip.Exception, match="no-such-dist-8d1 is not installed"):
        import_extra("no_such_module_8d1", "no-such-dist-8d1")
    monkeypatch.setattr(conftest, "EXTRAS_REQUIRED", True)
    with pytest.raises(pytest.fail.Exception, match="ANNOTATOR_TEST_EXTRAS=required"):
        import_extra("no_such_module_8d1", "no-such-dist-8d1")


def test_a_broken_extra_fails_its_test_files(tmp_path):
    """The installed modules are shadowed by ones whose import fails as a broken install's
    does (a dependency missing): collecting their files is an error, not a skip. (test_export.py
    imports its extras the same way; it is left out here because torch takes 20 s to import.)"""
    for module in ("ray", "convert_hf_to_gguf"):
        (tmp_path / module).mkdir()
        (tmp_path / module / "__init__.py").write_text(
            "import a_dependency_that_went_missing_8d1\n"
        )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_cluster.py",
            "tests/test_export_gguf_env.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(tmp_path), "ANNOTATOR_TEST_EXTRAS": ""},
    )
    assert done.returncode != 0, done.stdout
    assert "skipped" not in done.stdout.lower(), done.stdout
    assert "2 errors" in done.stdout and "a_dependency_that_went_missing_8d1" in done.stdout
