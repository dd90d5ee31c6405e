"""Build helpers of fxkernels._C (used by setup.py and the Makefile; standard library only).

    python tools/fxk_build.py nvcc 'NVCC' ARGS...  run NVCC ARGS and record its ptxas lines next to the
                                                 object (setup.py makes ninja call nvcc through this)
    python tools/fxk_build.py progress           filter a build log on stdin to one console line per compiled
                                                 file (ninja's [n/m]), setup warnings, errors and a heartbeat
    python tools/fxk_build.py ptxas-table        print the compile record (build/ptxas.json) as a table

The compile record: every nvcc call writes `<object>.ptxas` (its ptxas -v lines); after each build setup.py
merges the records of the objects of that build into build/ptxas.json (`merge_records`). An object ninja does
not recompile keeps its record, so a no-op rebuild leaves the real figures in place; tests/test_cuda_build.py
checks them.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD = os.path.join(ROOT, "build", "ptxas.json")

_ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(sm_\w+)'")
_PROPS = re.compile(r"Function properties for (\S+)")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?, (\d+) bytes smem)?")


# ------------------------------------------------------------------------------------------------ ptxas lines
def parse_ptxas(text: str) -> list[dict]:
    """Entry functions of a `ptxas -v` log: [{kernel (mangled), arch, registers, stack, spill_stores,
    spill_loads, smem}] in log order. Lines of non-entry functions are skipped."""
    out: list[dict] = []
    cur = None
    props_for = None
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = {"kernel": m.group(1), "arch": m.group(2), "registers": None, "stack": 0}
            cur.update(spill_stores=0, spill_loads=0, smem=0)
            out.append(cur)
            props_for = None
            continue
        m = _PROPS.search(line)
        if m:
            props_for = m.group(1)
            continue
        m = _SPILL.search(line)
        if m and cur is not None and props_for in (None, cur["kernel"]):
            cur["stack"], cur["spill_stores"], cur["spill_loads"] = (int(g) for g in m.groups())
            continue
        m = _USED.search(line)
        if m and cur is not None and cur["registers"] is None:
            cur["registers"] = int(m.group(1))
            cur["smem"] = int(m.group(2) or 0)
    return out


def _is_ptxas_line(line: str) -> bool:
    return "ptxas" in line or bool(_SPILL.search(line))


def run_nvcc(inner: str, args: list[str]) -> int:
    """Run nvcc (`inner`, a command string) with args, passing its output through; on success write its ptxas
    lines to `<object>.ptxas` (object = the argument after -o)."""
    cmd = shlex.split(inner) + args
    obj = args[args.index("-o") + 1] if "-o" in args[:-1] else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    kept = []
    assert proc.stdout is not None
    for raw in proc.stdout:
        sys.stdout.buffer.write(raw)
        line = raw.decode("utf-8", "replace")
        if _is_ptxas_line(line):
            kept.append(line.rstrip("\n"))
    sys.stdout.flush()
    rc = proc.wait()
    if obj is not None:
        record = obj + ".ptxas"
        if rc == 0:
            tmp = record + ".tmp"
            with open(tmp, "w") as f:
                f.write("\n".join(kept) + "\n")
            os.replace(tmp, record)
        elif os.path.exists(record):
            os.remove(record)
    return rc


def merge_records(cu_objects: dict[str, str], with_cuda: bool, archs: str, path: str = RECORD) -> dict:
    """Write the compile record of one build: {source: entries} from the `<object>.ptxas` files of
    cu_objects = {source: object path}; a source whose object has no record gets None."""
    record = {"cuda": with_cuda, "archs": archs, "objects": {}}
    for src, obj in sorted(cu_objects.items()):
        try:
            with open(obj + ".ptxas") as f:
                record["objects"][src] = parse_ptxas(f.read())
        except OSError:
            record["objects"][src] = None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)
    return record


def load_record(path: str = RECORD) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------ the table
_DTYPES = {"float": "fp32", "double": "fp64", "c10::Half": "fp16", "c10::BFloat16": "bf16"}


def demangle(names: list[str]) -> dict[str, str]:
    """{mangled: demangled} through c++filt (names stay mangled without it)."""
    tool = shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    try:
        out = subprocess.run(
            [tool], input="\n".join(names), capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {n: n for n in names}
    lines = out.splitlines()
    return dict(zip(names, lines)) if len(lines) == len(names) else {n: n for n in names}


def _split_top(s: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i].strip())
            start = i + 1
    parts.append(s[start:].strip())
    return [p for p in parts if p]


def short_name(demangled: str) -> tuple[str, str]:
    """'void fxk::corr::(anonymous namespace)::corr_fwd_kernel<float, float>(float const*, ...)' ->
    ('corr::corr_fwd_kernel', 'fp32'): family::name plus any non-dtype template arguments, and the dtype."""
    s = demangled
    if s.startswith("void "):
        s = s[5:]
    s = re.sub(r"\(anonymous namespace\)::", "", s)
    depth, cut = 0, len(s)
    for i, ch in enumerate(s):  # drop the parameter list: the first "(" outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            cut = i
            break
    s = s[:cut]
    if s.startswith("fxk::"):
        s = s[5:]
    lt = s.find("<")
    if lt < 0:
        return s, "-"
    name, targs = s[:lt], _split_top(s[lt + 1 : s.rfind(">")])
    dtype = next((_DTYPES[a] for a in targs if a in _DTYPES), "-")
    rest = [a for a in targs if a not in _DTYPES]
    return (name + (f"<{', '.join(rest)}>" if rest else "")), dtype


def table_lines(record: dict | None) -> list[str]:
    """The compile record as a per-kernel table: one row per (kernel, dtype), one value per arch."""
    objects = (record or {}).get("objects") or {}
    entries = [e for ents in objects.values() for e in (ents or [])]
    if not record or not record.get("cuda") or not entries:
        return ["  (no CUDA kernels built)"]
    names = demangle(sorted({e["kernel"] for e in entries}))
    archs = sorted({e["arch"] for e in entries})
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    for e in entries:
        rows.setdefault(short_name(names[e["kernel"]]), {})[e["arch"]] = e

    def per_arch(cells: dict, fn) -> str:
        return "/".join(fn(cells[a]) if a in cells else "-" for a in archs)

    head = ("kernel", "dtype", "registers", "spills (B)", "smem (B)")
    body = [
        (
            k,
            dt,
            per_arch(cells, lambda e: str(e["registers"])),
            per_arch(cells, lambda e: str(e["spill_stores"] + e["spill_loads"])),
            per_arch(cells, lambda e: str(e["smem"])),
        )
        for (k, dt), cells in sorted(rows.items())
    ]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    fmt = "  " + "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    missing = [src for src, ents in objects.items() if ents is None]
    spilling = sorted({f"{r[0]} ({r[1]})" for r, cells in rows.items() for e in cells.values()
                       if e["spill_stores"] or e["spill_loads"]})  # fmt: skip
    out = [f"  {len(rows)} kernel instances, values per arch {'/'.join(archs)}:", fmt.format(*head)]
    out += [fmt.format(*r) for r in body]
    out.append(f"  spills: {', '.join(spilling)}" if spilling else "  no kernel spills registers")
    if missing:
        out.append(f"  no compile record for {', '.join(missing)} (compiled before the record existed)")
    return out


# ------------------------------------------------------------------------------------------------ progress
_NINJA = re.compile(r"^\s*\[(\d+)/(\d+)\]\s+(.*)$")


def _describe(cmd: str) -> str:
    """The source a ninja command compiles (or what it links)."""
    toks = cmd.split()
    srcs = [t for t in toks if not t.startswith("-") and t.endswith((".cpp", ".cu", ".cc", ".c"))]
    if srcs:
        return os.path.relpath(srcs[0], ROOT) if os.path.isabs(srcs[0]) else srcs[0]
    if "-o" in toks[:-1]:
        return "link " + os.path.basename(toks[toks.index("-o") + 1])
    return cmd[:80]


def _fmt_time(s: float) -> str:
    return f"{int(s) // 60}m{int(s) % 60:02d}s"


def progress(stream=sys.stdin, out=sys.stdout, heartbeat_s: float = 60.0) -> None:
    """One console line per finished ninja edge ("[ 3/21]  1m02s  csrc/fcc/fcc_cpu.cpp"), the setup's own
    lines and errors; a line every heartbeat_s while nothing else is printed."""
    t0 = time.monotonic()
    done = total = 0
    fd = stream.fileno()
    buf = b""
    while True:
        ready, _, _ = select.select([fd], [], [], heartbeat_s)
        now = time.monotonic()
        if not ready:
            what = f"{done}/{total} files done" if total else "no file finished yet"
            print(f"         {_fmt_time(now - t0)}  ... still building ({what})", file=out, flush=True)
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            m = _NINJA.match(line)
            if m:
                done, total = int(m.group(1)), int(m.group(2))
                w = len(m.group(2))
                print(
                    f"  [{done:>{w}}/{total}]  {_fmt_time(now - t0)}  {_describe(m.group(3))}",
                    file=out,
                    flush=True,
                )
            elif "fxkernels setup" in line or "FAILED:" in line or re.search(r"\berror\b", line):
                print("  " + line.strip(), file=out, flush=True)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "nvcc":
        return run_nvcc(argv[2], argv[3:])
    if len(argv) == 2 and argv[1] == "progress":
        try:
            progress()
        except BrokenPipeError:  # the reader went away; the build log is complete without it
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if len(argv) in (2, 3) and argv[1] == "ptxas-table":
        print("\n".join(table_lines(load_record(argv[2] if len(argv) == 3 else RECORD))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
