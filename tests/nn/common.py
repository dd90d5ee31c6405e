"""Checks shared by the module tests: a module on a kernel backend vs its reference-backend twin."""

import copy

import torch

from fxkernels.testing import check_module, twin


def check_vs_reference_backend(build, kind, device, backend):
    """build(kind, backend=...) -> (module, input shape): the backend's module vs its reference twin, fp64."""
    m_ref, shape = build(kind, backend="reference")
    m_ref = m_ref.to(device).double()
    x = torch.randn(shape, dtype=torch.float64, device=device)
    check_module(twin(m_ref, backend), m_ref, x)


def check_compile_fullgraph(build, kind):
    m, shape = build(kind)  # backend="auto": the CPU kernels when built, else the reference
    torch._dynamo.reset()
    # compile a copy: with shared parameters both backwards would accumulate into the same .grad tensors and
    # the gradient comparison could not fail
    check_module(torch.compile(copy.deepcopy(m), fullgraph=True), m, torch.randn(shape))
