"""Many ``llamafactory-cli train`` runs without paying LLaMA-Factory's imports each time.

Importing LLaMA-Factory's trainer (torch, transformers, peft, datasets, trl) takes ~13 s of CPU
on the 2-core development machine, more than a demo training itself. :func:`train` runs each
training in a fresh child forked from a *forkserver* that has imported LLaMA-Factory once; the
child runs the CLI's own entry, ``llamafactory.launcher.launch()`` on ``train CONFIG``, which
is exactly what the ``llamafactory-cli`` script does for a single-process run (the dft_mm
import hook patched LLaMA-Factory in the forkserver as it loaded). Each training is still its
own process, with its own memory, seeds and exit code; nothing carries over between them.

Every run shares one environment, fixed by the first call (the forkserver is started with it,
without ``DFT_MM_DISABLE``). As with any multiprocessing start method but fork, the calling
program's ``__main__`` must be safe to import (guarded by ``if __name__ == "__main__"``).
Example::

    code = train("run/train.yaml", "run/train.log", {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
"""

from __future__ import annotations

import multiprocessing
import os
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


def _child(config: str, log: str) -> None:
    """In the forked child: output to ``log``, then the CLI's own ``launch()`` on ``train config``."""
    handle = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(handle, 1)
    os.dup2(handle, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (the child's whole life)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.argv = ["llamafactory-cli", "train", config]
    from llamafactory import launcher

    launcher.launch()


def train(config: str | Path, log: str | Path, env: dict[str, str]) -> int:
    """Run ``llamafactory-cli train config`` (single process) with its output in ``log``; the exit code."""
    process = _context(env).Process(target=_child, args=(str(config), str(log)))
    process.start()
    process.join()
    return process.exitcode
