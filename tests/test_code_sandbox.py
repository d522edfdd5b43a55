"""Hostile programs in Python, C++ and Java must end as failures or timeouts inside the sandbox
while the host (files, network peers, process table) and concurrent results stay unaffected.

The canary lives in a world-writable directory outside /tmp (visible, read-only, inside the
sandbox), so only the sandbox - not file permissions - protects it. The network peer is a real
TCP server on the host's loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from dft_mm.errors import UserError
from dft_mm.evaluation.code.languages import check_toolchain, evaluate_program
from dft_mm.evaluation.code.sandbox import SANDBOX_UID_BASE, UID_POOL, Limits, Sandbox
from dft_mm.evaluation.code.scoring import score

RUN_TIMEOUT_S = 3.0

PYTHON = {
    "delete": "import os\nos.remove({canary!r})\n",
    "write": "open({target!r}, 'w').write('pwned')\n",
    "socket": "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'pwned')\n",
    "fork_bomb": "import os\nwhile True:\n    os.fork()\n",
    "alloc_10gb": "x = bytearray(10 * 1024 ** 3)\nx[-1] = 1\n",
    "print_1gb": "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n",
    "infinite_loop": "while True:\n    pass\n",
}
CPP_HEAD = ("#include <bits/stdc++.h>\n#include <unistd.h>\n#include <sys/socket.h>\n#include <netinet/in.h>\n"
            "#include <arpa/inet.h>\nint main() {{\n")
CPP = {
    "delete": CPP_HEAD + "  assert(std::remove(\"{canary}\") == 0);\n}}\n",
    "write": CPP_HEAD + "  FILE* f = fopen(\"{target}\", \"w\"); assert(f != NULL); fputs(\"pwned\", f); fclose(f);\n}}\n",
    "socket": CPP_HEAD + "  int s = socket(AF_INET, SOCK_STREAM, 0); assert(s >= 0);\n"
              "  sockaddr_in a{{}}; a.sin_family = AF_INET; a.sin_port = htons({port});\n"
              "  inet_pton(AF_INET, \"127.0.0.1\", &a.sin_addr);\n"
              "  assert(connect(s, (sockaddr*)&a, sizeof a) == 0); assert(write(s, \"pwned\", 5) == 5);\n}}\n",
    "fork_bomb": CPP_HEAD + "  while (true) fork();\n}}\n",
    "alloc_10gb": CPP_HEAD + "  size_t n = 10ULL << 30; char* p = (char*)malloc(n); assert(p != NULL);\n"
                  "  memset(p, 1, n); return p[n - 1] == 1 ? 0 : 1;\n}}\n",
    "print_1gb": CPP_HEAD + "  std::string chunk(1 << 20, 'x');\n  for (int i = 0; i < 1024; ++i) fwrite(chunk.data(), 1, "
                 "chunk.size(), stdout);\n}}\n",
    "infinite_loop": CPP_HEAD + "  volatile long i = 0; while (true) ++i;\n}}\n",
}
JAVA_HEAD = "import java.io.*;\nimport java.net.*;\nimport java.nio.file.*;\nclass Problem {{\n  public static void main(String[] args) throws Exception {{\n"
JAVA = {
    "delete": JAVA_HEAD + "    Files.delete(Paths.get(\"{canary}\"));\n  }}\n}}\n",
    "write": JAVA_HEAD + "    Files.write(Paths.get(\"{target}\"), \"pwned\".getBytes());\n  }}\n}}\n",
    "socket": JAVA_HEAD + "    Socket s = new Socket(\"127.0.0.1\", {port}); s.getOutputStream().write(\"pwned\".getBytes());\n  }}\n}}\n",
    "fork_bomb": JAVA_HEAD + "    while (true) {{ new ProcessBuilder(\"sleep\", \"100\").start();\n"
                 "      new Thread(() -> {{ try {{ Thread.sleep(100000); }} catch (Exception e) {{}} }}).start(); }}\n  }}\n}}\n",
    "alloc_10gb": JAVA_HEAD + "    long[] a = new long[1_350_000_000]; a[a.length - 1] = 1;\n  }}\n}}\n",
    "print_1gb": JAVA_HEAD + "    String chunk = \"x\".repeat(1 << 20);\n    for (int i = 0; i < 1024; i++) System.out.print(chunk);\n"
                 "    System.out.flush();\n  }}\n}}\n",
    "infinite_loop": JAVA_HEAD + "    long i = 0; while (true) {{ i++; }}\n  }}\n}}\n",
}
PROGRAMS = {"python": PYTHON, "cpp": CPP, "java": JAVA}


class LoopbackServer:
    """A TCP server on the host's 127.0.0.1 recording every byte it receives."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.connections = 0
        self.stop = False
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


