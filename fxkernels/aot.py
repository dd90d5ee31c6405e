"""Ahead-of-time compile check for every Triton kernel family (works without a GPU).

    python -m fxkernels.aot [--arch 80,90] [--family fcc] [--kernel NAME] [-j N] [--json PATH]
                            [--fresh-cache] [--no-launch-check]

For each registered family (a module exposing ``aot_specs() -> list[KernelSpec]``, see
``fxkernels._triton_utils``) it compiles every spec with ``triton.compile`` for ``sm_80`` and
``sm_90`` (``sm_90a``), runs the ``ptxas`` shipped in the triton wheel with ``-v`` on the produced PTX,
and prints kernel, dtype, config, arch, registers, spill stores / loads, shared memory (Triton's
dynamic shared memory plus any static ``smem``) and compile time.

If the family also exposes ``aot_launch_samples()`` (calls of its launchers on small CPU tensors), the
launches are recorded (not run), bound with Triton's own argument specialisation and checked against
the specs: every launch must be a compiled spec (and every spec should be launched by some sample).

Exit code: 0 if everything compiled without spills (and the launch check passed), 1 otherwise.
With ``TRITON_INTERPRET=1`` set, ``@triton.jit`` returns interpreter wrappers that cannot be
compiled, so the tool re-runs itself in a subprocess without that variable.

A family is registered by its entry in ``fxkernels/_families.py``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import importlib
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ._families import FAMILIES as _FAMILY_NAMES

# every family of fxkernels/_families.py with a Triton module (which exposes aot_specs())
FAMILIES: list[str] = [
    f"fxkernels.ops.{f}.triton"
    for f in _FAMILY_NAMES
    if (Path(__file__).parent / "ops" / f / "triton.py").is_file()
    or (Path(__file__).parent / "ops" / f / "triton" / "__init__.py").is_file()
]
ARCHS = (80, 90)

_INTERPRET_ENV = "TRITON_INTERPRET"


def _interpret_requested() -> bool:
    return os.environ.get(_INTERPRET_ENV, "0").lower() not in ("", "0", "false", "off", "no")


def family_short(module: str) -> str:
    """'fxkernels.ops.fcc.triton' -> 'fcc'."""
    parts = module.split(".")
    return parts[-2] if parts[-1] == "triton" and len(parts) > 1 else parts[-1]


def resolve_families(names: Sequence[str] | None = None) -> list[str]:
    if not names:
        return list(FAMILIES)
    out = []
    for n in names:
        hits = [f for f in FAMILIES if f == n or family_short(f) == n]
        if not hits:
            raise SystemExit(f"unknown family {n!r}; registered: {FAMILIES}")
        out += hits
    return out


def ptxas_path() -> str:
    import triton

    p = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not p.exists():
        raise FileNotFoundError(f"ptxas not found in the triton wheel at {p}")
    return str(p)


def sm_name(arch: int) -> str:
    return f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"


_SPECS_CACHE: dict[str, list] = {}


def load_specs(family: str) -> list:
    if family not in _SPECS_CACHE:
        _SPECS_CACHE[family] = list(importlib.import_module(family).aot_specs())
    return _SPECS_CACHE[family]


def list_kernels(families: Sequence[str] | None = None) -> list[str]:
    """Kernel names of the registered families (usable under the interpreter too)."""
    names = []
    for fam in resolve_families(families):
        for s in load_specs(fam):
            if s.name not in names:
                names.append(s.name)
    return names


_RE_REGS = re.compile(r"Used (\d+) registers")
_RE_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_RE_STACK = re.compile(r"(\d+) bytes stack frame")
_RE_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(log: str) -> dict:
    def grab(rx):
        m = rx.search(log)
        return tuple(int(g) for g in m.groups()) if m else None

    regs = grab(_RE_REGS)
    spill = grab(_RE_SPILL)
    stack = grab(_RE_STACK)
    smem = grab(_RE_SMEM)
    return {
        "regs": regs[0] if regs else None,
        "spill_stores": spill[0] if spill else None,
        "spill_loads": spill[1] if spill else None,
        "stack": stack[0] if stack else 0,
        "static_smem": smem[0] if smem else 0,
    }


def compile_one(family: str, index: int, arch: int) -> dict:
    """Compile spec ``index`` of ``family`` for ``arch``; returns one table row (never raises)."""
    row = {"family": family_short(family), "index": index, "arch": arch}
    try:
        spec = load_specs(family)[index]
    except Exception as e:  # noqa: BLE001 - reported in the table
        row["error"] = f"{type(e).__name__}: {e}"[:4000]
        return row
    return compile_spec(spec, arch, row)


# the largest shared memory one block may use (opt-in dynamic + static), per compute capability: a kernel
# above it compiles but fails to launch ("out of resources"), so the check counts it as an error
MAX_SHARED = {80: 166912, 86: 101376, 87: 166912, 89: 101376, 90: 232448}


def compile_spec(spec, arch: int, row: dict | None = None) -> dict:
    """Compile one KernelSpec for ``arch`` and run ptxas -v on it; returns (or fills) a table row: kernel,
    dtype, config, regs, spill bytes, shared memory, compile times, or ``error`` (never raises)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.runtime.jit import JITFunction

    row = {"arch": arch} if row is None else row
    try:
        row.update(
            kernel=spec.name,
            dtype=spec.dtype,
            config=spec.config,
            num_warps=spec.num_warps,
            num_stages=spec.num_stages,
        )
        if not isinstance(spec.fn, JITFunction):
            raise TypeError(
                f"{spec.name} is not a JITFunction ({type(spec.fn).__name__}); is {_INTERPRET_ENV} set?"
            )
        t0 = time.perf_counter()
        src = triton.compiler.ASTSource(spec.fn, dict(spec.signature), constexprs=dict(spec.constexprs))
        ck = triton.compile(
            src,
            target=GPUTarget("cuda", arch, 32),
            options={"num_warps": spec.num_warps, "num_stages": spec.num_stages},
        )
        row["compile_s"] = time.perf_counter() - t0
        row["shared"] = int(ck.metadata.shared)
        with tempfile.TemporaryDirectory(prefix="fxk_aot_") as tmp:
            ptx = Path(tmp) / "k.ptx"
            ptx.write_text(ck.asm["ptx"])
            cmd = [
                ptxas_path(),
                "-v",
                "--regAllocOptLevel=2",
                f"--gpu-name={sm_name(arch)}",
                str(ptx),
                "-o",
                str(Path(tmp) / "k.cubin"),
            ]
            t1 = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True)
            row["ptxas_s"] = time.perf_counter() - t1
        if res.returncode != 0:
            raise RuntimeError(f"ptxas failed ({res.returncode}): {res.stderr[-2000:]}")
        info = parse_ptxas(res.stdout + res.stderr)
        if info["regs"] is None or info["spill_stores"] is None:
            raise RuntimeError(f"could not parse ptxas output:\n{res.stdout}{res.stderr}")
        row.update(info)
        row["shared"] += info["static_smem"]
        limit = MAX_SHARED.get(arch)
        if limit is not None and row["shared"] > limit:
            raise RuntimeError(
                f"{row['shared']} B of shared memory > the {limit} B a block may use on sm_{arch}"
            )
        row["error"] = None
    except Exception as e:  # noqa: BLE001 - reported in the table
        row["error"] = f"{type(e).__name__}: {e}"[:4000]
    return row


