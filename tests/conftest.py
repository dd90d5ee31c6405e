import os
from pathlib import Path

import pytest
import torch

# Triton kernels run on CPU tensors through the interpreter when no GPU is present; this must be set
# before triton is imported (the fxkernels Triton modules import it lazily).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fxkernels  # noqa: E402
from fxkernels.testing import backend_params, devices, kernel_backends, poison_uninitialized  # noqa: E402

if os.environ.get("TRITON_INTERPRET") == "1" and fxkernels.backends()["triton"]:
    # Triton 3.8's interpreter multiplies bf16 dot operands as raw uint16 bit patterns; upcast them first
    from fxkernels._triton_utils import patch_interpreter_bf16_dot

    patch_interpreter_bf16_dot()

# backend discovery lives in fxkernels.testing; these names stay importable from tests.conftest
AVAILABLE = fxkernels.backends()
DEVICES = devices()
BACKEND_PARAMS = backend_params()
__all__ = ["AVAILABLE", "BACKEND_PARAMS", "CPU_ISAS", "DEVICES", "kernel_backends", "usable_cpu_isas"]

CPU_ISAS = ("generic", "avx2", "avx512", "avx512-emulated")


def usable_cpu_isas() -> set:
    """The CPU ISA variants that are built and that this CPU runs; "avx512-emulated" (the AVX-512 source compiled
    for AVX2, a test hook) wherever the AVX-512 variant is built and AVX2 runs. A family without an AVX-512 build
    holds its AVX2 kernels in those slots."""
    info = fxkernels._ext.build_info()
    usable = set(info.get("cpu_isa_usable", []))
    if "avx512" in info.get("cpu_isa_variants", []) and "avx2" in usable:
        usable.add("avx512-emulated")
    return usable


@pytest.fixture(params=[pytest.param(i, id=i) for i in CPU_ISAS])
def isa(request):
    """Runs the test with the CPU kernels of one ISA variant (every family's), then restores the previous one."""
    if not fxkernels.backends()["cpu"]:
        pytest.skip("needs the compiled CPU kernels")
    if request.param not in usable_cpu_isas():
        pytest.skip(f"the {request.param} CPU kernels are not built or this CPU does not run them")
    C = fxkernels._ext._C
    prev = C._set_cpu_isa(request.param)
    yield request.param
    C._set_cpu_isa(prev)


TESTS = Path(__file__).resolve().parent
POISONED = ("ops", "nn")  # test folders whose every test runs with NaN-filled torch.empty / at::empty


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _poison_uninitialized(request):
    """Kernel tests see NaN in any output element a kernel forgets to write (fxkernels.testing)."""
    try:
        folder = Path(request.node.path).resolve().relative_to(TESTS).parts[0]
    except ValueError:
        folder = ""
    if folder in POISONED:
        with poison_uninitialized():
            yield
    else:
        yield


def _order(item) -> int:
    """0: everything quick, 1: tests/models, 2: tests marked slow (model training): the op tests come first."""
    if item.get_closest_marker("slow") is not None:
        return 2
    try:
        return int(Path(item.path).resolve().relative_to(TESTS).parts[0] == "models")
    except ValueError:
        return 0


def pytest_configure(config):
    workers = getattr(config, "workerinput", None)
    if workers is None:
        # the controller (or a plain run): one AOT directory for the whole session, inherited by xdist workers
        from tests import aot_background, file_progress

        aot_background.session_dir()
        file_progress.pytest_configure(config)
    else:
        # an xdist worker: share the cores with the other workers instead of oversubscribing them (the kernels'
        # results do not depend on the thread count; tests that need several threads set them)
        n = int(workers.get("workercount", 1))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, n)))


def pytest_collection_modifyitems(config, items):
    items.sort(key=_order)  # stable: the order within each group stays as collected


def pytest_collection_finish(session):
    """Start test_aot.py's compile in the background (tests/aot_background.py) when it will run."""
    if os.environ.get("FXKERNELS_SKIP_AOT", "0") not in ("", "0") or session.config.option.collectonly:
        return
    if any(
        Path(item.path).name == "test_aot.py" and "aot_report" in getattr(item, "fixturenames", ())
        for item in session.items
    ):
        from tests import aot_background

        aot_background.start()
