"""Build script for fxkernels: one extension, ``fxkernels._C`` (CPU C++ kernels always, CUDA kernels when possible).

Environment switches (none is needed for a normal build):

* ``FXKERNELS_SKIP_CUDA_BUILD=1``  build the CPU kernels only.
* ``FXKERNELS_FORCE_CUDA=1``       build the CUDA kernels even when torch/nvcc detection says no (then a missing
                                   toolchain is an error instead of a warning).
* ``TORCH_CUDA_ARCH_LIST``         CUDA architectures (default ``8.0;9.0``). No GPU is needed to build.
* ``CUDA_HOME`` / ``CUDA_PATH``    CUDA toolkit root (default: /usr/local/cuda, else found from ``nvcc`` on PATH).
* ``MAX_JOBS``                     parallel compile jobs (default: the number of CPU cores).
* ``FXKERNELS_DEBUG=1``            -O0 -g host code and -G device code.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on", "y")


def _warn(msg: str) -> None:
    # setuptools/pip show stderr of the build backend; make the message stand out in a long log
    print(f"\n*** fxkernels setup: {msg}\n", file=sys.stderr, flush=True)
    warnings.warn(msg, stacklevel=2)


def _is_toolkit_root(path: str | None) -> bool:
    return bool(path) and os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))


def _nvcc_exec_target(path: str) -> str | None:
    """If ``path`` is a small shell wrapper (``exec /real/nvcc "$@"``), return the wrapped executable."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    text = head.decode("utf-8", "replace")
    for line in text.splitlines():
        m = re.match(r"""\s*exec\s+(?:-\S+\s+)*["']?([^"'\s]+)["']?""", line)
        if m and os.path.basename(m.group(1)).startswith("nvcc"):
            return m.group(1)
    return None


def _toolkit_root_from_nvcc(nvcc: str) -> str | None:
    seen = set()
    path = nvcc
    for _ in range(8):  # follow symlinks and wrappers, bounded
        path = os.path.realpath(path)
        if path in seen:
            break
        seen.add(path)
        # <root>/bin/nvcc: walk up from bin/ to the directory holding include/cuda_runtime.h
        d = os.path.dirname(path)
        for _ in range(3):
            if _is_toolkit_root(d):
                return d
            d = os.path.dirname(d)
        target = _nvcc_exec_target(path)
        if target is None:
            break
        path = target if os.path.isabs(target) else (shutil.which(target) or target)
    return None