@pytest.fixture()
def canary_dir():
    path = Path("/var/tmp") / f"dft_mm_canary_{uuid.uuid4().hex[:8]}"
    path.mkdir()
    os.chmod(path, 0o777)
    canary = path / "canary.txt"
    canary.write_text("keep me")
    os.chmod(canary, 0o666)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


@pytest.fixture()
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


def _sandbox_processes(wait_s: float = 5.0) -> list[str]:
    """Live (non-zombie) processes of the sandbox uids, polled until none are left or ``wait_s``
    passes (bwrap's inner process is reparented to init, which reaps it a moment later)."""
    deadline = time.monotonic() + wait_s
    while True:
        out = subprocess.run(["ps", "-eo", "uid=,pid=,stat=,comm="], capture_output=True, text=True).stdout
        alive = [line for line in out.splitlines()
                 if SANDBOX_UID_BASE <= int(line.split()[0]) < SANDBOX_UID_BASE + UID_POOL and not line.split()[2].startswith("Z")]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


@pytest.mark.e2e
@pytest.mark.parametrize("lang", sorted(PROGRAMS))
@pytest.mark.parametrize("attack", sorted(PYTHON))
def test_hostile_program_is_contained(lang, attack, canary_dir, server):
    try:
        check_toolchain(lang)
    except UserError as err:
        pytest.skip(str(err))
    canary, target = canary_dir / "canary.txt", canary_dir / "pwned"
    program = PROGRAMS[lang][attack].format(canary=str(canary), target=str(target), port=server.port)
    start = time.monotonic()
    result = evaluate_program(lang, program, run_timeout_s=RUN_TIMEOUT_S)
    elapsed = time.monotonic() - start

    assert result["status"] != "OK", result
    assert "bwrap:" not in result["stderr"], "the sandbox failed to start instead of the program failing"
    if attack == "infinite_loop":
        assert result["status"] == "Timeout"
    elif attack != "fork_bomb":  # a fork bomb may exhaust its budget and die, or spin until the timeout
        assert result["status"] == "Exception", result
    assert elapsed < 30, f"{attack} held the worker for {elapsed:.0f}s"
    assert canary.read_text() == "keep me"
    assert not target.exists()
    assert server.connections == 0 and server.received == b""
    assert len(result["stdout"]) <= Limits().max_output_bytes
    assert _sandbox_processes() == [], "sandboxed processes outlived their run"
    assert evaluate_program("python", "print(1)\n")["status"] == "OK", "the sandbox is unusable afterwards"


def test_sandbox_is_private_and_removed():
    with Sandbox() as box, Sandbox() as other:
        box.write("a.txt", "data")
        host_dir = box.host_dir
        result = box.run(["sh", "-c", "cat a.txt; echo; touch b.txt; echo hi > /tmp/x; ls /tmp; id -u"], 10)
        assert result.exit_code == 0, result
        lines = result.stdout.split()
        assert lines[0] == "data" and "x" in lines and "work" in lines
        if os.geteuid() == 0:  # concurrent sandboxes never share an unprivileged uid
            assert lines[-1] == str(box.uid) and box.uid != other.uid and box.uid >= SANDBOX_UID_BASE
        assert box.read("b.txt") == b""
    assert not host_dir.exists()


@pytest.mark.e2e
def test_hostile_samples_do_not_affect_other_results(multipl_e_dir, tmp_path, canary_dir):
    """A scoring run mixing correct completions with hostile ones, two workers in parallel."""
    data = multipl_e_dir / "humaneval-python.jsonl"
    good = "    return x + y\n"
    hostile = ["    import os\n    while True:\n        os.fork()\n",
               "    x = bytearray(10 * 1024 ** 3)\n    return x\n",
               "    import sys\n    while True:\n        sys.stdout.write('x' * 65536)\n",
               f"    open({str(canary_dir / 'canary.txt')!r}, 'w').write('')\n    return x + y\n"]
    samples = tmp_path / "samples.jsonl"
    with open(samples, "w") as handle:
        for completion in [good, *hostile, good + "\n"]:
            handle.write(json.dumps({"task_id": "Python/53", "completion": completion}) + "\n")
    summary = score("multipl-e-python", samples, tmp_path / "out", workers=2, data=data)
    results = json.loads((tmp_path / "out" / "results" / "Python_53.results.json").read_text())["results"]
    assert [r["status"] for r in results] == ["OK", "Exception", "Exception", "Exception", "Exception", "OK"]
    assert summary["pass@1"] == pytest.approx(2 / 6)
    assert (canary_dir / "canary.txt").read_text() == "keep me"
