"""The one list of kernel families: adding a family means adding its name here (and its own folders).

For each name `f`:
- `fxkernels.ops.f` is the family package; its `OPS` names the public functions exported as `fxkernels.<name>`
  and `fxkernels.ops.<name>` (the ops and their references);
- `fxkernels.nn.f` (optional) holds its modules, all of its `__all__` exported as `fxkernels.<name>` and
  `fxkernels.nn.<name>`;
- `fxkernels.ops.f.triton` (optional) exposes `aot_specs()` for `python -m fxkernels.aot`;
- `csrc/f/` holds its C++/CUDA sources (found by setup.py) with its own schema fragment.
No imports here: `fxkernels.aot` reads the list without loading the ops.
"""

FAMILIES = ("fcc", "ccc", "corr", "spectral", "attention", "dynamic_image", "compact_softmax_ce")
