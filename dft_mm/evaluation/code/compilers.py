"""Faster compilation with the same results: a precompiled ``bits/stdc++.h`` for g++, and many
TypeScript files type-checked in one sandboxed node process (``_tsc_batch.js``).

* C++: every MultiPL-E C++ program includes ``<bits/stdc++.h>`` (after ``<assert.h>``, which keeps
  g++ from using a PCH on its own). ``g++ -include bits/stdc++.h`` with the PCH (built once with
  ``-std=c++17`` and cached) reads the same declarations in ~0.5 s instead of ~2 s; the program's
  own includes are then no-ops. If the PCH cannot be built, or g++ rejects it, g++ silently reads
  the real header: results are unchanged either way.
* TypeScript (the npm release ``TYPESCRIPT_VERSION``, as MultiPL-E installs it from npm):
  ``tsc --target esnext FILE`` spends ~3 s loading the compiler; the batch compiler loads it once
  and gives every file its own Program with the same options and tsc's order of diagnostics, so
  diagnostics, their text and exit codes are tsc's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from dft_mm.evaluation.code.sandbox import Sandbox, Step

CACHE_ROOT = Path(os.environ.get("DFT_MM_CACHE", "/var/tmp/dft_mm_cache"))  # readable by sandbox uids
PCH_INSIDE = "/tmp/pch"
TYPESCRIPT_INSIDE = "/opt/dft_mm/typescript"
TSC_BATCH = Path(__file__).with_name("_tsc_batch.js")
TYPESCRIPT_VERSION = "5.9.3"  # scripts/setup.sh installs this npm release
PROJECT_TYPESCRIPT = Path(__file__).resolve().parents[3] / ".toolchains" / "typescript" / "node_modules" / "typescript"
TSC_TIMEOUT_S = 15.0  # per file, MultiPL-E's tsc step
MAX_TS_BATCH = 40
_pch_lock = threading.Lock()
_pch_dir: list[Path | None] = []  # memo: [] = not tried yet


def _stdcxx_header() -> str | None:
    probe = subprocess.run(["g++", "-std=c++17", "-x", "c++", "-H", "-fsyntax-only", "-"],
                           input="#include <bits/stdc++.h>\n", capture_output=True, text=True)
    return next((line.split()[-1] for line in probe.stderr.splitlines()
                 if line.startswith(". ") and line.endswith("bits/stdc++.h")), None)


def cpp_pch_dir() -> Path | None:
    """A dir with ``bits/stdc++.h.gch`` for ``g++ -std=c++17`` (built once, cached), or None
    (e.g. the cache dir is not writable): g++ then simply reads the header."""
    with _pch_lock:
        if not _pch_dir:
            try:
                _pch_dir.append(_build_pch())
            except OSError:
                _pch_dir.append(None)
        return _pch_dir[0]


def _build_pch() -> Path | None:
    header = shutil.which("g++") and _stdcxx_header()
    if not header:
        return None
    version = subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(f"{version}\0{header}\0-std=c++17".encode()).hexdigest()[:16]
    root = CACHE_ROOT / f"pch-{key}"
    gch = root / "bits" / "stdc++.h.gch"
    if gch.is_file():
        return root
    gch.parent.mkdir(parents=True, exist_ok=True)
    # The program's own `#include <bits/stdc++.h>` finds this dir first and, the PCH being used
    # up, needs the real header beside it.
    link = gch.parent / "stdc++.h"
    if not link.is_symlink():
        try:
            link.symlink_to(header)
        except FileExistsError:  # another scorer built it at the same time
            pass
    for path in (CACHE_ROOT, root, gch.parent):
        os.chmod(path, 0o755)
    with tempfile.NamedTemporaryFile(dir=gch.parent, suffix=".tmp", delete=False) as tmp:
        pass
    built = subprocess.run(["g++", "-std=c++17", "-x", "c++-header", header, "-o", tmp.name], capture_output=True)
    if built.returncode != 0:
        os.unlink(tmp.name)
        return None
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, gch)
    return root


def typescript_dir() -> Path | None:
    """The pinned TypeScript package: ``$DFT_MM_TYPESCRIPT``, else the project's ``.toolchains``
    (``scripts/setup.sh`` installs it there with npm); None when neither has one."""
    candidates = [os.environ.get("DFT_MM_TYPESCRIPT"), PROJECT_TYPESCRIPT]
    return next((Path(c) for c in candidates if c and (Path(c) / "lib" / "typescript.js").is_file()), None)


def typescript_version(directory: Path) -> str:
    return json.loads((directory / "package.json").read_text(encoding="utf-8"))["version"]


def _compile_batch(programs: list[str]) -> list[dict | None]:
    """One sandbox, one node process; None for files that did not finish before the timeout."""
    box = Sandbox(ro_binds={str(typescript_dir()): TYPESCRIPT_INSIDE})
    names = [f"p{i}.ts" for i in range(len(programs))]
    for name, program in zip(names, programs):
        box.write(name, program)
    box.write("tsc_batch.js", TSC_BATCH.read_bytes())
    box.write("manifest.json", json.dumps(names))
    step = Step(["node", "tsc_batch.js", f"{TYPESCRIPT_INSIDE}/lib/typescript.js", "manifest.json", "results.jsonl"],
                TSC_TIMEOUT_S + 3.0 + 1.0 * len(programs))
    files = box.run([step], collect=("results.jsonl", *(n[:-3] + ".js" for n in names)),
                    collect_max_bytes=box.limits.tmp_bytes).files
    done = {}
    for line in files.get("results.jsonl", b"").decode("utf-8", errors="ignore").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        js = files.get(record["file"][:-3] + ".js") if record["exit_code"] != 1 else None
        done[record["file"]] = {"exit_code": record["exit_code"], "stdout": record["stdout"],
                                "js": js.decode("utf-8", errors="ignore") if js is not None else None}
    return [done.get(name) for name in names]


def compile_typescript(programs: list[str]) -> list[dict]:
    """tsc results per program: ``{"exit_code", "stdout", "js"}``; exit_code -1 when tsc would have
    run out of its 15 s (a file that stalls a batch is retried alone first)."""
    results = _compile_batch(programs) if len(programs) > 1 else [None]
    for i, result in enumerate(results):
        if result is None:
            results[i] = _compile_batch([programs[i]])[0] or {"exit_code": -1, "stdout": "", "js": None}
    return results
