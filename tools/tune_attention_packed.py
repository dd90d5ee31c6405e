"""Find the packed attention kernels' tile table (fxkernels/ops/attention/triton_packed.PACKED).

    python tools/tune_attention_packed.py [-j N] [--kinds fwd,bwd] [--classes half,f32,f64]

For every (kernel kind, dtype class, BLOCK_L, BLOCK_D) it walks a ladder of (PAIRS, num_warps, num_stages,
BLOCK_M / BLOCK_N) from the most work per program down and keeps the first that compiles with 0 register spills for
sm_80 and sm_90 in every dtype of the class (fxkernels.aot.compile_spec), within the 99 KiB of shared memory
a block gets on sm_86 / sm_89 (so that the packed path never fails where the flash kernels run); None where
nothing fits (those shapes
run the flash kernels). A wider head never gets an earlier ladder entry than a narrower one, so each BLOCK_D
chain starts where the previous stopped, and once a BLOCK_D has nothing the wider ones are None too. Prints
the PACKED literal to paste into triton_packed.py. Needs no GPU.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import sys

import torch

# sm_86 / sm_89's shared memory per block: a packed tile above it would fail to launch there, where the
# flash kernels might not
SHARED_LIMIT = 101376
CLASS_DTYPES = {
    "half": (torch.bfloat16, torch.float16),
    "f32": (torch.float32,),
    "f64": (torch.float64,),
}


def ladder(kind: str, bl: int) -> list[tuple]:
    """Candidates (PAIRS, num_warps, num_stages, chunk), preferred first: 4 warps before 8 (more programs per
    SM), more pairs per program first, then the chunk (the forward's query rows BLOCK_M, the backward's key
    rows BLOCK_N) from the whole tile down to 16. num_stages 1: the pair loop is not pipelined anyway."""
    pairs = [p for p in (4, 2, 1) if p * bl <= 64]
    chunks = [n for n in (64, 32, 16) if n <= bl]
    return [(p, warps, 1, n) for warps in (4, 8) for p in pairs for n in chunks]


def fits(kind: str, dclass: str, bl: int, bd: int, cfg) -> tuple[bool, str]:
    from fxkernels import aot
    from fxkernels.ops.attention import triton_packed as P

    key = (kind, dclass, bl, bd)
    saved = P.PACKED[key]
    P.PACKED[key] = cfg
    try:
        regs = []
        for dtype in CLASS_DTYPES[dclass]:
            spec = P.packed_spec(kind, dtype, bl, bd)
            for arch in (80, 90):
                row = aot.compile_spec(spec, arch)
                if row.get("error"):
                    return False, f"{spec.dtype} sm_{arch}: {row['error'][:300]}"
                if row["spill_stores"] or row["spill_loads"]:
                    return False, f"{spec.dtype} sm_{arch}: {row['regs']} regs, spills {row['spill_stores']}"
                if row["shared"] > SHARED_LIMIT:
                    return False, f"{spec.dtype} sm_{arch}: {row['shared']} B of shared memory"
                regs.append(row["regs"])
        return True, f"{max(regs)} regs"
    finally:
        P.PACKED[key] = saved


def chain(kind: str, dclass: str, bl: int) -> dict:
    from fxkernels.ops.attention import triton_common as C

    cands = ladder(kind, bl)
    out = {}
    i = 0
    for bd in C.BD_CLASSES:
        while i < len(cands):
            ok, why = fits(kind, dclass, bl, bd, cands[i])
            print(f"{kind} {dclass} BL{bl} BD{bd} {cands[i]}: {'ok' if ok else 'no'} ({why})", flush=True)
            if ok:
                break
            i += 1
        out[(kind, dclass, bl, bd)] = cands[i] if i < len(cands) else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--kinds", default="fwd,bwd")
    ap.add_argument("--classes", default="half,f32,f64")
    ap.add_argument("--bl", default="16,32,64", help="BLOCK_L classes")
    ns = ap.parse_args(argv)
    from fxkernels.ops.attention import triton_packed as P

    chains = [
        (k, c, bl)
        for k in ns.kinds.split(",")
        for c in ns.classes.split(",")
        for bl in map(int, ns.bl.split(","))
    ]
    table = {}
    with cf.ProcessPoolExecutor(max_workers=ns.jobs, mp_context=mp.get_context("fork")) as ex:
        for res in ex.map(chain, *zip(*chains)):
            table.update(res)
    print("PACKED = {")
    for key in sorted(table, key=lambda k: (P.KINDS.index(k[0]), k[1], k[2], k[3])):
        print(f"    {key!r}: {table[key]!r},")
    print("}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
