"""Run untrusted programs in a real sandbox: bubblewrap with the least the toolchains need.

What a sandboxed program sees and can do (``docs/code-eval.md``, "Safety", says the same):

* **Files**: read-only ``/usr`` and the ``/bin``, ``/sbin``, ``/lib*`` links or dirs; from
  ``/etc`` only what the toolchains read (``ETC_ENTRIES``: the alternatives links, the dynamic
  loader's cache, the JDK, mono and PHP configuration, the time zone) plus a ``passwd``/``group``
  that list only root, nobody and the sandbox user; the binds its runner asks for (``ro_binds``:
  e.g. the pinned TypeScript or the harness packages, read-only). Nothing else: no home
  directory, no ``/root``, ``/tmp`` or ``/var`` of the host, no project checkout, no model
  checkpoints, no ``/sys``. The root of the sandbox is read-only.
* **Writes**: only to ``/tmp`` (the work dir is ``/tmp/work``) and ``/dev/shm``, two private
  tmpfs capped at ``Limits.tmp_bytes`` and ``Limits.shm_bytes``: they live in memory, vanish
  with the sandbox, and a program that writes more gets ``ENOSPC``. Nothing is written on the
  host's disks.
* **Processes**: its own PID namespace (only its own processes in ``/proc``), at most
  ``Limits.nproc`` of them (RLIMIT_NPROC, set inside the sandbox's own user namespace, so it
  counts only the sandbox's processes, as root or as any user; Linux >= 5.14), no new user
  namespaces; PID 1 is the driver (``_sandbox_driver.py``), which it cannot signal or trace.
* **Network**: an empty network namespace (no interface but a down loopback).
* **Environment**: only ``PATH``, ``HOME=/tmp/work``, ``TMPDIR``, ``LANG``/``LC_ALL`` and what the
  command adds; bubblewrap itself starts with an empty environment.
* **Limits**: CPU seconds, RLIMIT_DATA (bounds malloc/mmap but, unlike RLIMIT_AS, leaves room for
  the JVM's and mono's address-space reservations), file size, open files, no core dumps; a wall
  clock per step; stdout/stderr: the first ``max_output_bytes`` kept, more than
  ``kill_output_bytes`` kills the program.
* **uid**: as root, the sandbox runs as the unprivileged uid ``SANDBOX_UID``; as any other user,
  as that user (user namespaces, no root needed), which changes nothing above.
* the sandbox dies with the scorer (``PR_SET_PDEATHSIG`` and ``--die-with-parent``).

Example::

    box = Sandbox()
    box.write("main.py", "print(1)")
    run = box.run([Step(["python3", "main.py"], timeout_s=5)])
    assert run.results[0].stdout == "1\\n"
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import marshal
import os
import platform
import resource
import selectors
import shutil
import signal
import subprocess
import time
from pathlib import Path

from dft_mm.errors import UserError

SANDBOX_UID = 61000  # as root, every sandbox runs as this unprivileged uid
INSIDE_WORKDIR = "/tmp/work"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_ENTRIES = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "java-17-openjdk", "java-21-openjdk",
               "mono", "php", "localtime", "timezone")
DRIVER = Path(__file__).with_name("_sandbox_driver.py")
DRIVER_INSIDE = "/opt/dft_mm/driver.py"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SETUP_ATTEMPTS = 5
_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_PR_SET_PDEATHSIG = 1


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox (the wall clock is per :class:`Step`)."""

    cpu_s: int = 60
    data_bytes: int = 4 << 30
    file_bytes: int = 256 << 20
    nproc: int = 256
    nofile: int = 1024
    tmp_bytes: int = 256 << 20  # /tmp (with the work dir): the only writable place, in memory
    shm_bytes: int = 16 << 20  # /dev/shm (POSIX semaphores of multiprocessing, used by EvalPlus)
    max_output_bytes: int = 2048  # kept per stream (MultiPL-E keeps 2048 bytes)
    kill_output_bytes: int = 64 << 20  # total output that kills the program


