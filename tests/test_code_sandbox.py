"""Hostile programs (``fixtures/code/hostile.py``: Python, C++, Java, Bash) against the real sandbox,
once as the user running the tests (root in CI) and once as an unprivileged user created for the
test with a home of its own. Each run must leave nothing in the stored result (planted secrets in a
fake home and in the user's home, the scorer's environment, other homes' names), nothing written
outside the sandbox's capped tmpfs (the host's free disk space is watched), the canary files, the
loopback server and a sibling process of the same uid untouched, and no process behind."""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dft_mm.errors import UserError
from dft_mm.evaluation.code.languages import check_toolchain, evaluate_program
from dft_mm.evaluation.code.sandbox import ETC_ENTRIES, SANDBOX_UID, Limits, Sandbox, Step
from dft_mm.evaluation.code.scoring import score

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "code"))
import hostile  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LANGUAGES = ("python", "cpp", "java", "sh")
# refused kills leave the program running (it may end OK); a fork bomb may die at its limit or end when its
# processes cannot fork any more (bash then exits 0)
MUST_FAIL = set(hostile.ATTACKS) - {"kill_parent", "fork_bomb"}
TMP_CAP = Limits().tmp_bytes


class LoopbackServer:
    """A TCP server on the host's 127.0.0.1 recording every byte it receives."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received, self.connections, self.stop = b"", 0, False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            with conn:
                conn.settimeout(1)
                try:
                    self.received += conn.recv(100)
                except OSError:
                    pass

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


class DiskWatch:
    """The largest drop of free space on the host's filesystems while it runs (sampled every 50 ms)."""

    PATHS = ("/", "/tmp", "/var/tmp")

    def __init__(self):
        self.start = {p: shutil.disk_usage(p).free for p in self.PATHS}
        self.lowest = dict(self.start)
        self.stop = False
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        while not self.stop:
            for path in self.PATHS:
                self.lowest[path] = min(self.lowest[path], shutil.disk_usage(path).free)
            time.sleep(0.05)

    def max_drop(self) -> int:
        self.stop = True
        self.thread.join()
        return max(self.start[p] - self.lowest[p] for p in self.PATHS)


