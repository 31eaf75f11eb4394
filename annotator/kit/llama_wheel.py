"""The kit's llama-cpp-python wheel: compiled portable, checked, kept with its build record.

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
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from annotator import __version__
from annotator.errors import AnnotatorError
from annotator.kit import verify as kit_verify
from annotator.kit.tags import _wheel_tags

LLAMA = "llama-cpp-python"

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
_GPU = (
    "GGML_CUDA",
    "GGML_HIP",
    "GGML_MUSA",
    "GGML_VULKAN",
    "GGML_SYCL",
    "GGML_METAL",
    "GGML_OPENCL",
    "GGML_CANN",
    "GGML_KOMPUTE",
)
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
        features = sorted(
            {
                flag
                for option, (flags, default) in _X86.items()
                if options.get(option, default)
                for flag in flags
            }
        )
    return {
        "portable": not native,
        "gpu": any(options.get(o, False) for o in _GPU),
        "runtime_dispatch": options.get("GGML_BACKEND_DL", False),
        "cpu_features": features,
        "cmake_args": list(cmake_args),
        "machine": machine,
    }


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
    record.write_text(
        json.dumps(
            {
                "wheel": wheel.name,
                "sha256": kit_verify.sha256_of(wheel),
                "cmake_args": list(cmake_args),
                "machine": platform.machine(),
                "built_by": f"annotator {__version__} kit build",
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
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
        raise AnnotatorError(
            f"{wheel}: not for this Python and platform ({kit_verify.python_tag()} "
            f"on {kit_verify.platform_name()})"
        )
    for library in sorted(llama_wheel_libraries(wheel)):
        stem = _LIBRARY.fullmatch(library)[1]  # type: ignore[index]
        if stem.startswith("ggml-cpu-"):
            raise AnnotatorError(
                f"{wheel}: a GGML_BACKEND_DL build ({stem}): llama-cpp-python "
                "finds no CPU backend in it; the kit carries one CPU build"
            )
        if stem.startswith("ggml-") and stem not in _CPU_LIBRARIES:
            kind = (
                "a GPU build"
                if f"GGML_{stem[5:].upper()}" in _GPU
                else "a build with another backend"
            )
            raise AnnotatorError(f"{wheel}: {kind} ({stem}); the kit carries the CPU build")
    record_path = wheel.with_name(wheel.name + RECORD_SUFFIX)
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnnotatorError(
            f"{wheel}: no build record ({record_path.name}): whether it was built portable "
            "(GGML_NATIVE=OFF) or for its building machine's CPU only is unknown; leave out "
            "--llama-wheel and the kit builds one"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AnnotatorError(f"{record_path}: unreadable or not JSON ({exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("cmake_args"), list):
        raise AnnotatorError(f"{record_path}: not a build record (no cmake_args)")
    if record.get("sha256") != kit_verify.sha256_of(wheel):
        raise AnnotatorError(
            f"{wheel}: not the wheel its build record ({record_path.name}) "
            "describes (sha256 differs)"
        )
    facts = build_facts(
        [str(a) for a in record["cmake_args"]], str(record.get("machine") or platform.machine())
    )
    if not facts["portable"]:
        raise AnnotatorError(
            f"{wheel}: built with GGML_NATIVE=ON (for its building machine's "
            "CPU; another may stop with 'illegal instruction'); the kit "
            "carries a portable build"
        )
    if facts["gpu"] or facts["runtime_dispatch"]:
        raise AnnotatorError(
            f"{wheel}: {record_path.name} records a GPU or GGML_BACKEND_DL "
            "build; the kit carries one CPU build"
        )
    return facts


def _llama_wheel(
    folder: Path, version: str, given: Path | None, say: Callable[[str], None]
) -> dict:
    """Put the portable llama-cpp-python build into the wheelhouse; its manifest record."""
    if given is not None:
        wheel, facts = Path(given), check_llama_wheel(given)
        if wheel.name.split("-")[1] != version:
            raise AnnotatorError(
                f"{wheel}: {LLAMA} {wheel.name.split('-')[1]}, this environment runs {version}"
            )
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
    say(
        f"  {LLAMA} {version}: compiling the portable CPU build (GGML_NATIVE=OFF, {level}, "
        f"no GPU; minutes, once: kept for later kits in {cache})"
    )
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        built = _compile_llama(version, Path(tmp), args, say)
        wheel = cache / built.name
        os.replace(built, wheel)
    record_llama_build(wheel, args)
    return wheel, check_llama_wheel(wheel)


def _compile_llama(
    version: str, dest: Path, cmake_args: list[str], say: Callable[[str], None]
) -> Path:
    """`pip wheel` llama-cpp-python from its source with `cmake_args`; the wheel in `dest`.
    pip's cache is not used (it would hand back the earlier build, whatever CMAKE_ARGS say), and
    nothing from this shell may add compiler flags (CFLAGS=-march=native...)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CMAKE_ARGS", "CFLAGS", "CXXFLAGS", "CPPFLAGS", "FORCE_CMAKE")
        and not k.startswith(("SKBUILD_", "GGML_"))
    }
    env["CMAKE_ARGS"] = " ".join(cmake_args)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--disable-pip-version-check",
            "wheel",
            "--no-deps",
            "--no-cache-dir",
            "--no-binary",
            LLAMA,
            "--wheel-dir",
            str(dest),
            f"{LLAMA}=={version}",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise AnnotatorError(f"pip wheel {LLAMA}=={version} (the portable build) failed: {last}")
    built = sorted(dest.glob("llama_cpp_python-*.whl"))
    if len(built) != 1:
        raise AnnotatorError(f"pip wheel {LLAMA}=={version} left {len(built)} wheels")
    return built[0]
