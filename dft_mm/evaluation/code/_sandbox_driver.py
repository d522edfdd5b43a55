"""The sandbox's PID 1 (``python3 -I -S /opt/dft_mm/driver.py``, started by :mod:`sandbox`): runs a plan's
steps one after the other inside one bubblewrap sandbox, so compiled files survive from the
compile step to the run step on the sandbox's own size-capped tmpfs. No imports from dft_mm.

The plan arrives as JSON on stdin::

    {"files": {"p.cpp": "<base64>"}, "steps": [{"argv": [...], "timeout_s": 15, "env": {...}}],
     "nproc": 256, "max_output_bytes": 2048, "kill_output_bytes": 67108864,
     "collect": ["result.json"], "collect_max_bytes": 1048576, "scan": ["Unhandled Exception"]}

The report goes to stdout as one JSON object: ``{"steps": [{"exit_code", "timeout", "stdout",
"stderr" (base64, the first ``max_output_bytes``), "over" (output above ``kill_output_bytes``),
"markers" (the ``scan`` strings seen anywhere in stderr), "wall_s"}], "files": {name: base64}}``.

A step runs with ``RLIMIT_NPROC = nproc``, set here, after bubblewrap created the sandbox's
user namespace: the kernel then counts only this sandbox's processes against it. Exit codes are
``Popen``'s (-N when killed by signal N), as MultiPL-E records them. The plan stops after the
first step that exits non-zero (a failed compile is never run). Between steps, and at the end,
every other process in the sandbox is killed. Being PID 1 of the sandbox's PID namespace (and not
dumpable), this process can be neither signalled nor traced by the programs it runs.
"""

import base64
import ctypes
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import time

WORKDIR = "/tmp/work"
PR_SET_DUMPABLE = 4


def kill_others():
    """SIGKILL every other process of this PID namespace and reap them (we are its init)."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


class Scanner:
    """Which of ``markers`` appeared anywhere in a stream read in chunks."""

    def __init__(self, markers):
        self.markers = [m.encode() for m in markers]
        self.keep = max((len(m) for m in self.markers), default=1) - 1
        self.tail = b""
        self.seen = set()

    def feed(self, chunk):
        window = self.tail + chunk
        self.seen.update(m for m in self.markers if m in window)
        self.tail = window[-self.keep:] if self.keep else b""


def run_step(step, plan):
    nproc, keep, kill_at = plan["nproc"], plan["max_output_bytes"], plan["kill_output_bytes"]

    def limit():
        os.setsid()
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    start = time.monotonic()
    proc = subprocess.Popen(step["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=step["env"], preexec_fn=limit)
    kept = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    scanner = Scanner(plan["scan"])
    selector = selectors.DefaultSelector()
    for stream in kept:
        os.set_blocking(stream.fileno(), False)
        selector.register(stream, selectors.EVENT_READ)
    total, timed_out, over = 0, False, False
    deadline = start + step["timeout_s"]
    exited = False
    while selector.get_map() and not over:
        if exited:  # the program is gone: take what is already in the pipes, as MultiPL-E's last read does
            events = [(key, None) for key in list(selector.get_map().values())]
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            events = selector.select(timeout=min(remaining, 0.05))
        for key, _ in events:
            try:
                chunk = key.fileobj.read(65536)
            except BlockingIOError:
                chunk = None
            if chunk is None and not exited:
                continue
            if not chunk:
                selector.unregister(key.fileobj)
                continue
            buf = kept[key.fileobj]
            if len(buf) < keep:
                buf.extend(chunk[: keep - len(buf)])
            if key.fileobj is proc.stderr:
                scanner.feed(chunk)
            total += len(chunk)
            over = total > kill_at
        if not exited and proc.poll() is not None:
            exited = True  # drain once more, then stop: grandchildren holding the pipes are killed below
        elif exited:
            break
    if not exited and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    exit_code = proc.wait()
    selector.close()
    for stream in kept:
        stream.close()
    return {"exit_code": -1 if timed_out else exit_code, "timeout": timed_out, "over": over,
            "stdout": base64.b64encode(bytes(kept[proc.stdout])).decode(),
            "stderr": base64.b64encode(bytes(kept[proc.stderr])).decode(),
            "markers": sorted(m.decode() for m in scanner.seen), "wall_s": time.monotonic() - start}


def collect(names, max_bytes):
    files = {}
    for name in names:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as handle:
            files[name] = base64.b64encode(handle.read(max_bytes)).decode()
    return files


def main():
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    plan = json.load(sys.stdin)
    os.chdir(WORKDIR)
    for name, data in plan["files"].items():
        with open(name, "wb") as handle:
            handle.write(base64.b64decode(data))
    steps = []
    for step in plan["steps"]:
        steps.append(run_step(step, plan))
        kill_others()
        if steps[-1]["exit_code"] != 0:
            break
    report = {"steps": steps, "files": collect(plan["collect"], plan["collect_max_bytes"])}
    sys.stdout.write(json.dumps(report))
    sys.stdout.flush()


main()