def find_cuda_home() -> str | None:
    """Locate the CUDA toolkit BEFORE torch.utils.cpp_extension is imported (it reads CUDA_HOME at import)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        val = os.environ.get(var)
        if val:
            if os.path.isfile(os.path.join(val, "bin", "nvcc")):
                return val
            _warn(f"{var}={val} has no bin/nvcc; ignoring it")
    if os.path.isfile("/usr/local/cuda/bin/nvcc") and _is_toolkit_root("/usr/local/cuda"):
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    if nvcc:
        root = _toolkit_root_from_nvcc(nvcc)
        if root and os.path.isfile(os.path.join(root, "bin", "nvcc")):
            return root
        if nvcc:
            _warn(f"found nvcc at {nvcc} but could not locate its toolkit root (include/cuda_runtime.h)")
    return None


def nvcc_version(cuda_home: str) -> str | None:
    try:
        out = subprocess.check_output([os.path.join(cuda_home, "bin", "nvcc"), "--version"], text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


# ------------------------------------------------------------------------------------------------------------
# Decide CPU-only vs CPU+CUDA, with the toolkit fixed before torch.utils.cpp_extension is imported.
skip_cuda = _env_flag("FXKERNELS_SKIP_CUDA_BUILD")
force_cuda = _env_flag("FXKERNELS_FORCE_CUDA")
debug = _env_flag("FXKERNELS_DEBUG")

cuda_home = None if skip_cuda else find_cuda_home()
if cuda_home:
    os.environ["CUDA_HOME"] = cuda_home

import torch  # noqa: E402
import torch.utils.cpp_extension as cpp_ext  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

if cuda_home and cpp_ext.CUDA_HOME != cuda_home:
    # cpp_extension was imported before us (or guessed): make it use the toolkit we found
    cpp_ext.CUDA_HOME = cuda_home

with_cuda = False
cuda_ver = None
if skip_cuda:
    print("fxkernels setup: FXKERNELS_SKIP_CUDA_BUILD set, building the CPU kernels only", file=sys.stderr)
elif torch.version.cuda is None and not force_cuda:
    _warn("torch is not a CUDA build (torch.version.cuda is None): building the CPU kernels only")
elif cuda_home is None:
    if force_cuda:
        raise RuntimeError("FXKERNELS_FORCE_CUDA=1 but no CUDA toolkit (nvcc) was found; set CUDA_HOME")
    _warn("nvcc / CUDA toolkit not found (set CUDA_HOME to enable it): building the CPU kernels only")
else:
    cuda_ver = nvcc_version(cuda_home)
    torch_major = (torch.version.cuda or "").split(".")[0]
    if cuda_ver is None and not force_cuda:
        _warn(f"could not run {cuda_home}/bin/nvcc --version: building the CPU kernels only")
    elif cuda_ver and torch_major and cuda_ver.split(".")[0] != torch_major and not force_cuda:
        _warn(
            f"nvcc {cuda_ver} ({cuda_home}) does not match the CUDA major version torch was built with "
            f"({torch.version.cuda}): building the CPU kernels only (FXKERNELS_FORCE_CUDA=1 to try anyway)"
        )
    else:
        with_cuda = True

if with_cuda:
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "") if with_cuda else ""
os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))


def wheel_cuda_include_dirs() -> list[str]:
    """Headers ATen's CUDA headers need (cuBLAS, cuSPARSE, ...) that a bare toolkit may lack: the torch wheel's
    ``nvidia/*/include`` pip packages. Searched after the toolkit's own include dir."""
    dirs: list[str] = []
    try:
        import nvidia  # namespace package of the nvidia-* wheels

        roots = list(getattr(nvidia, "__path__", []))
    except ImportError:
        roots = []
    for root in roots:
        dirs.extend(sorted(d for d in glob.glob(os.path.join(root, "*", "include")) if os.path.isdir(d)))
    return dirs


def macro_token(s: str) -> str:
    """Arch list -> a token sequence safe for the shell, nvcc (which splits -D values at commas) and the
    preprocessor: "8.0;9.0+PTX" -> "8.0/9.0+PTX"; stringified in C++ and turned back into "8.0;9.0+PTX"."""
    parts = [p for p in re.split(r"[;\s,]+", s) if p]
    return "/".join(re.sub(r"[^0-9A-Za-z.+_]", "", p) for p in parts) or "none"


# ------------------------------------------------------------------------------------------------------------
csrc = os.path.join(ROOT, "csrc")
cpp_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
cu_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))

cxx_flags = ["-O0", "-g"] if debug else ["-O3"]
cxx_flags += ["-fopenmp", "-fno-math-errno", "-Wall", "-Wno-unknown-pragmas", "-Wno-sign-compare"]
nvcc_flags = ["-O0", "-G", "-g"] if debug else ["-O3", "-lineinfo"]
nvcc_flags += ["-Xptxas", "-v", "--expt-relaxed-constexpr", "-Xcompiler", "-fno-math-errno"]
# No --use_fast_math: the kernels must reproduce PyTorch numerics (IEEE div/sqrt, denormals).
# No -std flag: torch.utils.cpp_extension adds the standard the installed torch headers need (C++20 for
# torch >= 2.10, C++17 before); our sources are valid C++17 and C++20.
define_macros: list[tuple[str, str | None]] = []
include_dirs = [csrc]
link_args = ["-fopenmp"]

if with_cuda:
    # nvcc runs through tools/fxk_build.py, which keeps each object's ptxas -v lines as <object>.ptxas; they
    # are merged into build/ptxas.json after the build (see FxkBuildExtension)
    inner_nvcc = os.environ.get("PYTORCH_NVCC") or os.path.join(cuda_home, "bin", "nvcc")
    os.environ["PYTORCH_NVCC"] = " ".join(
        shlex.quote(a)
        for a in (sys.executable, os.path.join(ROOT, "tools", "fxk_build.py"), "nvcc", inner_nvcc)
    )
    define_macros += [("FXK_WITH_CUDA", "1"), ("FXK_CUDA_ARCHS", macro_token(arch_list))]
    include_dirs += [os.path.join(cuda_home, "include")] + wheel_cuda_include_dirs()
    ext = CUDAExtension(
        "fxkernels._C",
        sources=cpp_sources + cu_sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=link_args,
    )
    print(
        f"fxkernels setup: building CPU + CUDA kernels (toolkit {cuda_home}, nvcc {cuda_ver}, "
        f"archs {arch_list}, MAX_JOBS={os.environ['MAX_JOBS']})",
        file=sys.stderr,
    )
else:
    ext = CppExtension(
        "fxkernels._C",
        sources=cpp_sources,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_args,
    )


class FxkBuildExtension(BuildExtension):
    """BuildExtension with a stable object directory for editable installs: setuptools builds an editable
    wheel in a fresh temporary directory each time, which would make ninja recompile every file (minutes for
    the CUDA sources); keep the objects under build/ instead so rebuilds are incremental. After the build, the
    ptxas records of this build's CUDA objects are merged into build/ptxas.json (tools/fxk_build.py)."""

    def run(self):
        self.fxk_inplace = bool(self.inplace)  # setuptools clears inplace while it builds, then copies
        super().run()

    def build_extensions(self):
        if getattr(self, "editable_mode", False) or getattr(self, "fxk_inplace", False):
            tag = f"{sys.implementation.cache_tag}-{'cuda' if with_cuda else 'cpu'}"
            self.build_temp = os.path.join(ROOT, "build", f"temp.editable.{tag}")
            os.makedirs(self.build_temp, exist_ok=True)
        super().build_extensions()
        cu = [src for src in ext.sources if src.endswith(".cu")] if with_cuda else []
        objects = self.compiler.object_filenames(cu, output_dir=os.path.abspath(self.build_temp))
        sys.path.insert(0, os.path.join(ROOT, "tools"))
        try:
            import fxk_build
        finally:
            sys.path.pop(0)
        fxk_build.merge_records(dict(zip(cu, objects)), with_cuda, arch_list)


setup(
    name="fxkernels",
    version="0.1.0",
    description="Fused Triton / CUDA / CPU kernels for facial-expression-recognition models",
    packages=find_packages(include=["fxkernels*"]),
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "numpy"],
    extras_require={
        # torchvision: MViT / ResNet layouts and weights (models/, fxkernels.nn.fuse_mvit, their tests); the
        # release that matches torch 2.14
        "test": [
            "pytest",
            "pytest-benchmark",
            "pytest-xdist",
            "numpy",
            "pillow",
            "tqdm",
            "matplotlib>=3.8",
            "torchvision==0.29.*",
        ],
        "models": [
            "numpy",
            "pillow",
            "tqdm",
            "matplotlib>=3.8",
            "torchvision==0.29.*",
        ],  # datasets, CLI, figures
    },
    ext_modules=[ext],
    cmdclass={"build_ext": FxkBuildExtension.with_options(use_ninja=True)},
    zip_safe=False,
)
