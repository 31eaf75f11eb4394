"""Check a field kit before anything is installed from it. Standard library only.

`annotator kit build` copies this file into the kit as `verify.py`, because `install.sh` must
check the kit before the package exists; `annotator kit verify` runs the same code. Every file
the manifest lists must have its size and sha256, every file under the kit's own folders must
be listed, the kit must be for this Python and platform, and this CPU must have every feature
the kit's llama.cpp build needs. With --digest, MANIFEST.json must have the sha256 that
`kit build` printed, passed to the laptop by another way than the kit; with --signers, its
signature (`kit build --sign`, checked by `ssh-keygen -Y verify`) must be by a key in that
allowed_signers file. One line per problem, naming the file.

    python3 verify.py KIT                  # exit 0: intact and for this machine; 1: refused
    python3 verify.py KIT --digest SHA256  # ... and MANIFEST.json is the one that was built
    python3 verify.py KIT --signers FILE   # ... and MANIFEST.json is signed by a key in FILE
    python3 verify.py KIT --marker VENV    # after install: record in VENV which kit it came from
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import sysconfig
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

MANIFEST = "MANIFEST.json"
MARKER = "annotator-kit.json"  # written into the venv; `annotator doctor` reads it
SIGNATURE = MANIFEST + ".sig"  # `ssh-keygen -Y sign` of the manifest, in this namespace:
SIGN_NAMESPACE = "annotator-kit"
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


def is_digest(text: str) -> bool:
    return re.fullmatch(r"[0-9a-fA-F]{64}", text) is not None


def cpu_flags() -> set[str] | None:
    """This CPU's features as Linux names them (/proc/cpuinfo), or None where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86; ARM
            return set(value.split())
    return None


def _llama(manifest: dict) -> dict | None:
    llama = manifest.get("llama_cpp")
    if not isinstance(llama, dict) or not isinstance(llama.get("cpu_features"), list):
        return None
    return llama


def _missing_cpu_features(llama: dict) -> list[str] | None:
    have = cpu_flags()
    if have is None:
        return None
    return [str(f) for f in llama["cpu_features"] if f not in have]


def llama_summary(manifest: dict) -> str:
    """One line: which llama.cpp build the kit carries, and whether this CPU runs it."""
    llama = _llama(manifest)
    if llama is None:
        return "llama.cpp: no record of its build"
    kind = (
        "portable CPU build"
        if llama.get("portable") and not llama.get("gpu")
        else "build for one machine"
    )
    needs = ", ".join(map(str, llama["cpu_features"])) or "no CPU feature beyond the baseline"
    missing = _missing_cpu_features(llama)
    if missing is None:
        verdict = "this CPU's features could not be read (/proc/cpuinfo)"
    elif missing:
        verdict = f"this CPU lacks {', '.join(missing)}"
    else:
        verdict = "this CPU has every feature it needs"
    return f"llama.cpp: {kind} {llama.get('version', '')} (needs {needs}): {verdict}"


def _ssh_keygen(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["ssh-keygen", *args], input=data, capture_output=True)
    except OSError:
        return None


def signer_of(kit: Path, signers: Path) -> tuple[str | None, str | None]:
    """(principal, None) when MANIFEST.json is signed by a key in the allowed_signers file
    `signers`, else (None, the problem in one line)."""
    signature = Path(kit) / SIGNATURE
    if not signature.is_file():
        return None, f"{signature}: missing (not signed)"
    if not Path(signers).is_file():
        return None, f"{signers}: no such allowed_signers file"
    found = _ssh_keygen("-Y", "find-principals", "-s", str(signature), "-f", str(signers))
    if found is None:
        return None, f"{signature}: cannot be checked: --signers needs ssh-keygen (OpenSSH 8.1+)"
    principals = found.stdout.decode("utf-8", "replace").split()
    if found.returncode != 0 or not principals:
        return None, f"{signature}: not signed by a key in {signers}"
    done = _ssh_keygen(
        "-Y",
        "verify",
        "-f",
        str(signers),
        "-I",
        principals[0],
        "-n",
        SIGN_NAMESPACE,
        "-s",
        str(signature),
        data=(Path(kit) / MANIFEST).read_bytes(),
    )
    if done is None or done.returncode != 0:
        text = done.stderr.decode("utf-8", "replace") if done else "ssh-keygen not found"
        why = (text.strip().splitlines() or ["no message"])[-1]
        return None, f"{signature}: does not match MANIFEST.json ({why[:200]})"
    return principals[0], None