def _compile_task(args):
    return compile_one(*args)


def run_aot(
    families: Sequence[str] | None = None,
    archs: Sequence[int] = ARCHS,
    kernels: Sequence[str] | None = None,
    jobs: int | None = None,
) -> list[dict]:
    """Compile every selected spec for every arch (in parallel); returns the table rows."""
    if _interpret_requested():
        raise RuntimeError(f"run_aot needs real JITFunctions: unset {_INTERPRET_ENV} (or use main())")
    tasks = []
    for fam in resolve_families(families):
        for i, s in enumerate(load_specs(fam)):
            if kernels and s.name not in kernels:
                continue
            for a in archs:
                tasks.append((fam, i, a))
    jobs = jobs or os.cpu_count() or 1
    if jobs <= 1 or len(tasks) <= 1:
        return [compile_one(*t) for t in tasks]
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context(method)) as ex:
        return list(ex.map(_compile_task, tasks, chunksize=1))


# --------------------------------------------------------------------------------------------------
# launch coverage


def _bind_launch(fn, args, meta, backend):
    """Triton's own specialisation of a launch: (signature, constexprs, attrs, num_warps, num_stages)."""
    from triton.runtime.jit import create_function_from_signature

    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*args, **meta)
    opts, signature, constexprs, attrs = fn._pack_args(
        backend, dict(meta), bound_args, specialization, options
    )
    names = [p.name for p in fn.params]
    constexprs = {names[k[0]]: v for k, v in constexprs.items()}
    attrs = {names[k[0]]: v for k, v in attrs.items() if v}
    return signature, constexprs, attrs, opts.num_warps, opts.num_stages


