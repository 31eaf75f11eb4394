"""The kit's wheelhouse: a wheel of every distribution the laptop needs, at the exact versions
installed here. Other locally built wheels come from pip's cache when their tags fit this
Python and platform; the rest are downloaded as wheels only; the project itself is built as a
wheel; llama-cpp-python is the portable build of `annotator.kit.llama_wheel`, never pip's.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path

from annotator.errors import AnnotatorError
from annotator.kit.llama_wheel import LLAMA, _llama_wheel
from annotator.kit.tags import _packaging, _wheel_tags

PROJECT = "rubric-annotator"
# What the project wheel is built from (a checkout: the editable install's source tree).
_SOURCE_PARTS = ("pyproject.toml", "README.md", "LICENSE", "annotator")
ROOT = Path(__file__).resolve().parents[2]  # the checkout: annotator/kit/wheelhouse.py


def requirement_closure(root: str, extras: Sequence[str] = ()) -> dict[str, str]:
    """{distribution: installed version} for everything `root[extras]` needs, root excluded.

    Read from the installed distributions' metadata: the kit holds exactly what runs here.
    """
    requirements, canonical = _packaging()
    found: dict[str, str] = {}
    wanted: dict[str, set[str]] = {}
    todo: list[tuple[str, set[str]]] = [(root, set(extras))]
    while todo:
        name, extra_set = todo.pop()
        key = canonical(name)
        if key in wanted and extra_set <= wanted[key]:
            continue
        wanted[key] = wanted.get(key, set()) | extra_set
        try:
            dist = importlib_metadata.distribution(name)
        except importlib_metadata.PackageNotFoundError:
            raise AnnotatorError(
                f"{name} is needed but not installed here; install "
                f"'{PROJECT}[{','.join(extras)}]' first"
            ) from None
        if key != canonical(root):
            found[key] = dist.version
        unknown = extra_set - {canonical(e) for e in dist.metadata.get_all("Provides-Extra") or []}
        if key == canonical(root) and unknown:
            raise AnnotatorError(f"--extras: {PROJECT} has no extra {sorted(unknown)[0]!r}")
        for text in dist.requires or []:
            req = requirements(text)
            contexts = [{"extra": e} for e in sorted(wanted[key] | {""})]
            if req.marker is None or any(req.marker.evaluate(c) for c in contexts):
                todo.append((req.name, set(req.extras)))
    return dict(sorted(found.items()))


def _wheelhouse(
    folder: Path,
    closure: dict[str, str],
    say: Callable[[str], None],
    llama_wheel: Path | None = None,
) -> tuple[list[Path], dict | None]:
    """The wheels, and the record of the llama-cpp-python build among them (for the manifest)."""
    folder.mkdir()
    _, canonical = _packaging()
    parse_wheel_filename, rank = _wheel_tags()
    cached: dict[tuple[str, str], tuple[int, Path]] = {}
    for line in _pip("cache", "list", "--format=abspath", check=False).splitlines():
        path = Path(line.strip())
        if path.suffix != ".whl" or not path.is_file():
            continue
        try:
            parse_wheel_filename(path.name)
        except ValueError:
            continue
        name, version = path.name.split("-")[:2]
        fit = rank(path.name)
        key = (canonical(name), version)
        # Only a build for this Python and platform; of several, the one pip itself would pick.
        if fit is not None and (key not in cached or fit < cached[key][0]):
            cached[key] = (fit, path)
    download = []
    llama = None
    for name, version in closure.items():
        if name == LLAMA:
            llama = _llama_wheel(folder, version, llama_wheel, say)
        elif (name, version) in cached:
            # Built here from source: reuse the cached build, never rebuild.
            say(f"  {name} {version}: the wheel built on this machine (pip's cache)")
            shutil.copy2(cached[(name, version)][1], folder)
        else:
            download.append(f"{name}=={version}")
    if download:
        say(f"  downloading {len(download)} wheels (binary only, no dependencies resolved)")
        _pip("download", "--no-deps", "--only-binary=:all:", "--dest", str(folder), *download)
    say(f"  building the {PROJECT} wheel from {ROOT}")
    _project_wheel(folder)
    wheels = sorted(folder.glob("*.whl"))
    have = {(canonical(w.name.split("-")[0]), w.name.split("-")[1]) for w in wheels}
    missing = [f"{n} {v}" for n, v in closure.items() if (n, v) not in have]
    if missing:
        raise AnnotatorError(
            f"no wheel for {', '.join(missing)} (pip wheel it once on this machine)"
        )
    return wheels, llama


def _project_wheel(folder: Path) -> None:
    if not (ROOT / "pyproject.toml").is_file():
        raise AnnotatorError(f"{ROOT}: not a checkout of {PROJECT}; build kits from a checkout")
    source = folder.parent / "project-source"
    for part in _SOURCE_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(
                src,
                source / part,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
            )
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(src, source / part)
    try:
        _pip("wheel", "--no-deps", "--wheel-dir", str(folder), str(source))
    finally:
        shutil.rmtree(source)


def _pip(*args: str, check: bool = True) -> str:
    """pip of this interpreter; `check=False`: output of a failed call is empty (a disabled
    cache only means every wheel is downloaded)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 and not check:
        return ""
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise AnnotatorError(f"pip {args[0]} failed: {last}")
    return done.stdout
