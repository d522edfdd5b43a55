"""The sandbox's PID 1 (``python3 -I -S /opt/dft_mm/driver.py``, started by :mod:`sandbox`): runs a
plan's steps one after the other inside one bubblewrap sandbox, so compiled files survive from the
compile step to the run step on the sandbox's own size-capped tmpfs. No imports from dft_mm, and
only built-in modules (it starts for every program: no ``re``, ``json`` or ``subprocess``).

The plan arrives on stdin, ``marshal``-ed (written by the scorer)::

    {"files": {"p.cpp": b"..."}, "steps": [{"argv": [...], "timeout_s": 15.0, "env": {...}}],
     "nproc": 256, "max_output_bytes": 2048, "kill_output_bytes": 67108864,
     "collect": ["result.json"], "collect_max_bytes": 1048576, "scan": ["Unhandled Exception"]}

The report goes to stdout, ``marshal``-ed: ``{"steps": [{"exit_code", "timeout", "stdout", "stderr"
(bytes, the first ``max_output_bytes``), "over" (output above ``kill_output_bytes``), "markers"
(the ``scan`` strings seen anywhere in stderr), "wall_s"}], "files": {name: bytes}}``. Programs
cannot reach that pipe: their file descriptors are only the step's own pipes.

A step runs in a session of its own with ``RLIMIT_NPROC = nproc``, set here, after bubblewrap
created the sandbox's user namespace: the kernel then counts only this sandbox's processes
against it. Exit codes are as ``Popen`` gives them (-N when killed by signal N), as MultiPL-E
records them. The plan stops after the first step that exits non-zero (a failed compile is
never run). After each step every other process of the sandbox is killed. Being PID 1 of the
sandbox's PID namespace, and not dumpable, this process can be neither signalled nor traced nor
have its ``/proc`` entries opened by the programs it runs.
"""

import ctypes
import marshal
import os
import resource
import select
import signal
import sys
import time

WORKDIR = "/tmp/work"
PR_SET_DUMPABLE = 4


def kill_others():
    """SIGKILL every other process of this PID namespace and reap them (this process is its init)."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def spawn(step, nproc):
    """Fork and exec ``step`` with fresh stdout/stderr pipes; (pid, stdout fd, stderr fd)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.closerange(3, 65536)
            os.execvpe(step["argv"][0], step["argv"], step["env"])
        except BaseException as err:  # exec failed: report it like a shell would, exit 127
            os.write(2, f"{step['argv'][0]}: {err}\n".encode())
        os._exit(127)
    os.close(out_w)
    os.close(err_w)
    return pid, out_r, err_r


def run_step(step, plan):
    keep, kill_at, markers = plan["max_output_bytes"], plan["kill_output_bytes"], [m.encode() for m in plan["scan"]]
    start = time.monotonic()
    pid, out_fd, err_fd = spawn(step, plan["nproc"])
    kept = {out_fd: bytearray(), err_fd: bytearray()}
    tail, seen = b"", set()
    overlap = max((len(m) for m in markers), default=1) - 1

    def take(fd, chunk):
        """Keep the first ``keep`` bytes of each stream; look for the markers in stderr."""
        nonlocal tail
        if len(kept[fd]) < keep:
            kept[fd].extend(chunk[: keep - len(kept[fd])])
        if fd == err_fd and markers:
            window = tail + chunk
            seen.update(m for m in markers if m in window)
            tail = window[-overlap:] if overlap else b""

    poller = select.poll()
    for fd in kept:
        poller.register(fd, select.POLLIN)
    exited_fd = os.pidfd_open(pid)  # readable once the program has exited
    poller.register(exited_fd, select.POLLIN)
    open_fds, total, status, timed_out, over = set(kept), 0, None, False, False
    deadline = start + step["timeout_s"]
    while status is None and not over:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        for fd, _ in poller.poll(remaining * 1000):
            if fd == exited_fd:
                status = os.waitpid(pid, 0)[1]
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                poller.unregister(fd)
                open_fds.discard(fd)
                continue
            take(fd, chunk)
            total += len(chunk)
            over = total > kill_at
    os.close(exited_fd)
    if status is None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        status = os.waitpid(pid, 0)[1]
    else:  # the program is gone: take what its pipes still hold (MultiPL-E's last read), not more
        for fd in open_fds:
            os.set_blocking(fd, False)
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                chunk = b""
            take(fd, chunk)
    for fd in kept:
        os.close(fd)
    exit_code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return {"exit_code": -1 if timed_out else exit_code, "timeout": timed_out, "over": over,
            "stdout": bytes(kept[out_fd]), "stderr": bytes(kept[err_fd]),
            "markers": sorted(m.decode() for m in seen), "wall_s": time.monotonic() - start}


def collect(names, max_bytes):
    files = {}
    for name in names:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as handle:
            files[name] = handle.read(max_bytes)
    return files


def main():
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    plan = marshal.loads(sys.stdin.buffer.read())
    os.chdir(WORKDIR)
    for name, data in plan["files"].items():
        with open(name, "wb") as handle:
            handle.write(data)
    steps = []
    for step in plan["steps"]:
        steps.append(run_step(step, plan))
        kill_others()
        if steps[-1]["exit_code"] != 0:
            break
    sys.stdout.buffer.write(marshal.dumps({"steps": steps, "files": collect(plan["collect"], plan["collect_max_bytes"])}))
    sys.stdout.flush()


main()
