"""Many ``llamafactory-cli train`` runs without paying LLaMA-Factory's imports each time.

Importing LLaMA-Factory's trainer (torch, transformers, peft, datasets, trl) takes ~13 s of CPU
on the 2-core development machine, more than a demo training itself. :func:`train` runs each
training in a fresh child forked from a *forkserver* that has imported LLaMA-Factory once; the
child runs the CLI's own entry, ``llamafactory.launcher.launch()`` on ``train CONFIG``, which
is exactly what the ``llamafactory-cli`` script does for a single-process run (the dft_mm
import hook patched LLaMA-Factory in the forkserver as it loaded). Each training is still its
own process, with its own memory, seeds and exit code; nothing carries over between them.
A training's exit code is its own record of it when the forkserver's report is lost (a forkserver
that died answers 255 at once while its trainings run on): :func:`train` then waits for the
training and says so.

Every run shares one environment, fixed by the first call (the forkserver is started with it,
without ``DFT_MM_DISABLE``). As with any multiprocessing start method but fork, the calling
program's ``__main__`` must be safe to import (guarded by ``if __name__ == "__main__"``).
Example::

    code = train("run/train.yaml", "run/train.log", {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
"""

from __future__ import annotations

import multiprocessing
import os
import select
import sys
import threading
from pathlib import Path

PRELOAD = ["llamafactory.launcher", "llamafactory.train.tuner"]
_server: dict = {}  # "context" and "env" of the started forkserver
_lock = threading.Lock()


def _context(env: dict[str, str]):
    """The forkserver context, set up (once) with ``env`` added to this process's environment."""
    with _lock:
        if "context" in _server:
            if _server["env"] != env:
                raise RuntimeError("dft_mm.demo.preloaded: every training must share the forkserver's environment; got another.")
            return _server["context"]
        os.environ.update(env)  # the forkserver inherits it before it imports LLaMA-Factory
        os.environ.pop("DFT_MM_DISABLE", None)
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        _server.update(context=context, env=dict(env))
        return context


def _child(config: str, log: str, status: str) -> None:
    """In the forked child: output to ``log``, then the CLI's own ``launch()`` on ``train config``;
    its exit code is also written to ``status``."""
    handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (the child's whole life)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.argv = ["llamafactory-cli", "train", config]
    from llamafactory import launcher

    code = 1
    try:
        launcher.launch()
        code = 0
    except SystemExit as stop:
        code = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
        raise
    finally:
        Path(status).write_text(f"{code}\n")


# What multiprocessing reports when the forkserver's word on a child's exit never arrived
# (popen_forkserver: the status pipe read failed, e.g. the forkserver itself died).
LOST_STATUS = 255


def train(config: str | Path, log: str | Path, env: dict[str, str]) -> int:
    """Run ``llamafactory-cli train config`` (single process) with its output in ``log``; the exit code.

    The child also writes its exit code to ``log`` + ``.exit``: when the forkserver's report of it is
    lost (exit code 255 from multiprocessing), that record is the answer, and a line says so."""
    status = Path(f"{log}.exit")
    status.unlink(missing_ok=True)
    process = _context(env).Process(target=_child, args=(str(config), str(log), str(status)))
    process.start()
    process.join()
    code = process.exitcode
    if code != LOST_STATUS:
        return code
    _wait_for_exit(process.pid)  # the report was lost, not necessarily the training: it may still run
    recorded = int(status.read_text()) if status.is_file() else None
    print(f"dft_mm.demo.preloaded: the forkserver's report of {config}'s exit was lost (multiprocessing says "
          f"{LOST_STATUS}); the training recorded " + (f"exit code {recorded} in {status}" if recorded is not None
                                                       else "none (it ended before its last line)"), file=sys.stderr)
    return LOST_STATUS if recorded is None else recorded


def _wait_for_exit(pid: int) -> None:
    """Until process ``pid`` (not this process's child: the forkserver's) has exited."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([handle], [], [])  # a pidfd turns readable when its process exits
    finally:
        os.close(handle)
