import os

import pytest
import torch

# Triton kernels run on CPU tensors through the interpreter when no GPU is present; this must be set
# before triton is imported (the fxkernels Triton modules import it lazily).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import fxkernels  # noqa: E402

if os.environ.get("TRITON_INTERPRET") == "1" and fxkernels.backends()["triton"]:
    # Triton 3.8's interpreter multiplies bf16 dot operands as raw uint16 bit patterns; upcast them first
    from fxkernels._triton_utils import patch_interpreter_bf16_dot

    patch_interpreter_bf16_dot()

AVAILABLE = fxkernels.backends()


def kernel_backends(device: str):
    """The non-reference backends that can run on `device` here."""
    out = []
    if device == "cpu":
        if AVAILABLE["cpu"]:
            out.append("cpu")
        if AVAILABLE["triton"] and os.environ.get("TRITON_INTERPRET") == "1":
            out.append("triton")
    else:
        out += [b for b in ("triton", "cuda") if AVAILABLE[b]]
    return out


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BACKEND_PARAMS = [pytest.param(d, b, id=f"{d}-{b}") for d in DEVICES for b in kernel_backends(d)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