@pytest.fixture()
def planted(tmp_path):
    """A fake home with an SSH key and a Hugging Face token (world-readable: only the sandbox hides
    them), a canary dir outside /tmp, and a secret in the scorer's environment."""
    tag = secrets.token_hex(4)
    home_root = Path("/home") if os.access("/home", os.W_OK) else tmp_path
    fake_home = home_root / f"dftmm-fake-{tag}"
    key = f"-----BEGIN OPENSSH PRIVATE KEY----- {secrets.token_hex(16)}"
    token = f"hf_{secrets.token_hex(16)}"
    (fake_home / ".ssh").mkdir(parents=True)
    (fake_home / ".ssh" / "id_rsa").write_text(key)
    (fake_home / ".cache" / "huggingface").mkdir(parents=True)
    (fake_home / ".cache" / "huggingface" / "token").write_text(token)
    for path in [fake_home, *fake_home.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    canary_dir = Path("/var/tmp") / f"dft_mm_canary_{tag}"
    canary_dir.mkdir()
    os.chmod(canary_dir, 0o777)
    (canary_dir / "canary.txt").write_text("keep me")
    os.chmod(canary_dir / "canary.txt", 0o666)
    other_home = home_root / f"dftmm-other-{tag}"  # a home the programs are not told about: listing must not show it
    other_home.mkdir(mode=0o755)
    env_secret = f"env-secret-{secrets.token_hex(8)}"
    os.environ["DFT_MM_TEST_SECRET"] = env_secret
    yield {"fake_home": fake_home, "canary_dir": canary_dir, "leaks": [key, token, env_secret, other_home.name],
           "secrets": [str(fake_home / ".ssh" / "id_rsa"), str(fake_home / ".cache" / "huggingface" / "token")]}
    del os.environ["DFT_MM_TEST_SECRET"]
    shutil.rmtree(fake_home, ignore_errors=True)
    shutil.rmtree(other_home, ignore_errors=True)
    shutil.rmtree(canary_dir, ignore_errors=True)


@pytest.fixture()
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


def _params(planted: dict, server: LoopbackServer, languages, extra_secrets=()) -> dict:
    return {"repo": str(REPO), "canary": str(planted["canary_dir"] / "canary.txt"),
            "target": str(planted["canary_dir"] / "pwned"), "port": server.port, "home": str(planted["fake_home"].parent),
            "secrets": [*planted["secrets"], *extra_secrets], "languages": list(languages)}


def _languages() -> list[str]:
    usable = []
    for lang in LANGUAGES:
        try:
            check_toolchain(lang)
            usable.append(lang)
        except UserError:
            pass
    if not usable:
        pytest.skip("no toolchain for the hostile programs")
    return usable


def _sibling(uid: int | None) -> subprocess.Popen:
    """A process of the sandbox's uid outside any sandbox: ``kill -1`` inside must not reach it."""
    def drop():
        if uid is not None:
            os.setgid(uid)
            os.setuid(uid)
    return subprocess.Popen(["sleep", "600"], preexec_fn=drop)


def _processes_of(uid: int, keep: set[int]) -> list[str]:
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run(["ps", "-eo", "uid=,pid=,stat=,comm="], capture_output=True, text=True).stdout
        alive = [line for line in out.splitlines() if int(line.split()[0]) == uid and int(line.split()[1]) not in keep
                 and not line.split()[2].startswith("Z")]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _check(results: list[dict], planted: dict, server: LoopbackServer, leaks: list[str]) -> None:
    assert len(results) == len(hostile.ATTACKS) * len({r["lang"] for r in results})
    for item in results:
        lang, attack, result = item["lang"], item["attack"], item["result"]
        where = f"{lang}/{attack}: {result['status']} {result['stdout'][:300]!r} {result['stderr'][:300]!r}"
        text = result["stdout"] + result["stderr"]
        assert not any(leak in text for leak in leaks), f"leaked into the result: {where}"
        assert "bwrap:" not in result["stderr"], f"the sandbox failed to start: {where}"
        assert len(result["stdout"]) <= Limits().max_output_bytes and len(result["stderr"]) <= Limits().max_output_bytes
        assert item["seconds"] < 40, f"held the worker for {item['seconds']:.0f}s: {where}"
        if attack in MUST_FAIL:
            assert result["status"] != "OK", where
        if attack == "infinite_loop":
            assert result["status"] == "Timeout", where
        if attack == "fill_disk" and (match := re.search(r"stopped (\d+)", result["stdout"])):
            assert int(match.group(1)) <= TMP_CAP, where  # ENOSPC at the tmpfs cap
        if attack == "kill_parent" and lang != "java":  # the driver (its parent, PID 1) survived and reported
            assert "still here" in result["stdout"], where
    assert (planted["canary_dir"] / "canary.txt").read_text() == "keep me"
    assert sorted(p.name for p in planted["canary_dir"].iterdir()) == ["canary.txt"]
    assert server.connections == 0 and server.received == b""


@pytest.mark.e2e
def test_hostile_programs_as_this_user(planted, server):
    """As the user running the tests: root drops to the sandbox uid, any other user keeps its own."""
    languages = _languages()
    uid = SANDBOX_UID if os.geteuid() == 0 else os.getuid()
    sibling = _sibling(uid if os.geteuid() == 0 else None)
    watch = DiskWatch()
    try:
        results = hostile.run_all(_params(planted, server, languages))
        drop = watch.max_drop()
        assert sibling.poll() is None, "a sandboxed kill reached a process outside the sandbox"
    finally:
        sibling.kill()
        sibling.wait()
    _check(results, planted, server, planted["leaks"])
    assert drop < TMP_CAP + (512 << 20), f"the host lost {drop >> 20} MiB of free disk space"
    assert _processes_of(uid, keep={os.getpid()}) == [], "sandboxed processes outlived their run"
    assert evaluate_program("python", "print(1)\n")["status"] == "OK", "the sandbox is unusable afterwards"


@pytest.fixture()
def unprivileged_user():
    """A user created for the test, with a home holding its own SSH key; removed afterwards."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("creating a user for the test needs root and useradd")
    name = f"dftmm-sbx-{secrets.token_hex(3)}"
    created = subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], capture_output=True, text=True)
    if created.returncode != 0:
        pytest.skip(f"useradd failed: {created.stderr.strip()}")
    entry = pwd.getpwnam(name)
    home = Path(entry.pw_dir)
    key = f"-----BEGIN OPENSSH PRIVATE KEY----- user-{secrets.token_hex(16)}"
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "id_rsa").write_text(key)
    os.chmod(home / ".ssh" / "id_rsa", 0o600)
    for path in (home / ".ssh", home / ".ssh" / "id_rsa"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    yield {"name": name, "uid": entry.pw_uid, "gid": entry.pw_gid, "home": home, "key": key, "key_path": str(home / ".ssh" / "id_rsa")}
    subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
    subprocess.run(["userdel", "--remove", name], capture_output=True)


@pytest.mark.e2e
def test_hostile_programs_as_an_unprivileged_user(planted, server, unprivileged_user, tmp_path):
    """The same programs scored by an ordinary user (user namespaces, no root), with its own home."""
    languages = _languages()
    user = unprivileged_user
    exchange = Path(f"/var/tmp/dftmm-exchange-{secrets.token_hex(4)}")
    exchange.mkdir()
    os.chown(exchange, user["uid"], user["uid"])
    try:
        params = _params(planted, server, languages, extra_secrets=[user["key_path"]])
        (exchange / "params.json").write_text(json.dumps(params))
        as_user = {"user": user["uid"], "group": user["gid"], "extra_groups": []}
        sibling = subprocess.Popen(["sleep", "600"], **as_user)
        watch = DiskWatch()
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(user["home"]), "LANG": "C.UTF-8",
               "DFT_MM_TEST_SECRET": os.environ["DFT_MM_TEST_SECRET"]}
        run = subprocess.run(["/usr/bin/python3", str(Path(hostile.__file__)), str(exchange / "params.json"),
                              str(exchange / "results.json")], cwd=exchange, env=env, capture_output=True, text=True,
                             timeout=900, **as_user)
        drop = watch.max_drop()
        assert run.returncode == 0, run.stderr[-3000:]
        assert sibling.poll() is None, "a sandboxed kill reached the user's own process outside the sandbox"
        sibling.kill()
        sibling.wait()
        report = json.loads((exchange / "results.json").read_text())
    finally:
        shutil.rmtree(exchange, ignore_errors=True)
    assert report["uid"] == user["uid"] != 0
    _check(report["results"], planted, server, [*planted["leaks"], user["key"]])
    assert drop < TMP_CAP + (512 << 20), f"the host lost {drop >> 20} MiB of free disk space"
    assert _processes_of(user["uid"], keep=set()) == [], "sandboxed processes outlived their run"


def test_sandbox_sees_only_what_toolchains_need():
    box = Sandbox()
    box.write("a.txt", "data")

    def sh(command: str) -> str:
        result = box.run([Step(["sh", "-c", command], 10)]).results[0]
        assert result.exit_code == 0, result
        return result.stdout

    assert set(sh("ls /").split()) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "opt", "proc", "sbin",
                                       "tmp", "usr"}
    assert sh("ls -R /opt").split() == ["/opt:", "dft_mm", "/opt/dft_mm:", "driver.py"]
    assert set(sh("ls /etc").split()) <= {*ETC_ENTRIES, "passwd", "group"}
    assert [line.split(":")[0] for line in sh("cat /etc/passwd").splitlines()][:2] == ["root", "nobody"]
    assert int(sh("ls /proc | grep -c '^[0-9]'")) <= 4  # the driver, sh, ls, grep: no host process
    assert "Read-only file system" in sh("touch /usr/x /x 2>&1; true")
    assert set(sh("env | cut -d= -f1").split()) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PWD", "SHLVL", "_"}
    assert sh("df -B1 --output=size /tmp | tail -1").strip() == str(Limits().tmp_bytes)
    run = box.run([Step(["sh", "-c", "cat a.txt > b.txt"], 10), Step(["cat", "b.txt"], 10)], collect=("b.txt",))
    assert run.results[1].stdout == "data" and run.files == {"b.txt": b"data"}  # files survive from step to step


@pytest.mark.e2e
def test_hostile_samples_do_not_affect_other_results(multipl_e_dir, tmp_path, planted):
    """A scoring run mixing correct completions with hostile ones, two workers in parallel."""
    data = multipl_e_dir / "humaneval-python.jsonl"
    good = "    return x + y\n"
    hostile_completions = ["    import os\n    while True:\n        os.fork()\n",
                           "    x = bytearray(10 * 1024 ** 3)\n    return x\n",
                           "    import sys\n    while True:\n        sys.stdout.write('x' * 65536)\n",
                           f"    open({str(planted['canary_dir'] / 'canary.txt')!r}, 'w').write('')\n    return x + y\n"]
    samples = tmp_path / "samples.jsonl"
    with open(samples, "w") as handle:
        for completion in [good, *hostile_completions, good + "\n"]:
            handle.write(json.dumps({"task_id": "Python/53", "completion": completion}) + "\n")
    summary = score("multipl-e-python", samples, tmp_path / "out", workers=2, data=data)
    results = json.loads((tmp_path / "out" / "results" / "Python_53.results.json").read_text())["results"]
    assert [r["status"] for r in results] == ["OK", "Exception", "Exception", "Exception", "Exception", "OK"]
    assert summary["pass@1"] == pytest.approx(2 / 6)
    assert (planted["canary_dir"] / "canary.txt").read_text() == "keep me"
