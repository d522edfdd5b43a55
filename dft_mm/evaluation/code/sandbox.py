"""Run untrusted programs in a real sandbox: bubblewrap + rlimits + a dropped uid + a wall clock.

Every execution gets:

* ``bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --unshare-all --die-with-parent
  --new-session``: the whole system read-only, a private ``/tmp``, no network (its own empty
  network namespace), its own PID namespace (everything dies with the sandbox);
* a private writable work dir (``/tmp/work`` inside), created on the host, bound in, and
  removed afterwards;
* rlimits: CPU seconds, data segment (RLIMIT_DATA, which bounds malloc/mmap but, unlike
  RLIMIT_AS, leaves room for the JVM's and mono's large address-space reservations), file
  size, open files, and number of processes;
* when started as root, an unprivileged uid of its own (one of ``SANDBOX_UID_BASE`` +
  0..``UID_POOL``-1, held with an exclusive ``flock`` for the sandbox's lifetime, so concurrent
  sandboxes - in this process or any other - never share one), which makes RLIMIT_NPROC
  apply (the kernel exempts root) and keeps concurrent runs apart;
* the sandbox dies with the scorer (``PR_SET_PDEATHSIG``), so a killed scorer leaves nothing behind;
* a wall-clock timeout that kills the whole process group, and stdout/stderr capped: the
  first ``max_output_bytes`` are kept, the rest drained and discarded, and more than
  ``kill_output_bytes`` in total kills the program.

Example::

    with Sandbox() as box:
        box.write("main.py", "print(1)")
        result = box.run(["python3", "main.py"], timeout_s=5)
        assert result.stdout == "1\\n"
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import fcntl
import os
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from dft_mm.errors import UserError

SANDBOX_UID_BASE = 61000
UID_POOL = 512
UID_LOCK_DIR = Path(tempfile.gettempdir()) / "dft_mm_sandbox_uids"
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_PR_SET_PDEATHSIG = 1
INSIDE_WORKDIR = "/tmp/work"
SETUP_ATTEMPTS = 20


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed process (wall clock is passed to ``Sandbox.run``)."""

    cpu_s: int = 60
    data_bytes: int = 4 << 30
    file_bytes: int = 256 << 20
    nproc: int = 256
    nofile: int = 1024
    max_output_bytes: int = 2048  # kept (MultiPL-E keeps 2048 bytes per stream)
    kill_output_bytes: int = 64 << 20  # total output that kills the program


@dataclasses.dataclass
class ExecResult:
    """What one sandboxed command did. ``exit_code`` is -1 on timeout (MultiPL-E's convention);
    a negative value ``-N`` otherwise means killed by signal N."""

    timeout: bool
    exit_code: int
    stdout: str
    stderr: str
    output_limit_exceeded: bool = False
    wall_s: float = 0.0


def check_bwrap() -> str:
    """Path of ``bwrap``, or a UserError telling how to install it."""
    path = shutil.which("bwrap")
    if path is None:
        raise UserError("bubblewrap (`bwrap`) is not installed; code execution needs it as its sandbox. "
                        "Install it with `sudo apt-get install bubblewrap` or run scripts/install-toolchains.sh.")
    return path


def _preexec(limits: Limits, uid: int | None):
    def apply() -> None:
        os.setsid()
        pairs = (
            (resource.RLIMIT_CPU, limits.cpu_s),
            (resource.RLIMIT_DATA, limits.data_bytes),
            (resource.RLIMIT_FSIZE, limits.file_bytes),
            (resource.RLIMIT_NOFILE, limits.nofile),
            (resource.RLIMIT_NPROC, limits.nproc),
            (resource.RLIMIT_CORE, 0),
        )
        for kind, value in pairs:
            resource.setrlimit(kind, (value, value))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it

    return apply