@dataclasses.dataclass(frozen=True)
class Step:
    """One command of a sandbox run; ``env`` is added to the sandbox's environment."""

    argv: list[str]
    timeout_s: float
    env: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ExecResult:
    """What one step did. ``exit_code`` is -1 on timeout (MultiPL-E's convention), -N when killed by
    signal N; ``markers``: the requested strings seen anywhere in its stderr."""

    timeout: bool
    exit_code: int
    stdout: str
    stderr: str
    output_limit_exceeded: bool = False
    wall_s: float = 0.0
    markers: tuple[str, ...] = ()


@dataclasses.dataclass
class Run:
    """The steps that ran (a plan stops after the first that exits non-zero) and the collected files."""

    results: list[ExecResult]
    files: dict[str, bytes]


class SandboxError(RuntimeError):
    """The sandbox itself could not start (not something the program did); never a program result."""


def check_bwrap() -> str:
    """Path of ``bwrap``, or a UserError telling how to install it."""
    path = shutil.which("bwrap")
    if path is None:
        raise UserError("bubblewrap (`bwrap`) is not installed; code execution needs it as its sandbox. "
                        "Install it with `sudo apt-get install bubblewrap` or run scripts/install-toolchains.sh.")
    return path


USERNS_HELP = ("bubblewrap could not create a user namespace, which the sandbox needs (no root is needed otherwise). "
               "Enable unprivileged user namespaces: `sudo sysctl -w kernel.unprivileged_userns_clone=1` (Debian "
               "kernels), `sudo sysctl -w user.max_user_namespaces=15000` (RHEL/CentOS), or on Ubuntu >= 23.10 "
               "`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (or an AppArmor profile that "
               "allows userns for /usr/bin/bwrap). bubblewrap said: ")


@functools.lru_cache(maxsize=1)
def _kernel_counts_nproc_per_userns() -> bool:
    """Linux >= 5.14 counts RLIMIT_NPROC per user namespace (so per sandbox)."""
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    if (major, minor) < (5, 14):
        print(f"sandbox: Linux {platform.release()} counts RLIMIT_NPROC per uid, not per sandbox: a fork bomb can "
              "use up the process budget of every process of this uid (Linux >= 5.14 keeps it to the sandbox)")
        return False
    return True


def _identity_files(uid: int, gid: int) -> tuple[bytes, bytes]:
    passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    group = "root:x:0:\nnogroup:x:65534:\n"
    if uid not in (0, 65534):
        passwd += f"sandbox:x:{uid}:{gid}:sandbox:{INSIDE_WORKDIR}:/bin/sh\n"
        group += f"sandbox:x:{gid}:\n"
    return passwd.encode(), group.encode()


def _memfd(name: str, data: bytes) -> int:
    """An in-memory file holding ``data``, positioned at its start (for bubblewrap's stdin or binds)."""
    fd = os.memfd_create(name, 0)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _readable_by_others(path: str) -> bool:
    """Whether an unrelated uid can reach ``path`` (o+x on every parent dir, o+r on it)."""
    current = Path(path).resolve()
    for parent in reversed(current.parents):
        if not os.stat(parent).st_mode & 0o001:
            return False
    mode = os.stat(current).st_mode
    return bool(mode & 0o004) and (not current.is_dir() or bool(mode & 0o001))


