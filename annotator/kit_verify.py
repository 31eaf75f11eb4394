"""Check a field kit before anything is installed from it. Standard library only.

`annotator kit build` copies this file into the kit as `verify.py`, because `install.sh` must
check the kit before the package exists; `annotator kit verify` runs the same code. Every file
the manifest lists must have its size and sha256, every file under the kit's own folders must
be listed, and the kit must be for this Python and platform. One line per problem, naming
the file.

    python3 verify.py KIT                  # exit 0: intact and for this machine; 1: refused
    python3 verify.py KIT --marker VENV    # after install: record in VENV which kit it came from
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

MANIFEST = "MANIFEST.json"
MARKER = "annotator-kit.json"  # written into the venv; `annotator doctor` reads it
# Folders whose every file must be in the manifest: an added wheel would be installed too.
LISTED_DIRS = ("wheels", "models", "rubric", "sample", "licenses")
# Not datetime.UTC (3.11+): this file must run on any Python 3 to report a version mismatch.
_UTC = timezone.utc  # noqa: UP017


def python_tag() -> str:
    return f"cp{sys.version_info[0]}{sys.version_info[1]}"


def platform_name() -> str:
    return sysconfig.get_platform()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(4 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(kit: Path) -> tuple[dict | None, str | None]:
    path = kit / MANIFEST
    if kit.is_file() and kit.name.endswith((".tar.gz", ".tgz")):
        return None, f"{kit}: an archived kit; unpack it first (tar xzf {kit.name})"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path}: missing (not a kit folder, or an incomplete copy)"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path}: unreadable or not JSON ({exc})"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        return None, f"{path}: not a kit manifest (no file list)"
    return manifest, None


def check_kit(kit: Path) -> list[str]:
    """Every problem with the kit, one line each; empty when it is intact and fits here."""
    kit = Path(kit)
    manifest, problem = read_manifest(kit)
    if manifest is None:
        return [problem or f"{kit}: not a kit"]
    problems = []
    want_tag, want_platform = manifest.get("python_tag"), manifest.get("platform")
    if want_tag != python_tag() or want_platform != platform_name():
        problems.append(f"{kit / MANIFEST}: the kit is for {want_tag} on {want_platform}, this "
                        f"machine runs {python_tag()} on {platform_name()} (build the kit on a "
                        "machine like this one)")
    listed = set()
    for entry in manifest["files"]:
        name = entry.get("path") if isinstance(entry, dict) else None
        rel = PurePosixPath(str(name))
        if not isinstance(name, str) or rel.is_absolute() or ".." in rel.parts:
            problems.append(f"{kit / MANIFEST}: bad file entry {str(name)[:80]!r}")
            continue
        listed.add(name)
        path = kit / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != entry.get("size"):
            problems.append(f"{path}: {path.stat().st_size} bytes, the manifest says "
                            f"{entry.get('size')} (damaged or changed)")
        elif sha256_of(path) != entry.get("sha256"):
            problems.append(f"{path}: sha256 differs from the manifest (damaged or changed)")
    for folder in LISTED_DIRS:
        for path in sorted((kit / folder).rglob("*")) if (kit / folder).is_dir() else []:
            if path.is_file() and path.relative_to(kit).as_posix() not in listed:
                problems.append(f"{path}: not in the manifest (added after the kit was built)")
    return problems


def write_marker(kit: Path, venv: Path) -> Path:
    """Record in the venv which kit it was installed from (shown by `annotator doctor`)."""
    manifest, problem = read_manifest(kit)
    if manifest is None:
        raise SystemExit(problem)
    marker = {
        "kit": str(Path(kit).resolve()),
        "manifest_sha256": sha256_of(Path(kit) / MANIFEST),
        "built": manifest.get("built"),
        "annotator_version": manifest.get("annotator_version"),
        "model": (manifest.get("model") or {}).get("file"),
        "installed": datetime.now(_UTC).replace(microsecond=0).isoformat(),
    }
    path = Path(venv) / MARKER
    path.write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    return path


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or len(argv) not in (1, 3) \
            or (len(argv) == 3 and argv[1] != "--marker"):
        print(__doc__.strip().splitlines()[-2].strip(), file=sys.stderr)
        return 2
    kit = Path(argv[0])
    problems = check_kit(kit)
    for line in problems:
        print(f"kit refused: {line}", file=sys.stderr)
    if problems:
        return 1
    manifest, _ = read_manifest(kit)
    assert manifest is not None
    print(f"kit OK: {len(manifest['files'])} files match the manifest; for "
          f"{python_tag()} on {platform_name()}")
    if len(argv) == 3:
        write_marker(kit, Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