def _acquire_uid() -> tuple[int, int]:
    """An unprivileged uid no other live sandbox holds, and the fd of its lock (close to release)."""
    UID_LOCK_DIR.mkdir(exist_ok=True)
    os.chmod(UID_LOCK_DIR, 0o1777)
    while True:
        for uid in range(SANDBOX_UID_BASE, SANDBOX_UID_BASE + UID_POOL):
            fd = os.open(UID_LOCK_DIR / f"{uid}.lock", os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return uid, fd
            except BlockingIOError:
                os.close(fd)
        time.sleep(0.1)


class SandboxError(RuntimeError):
    """The sandbox itself could not start (not something the program did); never a program result."""


def _uid_processes(uid: int, include_zombies: bool = False) -> int:
    """How many processes ``uid`` owns (live ones only, unless ``include_zombies``)."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        count += include_zombies or state != b"Z"
    return count


def _wait_uid_drained(uid: int, timeout_s: float = 30.0) -> None:
    """Block until a previous run's processes on this uid have exited (a killed fork bomb takes a
    moment to be torn down), so the next run starts with its process budget. Zombies are left to
    init to reap; if they still fill the budget, :meth:`Sandbox.run` retries the start."""
    deadline = time.monotonic() + timeout_s
    while _uid_processes(uid):
        if time.monotonic() > deadline:
            raise SandboxError(f"processes of sandbox uid {uid} did not exit within {timeout_s:.0f}s")
        time.sleep(0.05)


class Sandbox:
    """A private work dir plus a way to run commands on it inside bubblewrap.

    Files written with :meth:`write` appear in the sandbox's current directory (``/tmp/work``);
    ``ro_binds`` maps host paths to read-only paths inside (e.g. a compiler cache under /tmp).
    Started as root, the sandbox holds its own unprivileged uid while the context is open.
    """

    def __init__(self, limits: Limits | None = None, env: dict[str, str] | None = None,
                 ro_binds: dict[str, str] | None = None):
        self.bwrap = check_bwrap()
        self.ro_binds = ro_binds or {}  # host path -> path inside (read-only)
        self.limits = limits or Limits()
        self.uid: int | None = None
        self._uid_lock: int | None = None
        self.env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "HOME": INSIDE_WORKDIR, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        self.env.update(env or {})
        self.host_dir: Path | None = None

    def __enter__(self) -> "Sandbox":
        if os.geteuid() == 0:
            self.uid, self._uid_lock = _acquire_uid()
        self.host_dir = Path(tempfile.mkdtemp(prefix="dft_mm_sandbox_"))
        if self.uid is not None:
            os.chown(self.host_dir, self.uid, self.uid)
        os.chmod(self.host_dir, 0o700)
        return self

    def __exit__(self, *exc) -> None:
        if self.host_dir is not None:
            shutil.rmtree(self.host_dir, ignore_errors=True)
            self.host_dir = None
        if self._uid_lock is not None:
            os.close(self._uid_lock)
            self.uid = self._uid_lock = None

    def write(self, name: str, text: str | bytes) -> None:
        """Create ``name`` in the work dir (owned by the sandbox uid)."""
        assert self.host_dir is not None, "use Sandbox as a context manager"
        path = self.host_dir / name
        path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
        if self.uid is not None:
            os.chown(path, self.uid, self.uid)

    def read(self, name: str, max_bytes: int = 1 << 20) -> bytes | None:
        """Up to ``max_bytes`` of a file the program wrote in the work dir, or None."""
        assert self.host_dir is not None
        path = self.host_dir / name
        if not path.is_file() or path.is_symlink():
            return None
        with open(path, "rb") as handle:
            return handle.read(max_bytes)

    def argv(self, command: list[str], env: dict[str, str] | None = None) -> list[str]:
        """The full bubblewrap command line for ``command``."""
        argv = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
                "--bind", str(self.host_dir), INSIDE_WORKDIR, "--chdir", INSIDE_WORKDIR,
                "--unshare-all", "--die-with-parent", "--new-session", "--clearenv"]
        for host, inside in self.ro_binds.items():
            argv += ["--ro-bind", host, inside]
        for key, value in {**self.env, **(env or {})}.items():
            argv += ["--setenv", key, value]
        return argv + ["--", *command]

    def run(self, command: list[str], timeout_s: float, env: dict[str, str] | None = None) -> ExecResult:
        """Run ``command`` inside the sandbox; never raises for anything the program does.

        Raises :class:`SandboxError` when bubblewrap itself cannot start (``SETUP_ATTEMPTS`` times
        in a row); such a failure is never reported as the program's result.
        """
        assert self.host_dir is not None, "use Sandbox as a context manager"
        for _ in range(SETUP_ATTEMPTS):
            if self.uid is not None:
                _wait_uid_drained(self.uid)
            result = self._run_once(command, timeout_s, env)
            setup_failed = result.exit_code == 1 and result.stderr.startswith("bwrap: ") and not result.stdout
            if not setup_failed:
                return result
            time.sleep(0.5)  # e.g. a killed fork bomb's zombies still count against RLIMIT_NPROC
        raise SandboxError(f"bubblewrap could not start the sandbox: {result.stderr.strip()}")

    def _limits_for_this_user(self) -> Limits:
        """Not root (no uid of its own): RLIMIT_NPROC counts all of this user's processes, so
        the budget is what the user runs now plus ``limits.nproc``."""
        if self.uid is not None:
            return self.limits
        current = _uid_processes(os.getuid(), include_zombies=True)
        return dataclasses.replace(self.limits, nproc=current + self.limits.nproc)

    def _run_once(self, command: list[str], timeout_s: float, env: dict[str, str] | None) -> ExecResult:
        start = time.monotonic()
        proc = subprocess.Popen(self.argv(command, env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, preexec_fn=_preexec(self._limits_for_this_user(), self.uid))
        kept = {proc.stdout: bytearray(), proc.stderr: bytearray()}
        total = 0
        timed_out = over = False
        selector = selectors.DefaultSelector()
        for stream in kept:
            os.set_blocking(stream.fileno(), False)
            selector.register(stream, selectors.EVENT_READ)
        deadline = start + timeout_s
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in selector.select(timeout=min(remaining, 0.5)):
                chunk = key.fileobj.read(65536)
                if chunk is None:  # spurious wake-up on a non-blocking pipe
                    continue
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buf = kept[key.fileobj]
                if len(buf) < self.limits.max_output_bytes:
                    buf.extend(chunk[: self.limits.max_output_bytes - len(buf)])
                total += len(chunk)
            if total > self.limits.kill_output_bytes:
                over = True
                break
        if timed_out or over:
            _kill_group(proc)
        try:
            exit_code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            exit_code = proc.wait()
        _kill_group(proc)  # stragglers that detached from bwrap's pid namespace cannot exist, but be sure
        selector.close()
        for stream in kept:
            stream.close()
        return ExecResult(
            timeout=timed_out,
            exit_code=-1 if timed_out else exit_code,
            stdout=kept[proc.stdout].decode("utf-8", errors="ignore"),
            stderr=kept[proc.stderr].decode("utf-8", errors="ignore"),
            output_limit_exceeded=over,
            wall_s=time.monotonic() - start,
        )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