class Sandbox:
    """Files to put in the work dir, and a way to run steps on them in one fresh bubblewrap sandbox.

    ``ro_binds`` maps host paths to read-only paths inside (e.g. a compiler cache or a pinned
    package). Every :meth:`run` starts from a fresh sandbox with the written files.
    """

    def __init__(self, limits: Limits | None = None, env: dict[str, str] | None = None,
                 ro_binds: dict[str, str] | None = None):
        self.bwrap = check_bwrap()
        self.limits = limits or Limits()
        self.ro_binds = ro_binds or {}  # host path -> path inside (read-only)
        self.uid = SANDBOX_UID if os.geteuid() == 0 else None
        self.env = {"PATH": PATH, "HOME": INSIDE_WORKDIR, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        self.env.update(env or {})
        self.files: dict[str, bytes] = {}
        if self.uid is not None:
            unreadable = [host for host in self.ro_binds if not _readable_by_others(host)]
            if unreadable:
                raise UserError(f"as root, sandboxed programs run as uid {SANDBOX_UID}, which cannot read "
                                f"{', '.join(unreadable)}; run as an ordinary user, or keep the checkout and its .venv "
                                "in a world-readable place (not under /root)")

    def write(self, name: str, data: str | bytes) -> None:
        """Put ``name`` (relative) into the work dir of every following run."""
        self.files[name] = data.encode("utf-8") if isinstance(data, str) else data

    def argv(self, driver_fd: int, passwd_fd: int, group_fd: int) -> list[str]:
        """The bubblewrap command line; the driver, passwd and group come in as in-memory files."""
        limits = self.limits
        argv = [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session", "--as-pid-1",
                "--clearenv"]
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        for entry in ETC_ENTRIES:
            argv += ["--ro-bind-try", f"/etc/{entry}", f"/etc/{entry}"]
        argv += ["--ro-bind-data", str(passwd_fd), "/etc/passwd", "--ro-bind-data", str(group_fd), "/etc/group",
                 "--ro-bind-data", str(driver_fd), DRIVER_INSIDE,
                 "--proc", "/proc", "--dev", "/dev",
                 "--size", str(limits.shm_bytes), "--tmpfs", "/dev/shm",
                 "--size", str(limits.tmp_bytes), "--tmpfs", "/tmp", "--dir", INSIDE_WORKDIR]
        for host, inside in self.ro_binds.items():
            argv += ["--ro-bind", host, inside]
        argv += ["--remount-ro", "/", "--chdir", INSIDE_WORKDIR]
        for key, value in self.env.items():
            argv += ["--setenv", key, value]
        return argv + ["--", "/usr/bin/python3", "-I", "-S", DRIVER_INSIDE]

    def run(self, steps: list[Step], collect: tuple[str, ...] = (), collect_max_bytes: int = 64 << 20,
            scan: tuple[str, ...] = ()) -> Run:
        """Run ``steps`` in order in one fresh sandbox; never raises for anything the program does.

        Raises :class:`SandboxError` when bubblewrap itself cannot start (``SETUP_ATTEMPTS`` times in
        a row); such a failure is never reported as the program's result.
        """
        nproc = self.limits.nproc
        if not _kernel_counts_nproc_per_userns():
            nproc += _uid_processes(self.uid if self.uid is not None else os.getuid())
        plan = {"files": dict(self.files),
                "steps": [{"argv": s.argv, "timeout_s": s.timeout_s, "env": {**self.env, **s.env}} for s in steps],
                "nproc": nproc, "max_output_bytes": self.limits.max_output_bytes,
                "kill_output_bytes": self.limits.kill_output_bytes, "collect": list(collect),
                "collect_max_bytes": collect_max_bytes, "scan": list(scan)}
        payload = marshal.dumps(plan)
        deadline_s = sum(s.timeout_s for s in steps) + 15.0
        for _ in range(SETUP_ATTEMPTS):
            report, stderr, timed_out = self._run_once(payload, deadline_s, len(collect) * collect_max_bytes)
            if report is not None:
                return _parse(report)
            if timed_out:  # the driver enforces every step's clock; this is the whole sandbox's backstop
                return Run([ExecResult(timeout=True, exit_code=-1, stdout="", stderr="")], {})
            if not stderr.startswith("bwrap: "):
                raise SandboxError(f"the sandbox driver ended without a report: {stderr.strip()[-2000:]}")
            if "namespace" in stderr or "uid map" in stderr or "Operation not permitted" in stderr:
                raise UserError(USERNS_HELP + stderr.strip())
            time.sleep(0.5)
        raise SandboxError(f"bubblewrap could not start the sandbox: {stderr.strip()}")

    def _run_once(self, payload: bytes, deadline_s: float, collect_bytes: int) -> tuple[dict | None, str, bool]:
        """One bubblewrap run: the driver's report (None if it wrote none), bubblewrap's stderr, and
        whether the deadline passed."""
        uid = self.uid if self.uid is not None else os.getuid()
        gid = self.uid if self.uid is not None else os.getgid()
        passwd, group = _identity_files(uid, gid)
        fds = [_memfd("plan", payload), _memfd("driver", DRIVER.read_bytes()), _memfd("passwd", passwd),
               _memfd("group", group)]
        try:
            proc = subprocess.Popen(self.argv(*fds[1:]), stdin=fds[0], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, pass_fds=fds[1:], env={}, preexec_fn=self._preexec)
        finally:
            for fd in fds:
                os.close(fd)
        limit = collect_bytes + (1 << 20)  # the collected files and the kept output
        try:
            out, err, timed_out = _communicate(proc, deadline_s, limit)
        finally:
            _kill_group(proc)
        stderr = err.decode("utf-8", errors="replace")
        try:  # written by the driver only: programs have no descriptor of this pipe
            report = marshal.loads(out)
        except (EOFError, ValueError, TypeError):
            return None, stderr, timed_out
        return (report if isinstance(report, dict) else None), stderr, timed_out

    def _preexec(self) -> None:
        os.setsid()
        pairs = ((resource.RLIMIT_CPU, self.limits.cpu_s), (resource.RLIMIT_DATA, self.limits.data_bytes),
                 (resource.RLIMIT_FSIZE, self.limits.file_bytes), (resource.RLIMIT_NOFILE, self.limits.nofile),
                 (resource.RLIMIT_CORE, 0))
        for kind, value in pairs:
            resource.setrlimit(kind, (value, value))
        if self.uid is not None:
            os.setgroups([])
            os.setgid(self.uid)
            os.setuid(self.uid)
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it


def _communicate(proc: subprocess.Popen, deadline_s: float, limit: int) -> tuple[bytes, bytes, bool]:
    """stdout (up to ``limit`` bytes, then the sandbox is killed), stderr of ``proc``, and whether
    ``deadline_s`` passed first."""
    chunks = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    selector = selectors.DefaultSelector()
    for stream in chunks:
        selector.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + deadline_s
    timed_out = False
    while selector.get_map():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        for key, _ in selector.select(timeout=min(remaining, 1.0)):
            chunk = os.read(key.fileobj.fileno(), 1 << 20)
            if not chunk:
                selector.unregister(key.fileobj)
                continue
            buf = chunks[key.fileobj]
            if len(buf) < limit:
                buf.extend(chunk)
        if len(chunks[proc.stdout]) >= limit:
            break
    selector.close()
    return bytes(chunks[proc.stdout]), bytes(chunks[proc.stderr][:65536]), timed_out


def _parse(report: dict) -> Run:
    results = [ExecResult(timeout=bool(s["timeout"]), exit_code=int(s["exit_code"]),
                          stdout=bytes(s["stdout"]).decode("utf-8", errors="ignore"),
                          stderr=bytes(s["stderr"]).decode("utf-8", errors="ignore"),
                          output_limit_exceeded=bool(s["over"]), wall_s=float(s["wall_s"]),
                          markers=tuple(str(m) for m in s["markers"]))
               for s in report["steps"]]
    return Run(results, {str(name): bytes(data) for name, data in report["files"].items()})


def _uid_processes(uid: int) -> int:
    """How many processes ``uid`` owns (for kernels that count RLIMIT_NPROC per uid)."""
    count = 0
    for entry in os.scandir("/proc"):
        try:
            count += entry.name.isdigit() and entry.stat().st_uid == uid
        except FileNotFoundError:
            continue
    return count


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