def check_launches(families: Sequence[str] | None = None) -> dict:
    """Record the launches of each family's ``aot_launch_samples()`` and match them to its specs."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    from fxkernels._triton_utils import KernelSpec, record_launches

    backend = make_backend(GPUTarget("cuda", 90, 32))
    report = {"launches": 0, "distinct": 0, "unmatched": [], "unused": [], "families": []}
    for fam in resolve_families(families):
        mod = importlib.import_module(fam)
        if not hasattr(mod, "aot_launch_samples"):
            continue
        report["families"].append(family_short(fam))
        specs = load_specs(fam)
        keys = {s.key(): s for s in specs}
        used = set()
        with record_launches() as rec:
            mod.aot_launch_samples()
        report["launches"] += len(rec)
        seen = set()
        for fn, args, meta in rec:
            sig, cx, attrs, nw, ns = _bind_launch(fn, args, meta, backend)
            probe = KernelSpec(fn, sig, cx, nw, ns, "", "")
            k = probe.key()
            if k in seen:
                continue
            seen.add(k)
            if k not in keys or attrs:
                report["unmatched"].append(
                    {
                        "kernel": probe.name,
                        "signature": sig,
                        "constexprs": {a: str(b) for a, b in cx.items()},
                        "attrs": {a: str(b) for a, b in attrs.items()},
                        "num_warps": nw,
                        "num_stages": ns,
                    }
                )
            else:
                used.add(k)
        report["distinct"] += len(seen)
        report["unused"] += [f"{s.name} {s.dtype} {s.config}" for k, s in keys.items() if k not in used]
    return report


# --------------------------------------------------------------------------------------------------
# CLI


def format_table(rows: list[dict]) -> str:
    hdr = [
        "family",
        "kernel",
        "dtype",
        "config",
        "arch",
        "regs",
        "spill st",
        "spill ld",
        "shared",
        "compile s",
        "status",
    ]
    lines = []
    for r in sorted(
        rows,
        key=lambda r: (r["family"], r.get("kernel", ""), r.get("dtype", ""), r.get("config", ""), r["arch"]),
    ):
        err = r.get("error")
        spill = (r.get("spill_stores") or 0) + (r.get("spill_loads") or 0)
        status = "ERROR" if err else ("SPILL" if spill else "ok")
        lines.append(
            [
                r["family"],
                r.get("kernel", "?"),
                r.get("dtype", "?"),
                r.get("config", "?"),
                sm_name(r["arch"]),
                str(r.get("regs", "-")),
                str(r.get("spill_stores", "-")),
                str(r.get("spill_loads", "-")),
                str(r.get("shared", "-")),
                f"{r['compile_s'] + r.get('ptxas_s', 0):.2f}" if "compile_s" in r else "-",
                status,
            ]
        )
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(hdr)]
    fmt = lambda cols: "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    out = [fmt(hdr), fmt(["-" * w for w in widths])] + [fmt(l) for l in lines]
    for r in rows:
        if r.get("error"):
            out.append(
                f"\nERROR {r['family']}[{r['index']}] {r.get('kernel', '?')} {r.get('dtype', '')} "
                f"{r.get('config', '')} sm_{r['arch']}:\n{r['error']}"
            )
    return "\n".join(out)


def summarize(rows: list[dict]) -> dict:
    errors = [r for r in rows if r.get("error")]
    spills = [r for r in rows if not r.get("error") and (r["spill_stores"] or r["spill_loads"])]
    ok = [r for r in rows if not r.get("error")]
    return {
        "compiled": len(rows),
        "errors": len(errors),
        "spills": len(spills),
        "max_regs": max((r["regs"] for r in ok), default=0),
        "max_shared": max((r["shared"] for r in ok), default=0),
        "sum_compile_s": sum(r.get("compile_s", 0) + r.get("ptxas_s", 0) for r in rows),
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m fxkernels.aot", description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default=",".join(map(str, ARCHS)), help="comma-separated, e.g. 80,90")
    ap.add_argument("--family", action="append", help="family module or short name (repeatable)")
    ap.add_argument("--kernel", action="append", help="only these kernel names (repeatable)")
    ap.add_argument("-j", "--jobs", type=int, default=None, help="worker processes (default: all cores)")
    ap.add_argument("--json", help="also write rows + summary as JSON to this path")
    ap.add_argument(
        "--fresh-cache",
        action="store_true",
        help="compile into an empty temporary TRITON_CACHE_DIR (cold timings)",
    )
    ap.add_argument("--no-launch-check", action="store_true", help="skip the launch coverage check")
    ap.add_argument("--list", action="store_true", help="list kernel names and exit")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    ns = ap.parse_args(argv)

    if _interpret_requested():  # re-run with real JITFunctions
        env = {k: v for k, v in os.environ.items() if k != _INTERPRET_ENV}
        return subprocess.call([sys.executable, "-m", "fxkernels.aot", *argv], env=env)

    if ns.list:
        print("\n".join(list_kernels(ns.family)))
        return 0
    archs = [int(a) for a in ns.arch.split(",") if a]
    tmp_cache = None
    if ns.fresh_cache:
        tmp_cache = tempfile.TemporaryDirectory(prefix="fxk_triton_cache_")
        os.environ["TRITON_CACHE_DIR"] = tmp_cache.name
        import triton  # noqa: F401  (knobs read the env lazily, but be explicit)
        from triton import knobs

        knobs.cache.dir = tmp_cache.name
    t0 = time.perf_counter()
    rows = run_aot(ns.family, archs, ns.kernel, ns.jobs)
    wall = time.perf_counter() - t0
    summary = summarize(rows)
    summary["wall_s"] = wall
    summary["jobs"] = ns.jobs or os.cpu_count()
    launch = None
    if not ns.no_launch_check and not ns.kernel:
        try:
            launch = check_launches(ns.family)
        except Exception as e:  # noqa: BLE001 - e.g. a triton upgrade changed the binder internals
            launch = {
                "launches": 0,
                "distinct": 0,
                "unused": [],
                "families": [],
                "unmatched": [{"error": f"launch check failed: {type(e).__name__}: {e}"}],
            }
        summary["launch_check"] = {
            k: (v if isinstance(v, int) else len(v)) for k, v in launch.items() if k != "families"
        }
    if not ns.quiet:
        print(format_table(rows))
    print(
        f"\n{summary['compiled']} compiles ({len({r.get('kernel') for r in rows})} kernels, "
        f"archs {archs}) in {wall:.1f}s wall on {summary['jobs']} jobs "
        f"(sum of per-kernel compile+ptxas {summary['sum_compile_s']:.1f}s); "
        f"errors {summary['errors']}, spills {summary['spills']}, max regs {summary['max_regs']}, "
        f"max shared {summary['max_shared']} B"
    )
    bad = summary["errors"] > 0 or summary["spills"] > 0
    if launch is not None:
        print(
            f"launch check: {launch['launches']} launches, {launch['distinct']} distinct variants, "
            f"{len(launch['unmatched'])} not in the AOT specs, {len(launch['unused'])} specs never launched"
        )
        for u in launch["unmatched"]:
            print("  NOT IN AOT:", json.dumps(u))
        for u in launch["unused"]:
            print("  never launched:", u)
        bad = bad or bool(launch["unmatched"]) or bool(launch["unused"])
    if ns.json:
        Path(ns.json).write_text(
            json.dumps({"rows": rows, "summary": summary, "launch": launch}, indent=1, default=str)
        )
    if tmp_cache is not None:
        tmp_cache.cleanup()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
