"""Find the attention Triton kernels' tile table (fxkernels/ops/attention/triton_common.BLOCKS).

    python tools/tune_attention_blocks.py [-j N] [--kinds fwd,row,col] [--classes half,f32,f64] [--fill]

For every (kernel kind, dtype class, BLOCK_D) and bias class (none, BLOCK_R 32, BLOCK_R 128) it walks a ladder
of (BLOCK_M, BLOCK_N, num_warps, num_stages) from the largest tile down and keeps the first that compiles
with 0 register spills for sm_90 and sm_80 in every dtype of the class (fxkernels.aot.compile_spec). A wider
head or bias never gets a larger tile than a narrower one, so each chain starts where the previous stopped.
Where no whole-head tile fits, it walks CHUNK_LADDER: the same tiles with the head axis contracted in
BLOCK_DC-wide chunks (64, then 32). `--fill` keeps the current table and searches only its None entries.
Prints the BLOCKS literal to paste into triton_common.py. Needs no GPU; about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import sys

import torch

LADDER = [
    (64, 64, 4, 2),
    (64, 32, 4, 2),
    (64, 32, 4, 1),
    (32, 32, 4, 1),
    (64, 32, 8, 1),
    (32, 32, 8, 1),
    (32, 16, 8, 1),
    (16, 32, 8, 1),
    (16, 16, 8, 1),
    (16, 16, 4, 1),
]
# short: a class gets here only when even the smallest whole-head tile spilled
CHUNK_LADDER = [(bm, bn, 8, 1, dc) for dc in (64, 32) for bm, bn in ((32, 32), (16, 32), (16, 16))]
CLASS_DTYPES = {
    "half": (torch.bfloat16, torch.float16),
    "f32": (torch.float32,),
    "f64": (torch.float64,),
}


def _fits(kind: str, dclass: str, bd: int, rel_cls: int, cfg) -> tuple[bool, str]:
    from fxkernels import aot
    from fxkernels.ops.attention import triton as T
    from fxkernels.ops.attention import triton_common as C

    fn, acc = {k: (f, a) for k, f, a in T.KERNELS}[kind]
    key = (kind, dclass, bd)
    saved = C.BLOCKS[key]
    C.BLOCKS[key] = tuple(cfg for _ in range(3))
    try:
        has_rel = rel_cls > 0
        br = C.BR_CLASSES[rel_cls - 1] if has_rel else C.BR_CLASSES[0]
        for dtype in CLASS_DTYPES[dclass]:
            spec = C.spec(fn, dtype, "ieee", C.meta(kind, dtype, "ieee", bd, has_rel, br), acc)
            for arch in (90, 80):
                row = aot.compile_spec(spec, arch)
                if row.get("error"):
                    return False, f"{spec.dtype} sm_{arch}: {row['error'][:300]}"
                if row["spill_stores"] or row["spill_loads"]:
                    return False, f"{spec.dtype} sm_{arch}: {row['regs']} regs, spills {row['spill_stores']}"
        return True, f"{row['regs']} regs"
    finally:
        C.BLOCKS[key] = saved


def _chain(kind: str, dclass: str) -> dict:
    from fxkernels.ops.attention import triton_common as C

    out = {}
    start_by_rel = [0, 0, 0]
    for bd in C.BD_CLASSES:
        picks = []
        start = 0
        for rel_cls in range(3):
            i = max(start, start_by_rel[rel_cls])
            while i < len(LADDER):
                ok, why = _fits(kind, dclass, bd, rel_cls, LADDER[i])
                print(
                    f"{kind} {dclass} BD{bd} rel{rel_cls} {LADDER[i]}: {'ok' if ok else 'no'} ({why})",
                    flush=True,
                )
                if ok:
                    break
                i += 1
            if i == len(LADDER):
                picks.append(_chunked(kind, dclass, bd, rel_cls))
                i = len(LADDER) - 1
            else:
                picks.append(LADDER[i])
            start_by_rel[rel_cls] = i
            start = i
        out[(kind, dclass, bd)] = tuple(picks)
    return out


def _chunked(kind: str, dclass: str, bd: int, rel_cls: int):
    """The first CHUNK_LADDER tile (BLOCK_DC < BLOCK_D) that fits, or None."""
    for cfg in CHUNK_LADDER:
        if cfg[4] >= bd:
            continue
        ok, why = _fits(kind, dclass, bd, rel_cls, cfg)
        print(f"{kind} {dclass} BD{bd} rel{rel_cls} {cfg}: {'ok' if ok else 'no'} ({why})", flush=True)
        if ok:
            return cfg
    return None


def _fill(kind: str, dclass: str) -> dict:
    """The current BLOCKS entries of (kind, dclass) with their None bias classes searched in CHUNK_LADDER."""
    from fxkernels.ops.attention import triton_common as C

    out = {}
    for bd in C.BD_CLASSES:
        key = (kind, dclass, bd)
        out[key] = tuple(
            cfg if cfg is not None else _chunked(kind, dclass, bd, rel_cls)
            for rel_cls, cfg in enumerate(C.BLOCKS[key])
        )
    return out


POOL_LADDER = [(4096, 4), (2048, 4), (1024, 4), (512, 4), (512, 2), (256, 2), (128, 1), (64, 1)]


def _pool_chain(kind: str, dclass: str) -> dict:
    """POOL_TILES entries of one (kind, dtype class): the largest (tile elements, warps) of POOL_LADDER that
    compiles with 0 spills in every dtype of the class, with and without the norm."""
    from fxkernels import aot
    from fxkernels.ops.attention import pool_triton as P

    fn = {
        "fwd": P._attention_pool_fwd_kernel,
        "out": P._attention_pool_bwd_out_kernel,
        "in": P._attention_pool_bwd_in_kernel,
    }[kind]
    out = {}
    for norm in (None,) if kind == "in" else (False, True):
        i = 0
        for bd in P.POOL_BD_CLASSES:
            while i < len(POOL_LADDER):
                tile, warps = POOL_LADDER[i]
                cand = (max(1, tile // bd), warps)
                P.POOL_TILES[(kind, dclass, bd, norm)] = cand
                bad = None
                for spec in P.pool_specs():
                    if spec.fn is not fn or spec.constexprs["BLOCK_D"] != bd:
                        continue
                    if norm is not None and bool(spec.constexprs["NORM"]) != norm:
                        continue
                    if (
                        P.pool_dtype_class({"fp32": torch.float32, "fp64": torch.float64}.get(spec.dtype))
                        != dclass
                    ):
                        continue
                    for arch in (90, 80):
                        row = aot.compile_spec(spec, arch)
                        if row.get("error") or row["spill_stores"] or row["spill_loads"]:
                            bad = f"{spec.dtype} {spec.config} sm_{arch}: {row.get('error') or row['regs']}"
                            break
                    if bad:
                        break
                print(
                    f"pool {kind} {dclass} BD{bd} norm{norm} {cand}: {'no (' + bad + ')' if bad else 'ok'}",
                    flush=True,
                )
                if not bad:
                    break
                i += 1
            out[(kind, dclass, bd, norm)] = cand if i < len(POOL_LADDER) else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--kinds", default="fwd,row,col")
    ap.add_argument("--classes", default="half,f32,f64")
    ap.add_argument("--pool", action="store_true", help="tune attention_pool's POOL_TILES instead")
    ap.add_argument("--fill", action="store_true", help="search only the None entries of the current table")
    ns = ap.parse_args(argv)
    kinds = "fwd,out,in" if ns.pool and ns.kinds == "fwd,row,col" else ns.kinds
    chains = [(k, c) for k in kinds.split(",") for c in ns.classes.split(",")]
    table = {}
    with cf.ProcessPoolExecutor(max_workers=ns.jobs, mp_context=mp.get_context("fork")) as ex:
        fn = _pool_chain if ns.pool else (_fill if ns.fill else _chain)
        for res in ex.map(fn, *zip(*chains)):
            table.update(res)
    if ns.pool:
        print("POOL_TILES = {")
        for key in sorted(table):
            print(f"    {key!r}: {table[key]!r},")
        print("}")
        return 1 if None in table.values() else 0
    print("BLOCKS = {")
    for key in sorted(table, key=lambda k: (["fwd", "row", "col"].index(k[0]), k[1], k[2])):
        print(f"    {key!r}: {table[key]!r},")
    print("}")
    return 1 if any(None in v for v in table.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