def check_kit(
    kit: Path, digest: str | None = None, cpu: bool = True, signers: Path | None = None
) -> list[str]:
    """Every problem with the kit, one line each; empty when it is intact and fits here.
    `digest`: MANIFEST.json's sha256 as `kit build` printed it; `signers`: an allowed_signers
    file, one of whose keys must have signed MANIFEST.json; `cpu`: check this CPU."""
    kit = Path(kit)
    manifest, problem = read_manifest(kit)
    if manifest is None:
        return [problem or f"{kit}: not a kit"]
    # Not the manifest that was built: comparing the files with it would prove nothing.
    if digest is not None:
        actual = sha256_of(kit / MANIFEST)
        if not is_digest(digest) or actual != digest.lower():
            return [
                f"{kit / MANIFEST}: sha256 {actual} is not the digest given ({digest[:64]}): "
                "not the kit that was built; install nothing from it"
            ]
    if signers is not None:
        _, problem = signer_of(kit, signers)
        if problem:
            return [problem]
    problems = []
    want_tag, want_platform = manifest.get("python_tag"), manifest.get("platform")
    if want_tag != python_tag() or want_platform != platform_name():
        problems.append(
            f"{kit / MANIFEST}: the kit is for {want_tag} on {want_platform}, this "
            f"machine runs {python_tag()} on {platform_name()} (build the kit on a "
            "machine like this one)"
        )
    llama = _llama(manifest)
    if llama is None:
        problems.append(
            f"{kit / MANIFEST}: no record of its llama.cpp build (a kit from an "
            "older annotator); build the kit again"
        )
    elif cpu and (missing := _missing_cpu_features(llama)):
        problems.append(
            f"{kit / MANIFEST}: this CPU lacks {', '.join(missing)}, which the "
            "kit's llama.cpp build needs (it would stop with 'illegal instruction'); "
            "build the kit for this CPU"
        )
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
            problems.append(
                f"{path}: {path.stat().st_size} bytes, the manifest says "
                f"{entry.get('size')} (damaged or changed)"
            )
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


def _digest_arg(text: str) -> str:
    if not is_digest(text):
        raise argparse.ArgumentTypeError("not a sha256 (64 hex digits)")
    return text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="verify.py", description="Check a field kit.")
    parser.add_argument("kit", type=Path)
    parser.add_argument(
        "--digest",
        type=_digest_arg,
        help="MANIFEST.json's sha256, as `annotator kit build` printed it",
    )
    parser.add_argument(
        "--signers",
        type=Path,
        metavar="FILE",
        help="an allowed_signers file (ssh-keygen): MANIFEST.json must be "
        "signed by one of its keys",
    )
    parser.add_argument("--marker", type=Path, metavar="VENV")
    args = parser.parse_args(argv)
    problems = check_kit(args.kit, digest=args.digest, signers=args.signers)
    for line in problems:
        print(f"kit refused: {line}", file=sys.stderr)
    if problems:
        return 1
    manifest, _ = read_manifest(args.kit)
    assert manifest is not None
    signer = signer_of(args.kit, args.signers)[0] if args.signers else None
    print(
        f"kit OK: {len(manifest['files'])} files match the manifest"
        f"{' (its sha256 is the digest given)' if args.digest else ''}"
        f"{f' (signed by {signer})' if signer else ''}; for "
        f"{python_tag()} on {platform_name()}; {llama_summary(manifest)}"
    )
    if args.marker is not None:
        write_marker(args.kit, args.marker)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
