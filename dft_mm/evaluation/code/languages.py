"""MultiPL-E's per-language execution rules, run inside :mod:`sandbox`.

Each evaluator reproduces ``MultiPL-E/evaluation/src/eval_<lang>.py``: the same compile and
run commands, the same timeouts (15 s per step as ``safe_subprocess.run``; 5 s for mono) and
the same status rules, so statuses line up with published MultiPL-E results:

=====  =======================================================================================
lang   rule (first match wins)
=====  =======================================================================================
py     Timeout; exit 0 -> OK; "SyntaxError" in stderr -> SyntaxError; else Exception
cpp    g++ -std=c++17 fails -> SyntaxError; run: Timeout; exit != 0 -> Exception; else OK
       (with a precompiled bits/stdc++.h, see :mod:`compilers`)
java   javac (javatuples on CLASSPATH) fails -> SyntaxError; ``java -ea``: Timeout; 0 -> OK;
       else Exception
cs     mcs/csc ``/d:DEBUG -r:System.Numerics.dll`` fails -> SyntaxError; mono (5 s):
       Timeout; "System.Diagnostics.DefaultTraceListener.Fail" or "Unhandled Exception" in
       stderr -> Exception (mono exits 0 on a failed Debug.Assert); else OK
php    "PHP Parse error" in stdout -> SyntaxError; exit != 0 -> Exception (a timeout is
       exit -1, so Exception: MultiPL-E does not test for timeouts here); else OK
ts     tsc --target esnext (npm typescript 5.9.3, batched, see :mod:`compilers`) fails -> SyntaxError;
       node: Timeout;
       0 -> OK; ERR_ASSERTION ->
       AssertionError; SyntaxError; ReferenceError; else Exception
js     node, statuses as for ts
sh     bash: Timeout; 0 -> OK; "syntax error" in stderr -> SyntaxError; else Exception
=====  =======================================================================================

A result passes only when ``status == "OK"`` and ``exit_code == 0`` (MultiPL-E's ``pass_k.py``;
e.g. mono exiting non-zero without a failure marker is ``OK`` with exit code != 0: a failure).
"""

from __future__ import annotations

import os
import shutil
from typing import Callable

from dft_mm.errors import UserError
from dft_mm.evaluation.code.compilers import (PCH_INSIDE, TYPESCRIPT_VERSION, compile_typescript, cpp_pch_dir,
                                              typescript_dir, typescript_version)
from dft_mm.evaluation.code.sandbox import ExecResult, Limits, Sandbox, Step

STEP_TIMEOUT_S = 15.0  # safe_subprocess.run's default
MONO_TIMEOUT_S = 5.0
JAVAC_FAST_START = ("-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC")
# size of the sandbox's writable /tmp (in memory); compilers and the Python harness get the default 256 MiB
TMP_BYTES = {"sh": 64 << 20, "php": 64 << 20, "js": 64 << 20}
JAVATUPLES_JARS = ("/usr/share/java/javatuples.jar", "/usr/multiple/javatuples-1.2.jar")

# language -> (executables needed, Debian packages that provide them)
TOOLCHAINS: dict[str, tuple[tuple[str, ...], str]] = {
    "python": (("python3",), "python3"),
    "cpp": (("g++",), "g++"),
    "java": (("javac", "java"), "openjdk-17-jdk-headless libjavatuples-java"),
    "cs": (("mono",), "mono-mcs mono-runtime"),
    "php": (("php",), "php-cli"),
    "ts": (("node",), "nodejs npm"),
    "js": (("node",), "nodejs"),
    "sh": (("bash",), "bash"),
}
EXTENSIONS = {"python": ".py", "cpp": ".cpp", "java": ".java", "cs": ".cs", "php": ".php", "ts": ".ts",
              "js": ".js", "sh": ".sh"}
LANGUAGE_ALIASES = {"py": "python", "javascript": "js", "bash": "sh", "c++": "cpp", "csharp": "cs",
                    "typescript": "ts"}


def canonical_language(name: str) -> str:
    """``py`` -> ``python``, ``javascript`` -> ``js``... or a UserError listing what exists."""
    lang = LANGUAGE_ALIASES.get(name.lower(), name.lower())
    if lang not in EXTENSIONS:
        raise UserError(f"unsupported MultiPL-E language {name!r}; choose one of {', '.join(EXTENSIONS)}")
    return lang


def _javatuples() -> str | None:
    return next((jar for jar in JAVATUPLES_JARS if os.path.isfile(jar)), None)


def _cs_compiler() -> str | None:
    return shutil.which("csc") or shutil.which("mcs")


def check_toolchain(language: str) -> None:
    """Raise a UserError naming the Debian package when ``language`` cannot run here."""
    tools, packages = TOOLCHAINS[language]
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if language == "cs" and _cs_compiler() is None:
        missing.append("mcs")
    if language == "java" and _javatuples() is None:
        missing.append("javatuples.jar")
    if language == "ts":
        _check_typescript()
    if missing:
        raise UserError(f"cannot run MultiPL-E {language}: {', '.join(missing)} not found. Install it with "
                        f"`sudo apt-get install {packages}` (or run scripts/install-toolchains.sh).")


def _check_typescript() -> None:
    """MultiPL-E compiles with the npm release of TypeScript: a 5.x must be installed (not Debian's 4.8)."""
    directory = typescript_dir()
    if directory is None:
        raise UserError(f"cannot run MultiPL-E ts: the TypeScript compiler (npm typescript@{TYPESCRIPT_VERSION}) is not "
                        "installed. Run scripts/setup.sh (it installs it into .toolchains/), or `npm install --prefix "
                        f"DIR typescript@{TYPESCRIPT_VERSION}` and set DFT_MM_TYPESCRIPT=DIR/node_modules/typescript.")
    version = typescript_version(directory)
    if not version.startswith("5."):
        raise UserError(f"{directory} is TypeScript {version}; MultiPL-E TS needs a 5.x release "
                        f"(typescript@{TYPESCRIPT_VERSION}, see scripts/setup.sh)")


def _result(status: str, run: ExecResult, exit_code: int | None = None) -> dict:
    return {"status": status, "exit_code": run.exit_code if exit_code is None else exit_code,
            "stdout": run.stdout, "stderr": run.stderr}


def _script(interpreter: str, syntax_marker: str) -> Callable[[Sandbox, str, float], dict]:
    """Python and bash: Timeout; exit 0 -> OK; ``syntax_marker`` in stderr -> SyntaxError; else Exception."""

    def evaluate(box: Sandbox, path: str, run_s: float) -> dict:
        run = box.run([Step([interpreter, path], run_s)]).results[0]
        if run.timeout:
            return _result("Timeout", run)
        if run.exit_code == 0:
            return _result("OK", run)
        return _result("SyntaxError" if syntax_marker in run.stderr else "Exception", run)

    return evaluate


def _compiled(box: Sandbox, build: Step, run: Step, scan: tuple[str, ...] = ()) -> tuple[ExecResult, ExecResult | None]:
    """Compile, then (when that exited 0) run, in the same sandbox; the run's result is None after a failed build."""
    results = box.run([build, run], scan=scan).results
    return results[0], (results[1] if len(results) > 1 else None)


def _compiled_run_status(run: ExecResult) -> str:
    if run.timeout:
        return "Timeout"
    return "OK" if run.exit_code == 0 else "Exception"


def _cpp(box: Sandbox, path: str, run_s: float) -> dict:
    pch = ["-include", "bits/stdc++.h", "-I", PCH_INSIDE] if PCH_INSIDE in box.ro_binds.values() else []
    build, run = _compiled(box, Step(["g++", *pch, path, "-o", "program", "-std=c++17"], STEP_TIMEOUT_S),
                           Step(["./program"], run_s))
    if run is None:
        return _result("SyntaxError", build)
    return _result(_compiled_run_status(run), run)


def _java(box: Sandbox, path: str, run_s: float) -> dict:
    jar = _javatuples()
    env = {"CLASSPATH": jar}
    # JIT/GC flags only shorten javac's own start-up; the class files are the same
    build, run = _compiled(box, Step(["javac", *JAVAC_FAST_START, "-encoding", "UTF8", "-d", "classes", path],
                                     STEP_TIMEOUT_S, env),
                           Step(["java", "-ea", "-cp", f"classes:{jar}", "Problem"], run_s, env))
    if run is None:
        return _result("SyntaxError", build)
    return _result(_compiled_run_status(run), run)


CS_FAILURE_MARKERS = ("System.Diagnostics.DefaultTraceListener.Fail", "Unhandled Exception")


def _cs(box: Sandbox, path: str, run_s: float) -> dict:
    build, run = _compiled(box, Step([_cs_compiler(), "/d:DEBUG", "-r:System.Numerics.dll", path, "/out:program.exe"],
                                     STEP_TIMEOUT_S),
                           Step(["mono", "program.exe"], min(MONO_TIMEOUT_S, run_s),
                                {"MONO_TRACE_LISTENER": "Console.Error"}), scan=CS_FAILURE_MARKERS)
    if run is None:
        return _result("SyntaxError", build)
    if run.timeout:
        return _result("Timeout", run)
    # MultiPL-E judges mono by its whole stderr (mono exits 0 on a failed Debug.Assert), so the markers
    # are looked for in all of it, not only in the 2048 bytes kept; a program killed for flooding the
    # output is a failure too.
    return _result("Exception" if run.markers or run.output_limit_exceeded else "OK", run)


def _php(box: Sandbox, path: str, run_s: float) -> dict:
    run = box.run([Step(["php", path], run_s)]).results[0]
    if "PHP Parse error" in run.stdout:
        return _result("SyntaxError", run)
    return _result("Exception" if run.exit_code != 0 else "OK", run)


def _node_status(run: ExecResult) -> str:
    if run.timeout:
        return "Timeout"
    if run.exit_code == 0:
        return "OK"
    for marker, status in (("ERR_ASSERTION", "AssertionError"), ("SyntaxError", "SyntaxError"),
                           ("ReferenceError", "ReferenceError")):
        if marker in run.stderr:
            return status
    return "Exception"


def _js(box: Sandbox, path: str, run_s: float) -> dict:
    run = box.run([Step(["node", path], run_s)]).results[0]
    return _result(_node_status(run), run)


EVALUATORS: dict[str, Callable[[Sandbox, str, float], dict]] = {
    "python": _script("python3", "SyntaxError"), "cpp": _cpp, "java": _java, "cs": _cs, "php": _php, "js": _js,
    "sh": _script("bash", "syntax error"),
}


SELF_TESTS = {
    "python": "print(1)\n",
    "cpp": "#include <bits/stdc++.h>\nint main() { assert(1 + 1 == 2); }\n",
    "java": "import org.javatuples.*;\nclass Problem { public static void main(String[] a) { Pair.with(1, 2); } }\n",
    "cs": "using System.Diagnostics;\nclass Problem { public static void Main(string[] a) { Debug.Assert(true); } }\n",
    "php": "<?php\necho 1;\n",
    "ts": "const x: number = 1;\nconsole.log(x);\n",
    "js": "console.log(1);\n",
    "sh": "true\n",
}


def self_test(language: str) -> None:
    """Run a trivially correct program of ``language`` in the sandbox; a UserError (with what it
    printed) when it does not come back OK, so a broken toolchain cannot silently score 0."""
    check_toolchain(language)
    result = evaluate_program(language, SELF_TESTS[language])
    if result["status"] != "OK":
        raise UserError(f"the {language} toolchain does not work inside the sandbox ({result['status']}, exit "
                        f"{result['exit_code']}): {(result['stderr'] or result['stdout']).strip()[:500]}")


def evaluate_program(language: str, program: str, run_timeout_s: float = STEP_TIMEOUT_S,
                     compiled: dict | None = None) -> dict:
    """Execute one MultiPL-E program (``prompt + completion + "\\n" + tests``) in fresh sandboxes.

    Returns MultiPL-E's per-program record: ``{"status", "exit_code", "stdout", "stderr"}``
    (stdout/stderr truncated to 2048 bytes each, as MultiPL-E keeps them). ``run_timeout_s``
    bounds each run step (MultiPL-E: 15 s; mono at most 5 s); compiles always get 15 s.
    For TypeScript, ``compiled`` may carry this program's result from
    :func:`compilers.compile_typescript` (batched by the scorer); otherwise it is compiled here.
    """
    if language == "ts":
        return _ts(program, run_timeout_s, compiled or compile_typescript([program])[0])
    binds = {}
    if language == "cpp" and (pch := cpp_pch_dir()) is not None:
        binds[str(pch)] = PCH_INSIDE
    box = Sandbox(limits=Limits(tmp_bytes=TMP_BYTES.get(language, Limits().tmp_bytes)), ro_binds=binds)
    name = "program" + EXTENSIONS[language]
    box.write(name, program)
    return EVALUATORS[language](box, name, run_timeout_s)


def _ts(program: str, run_s: float, compiled: dict) -> dict:
    """tsc --target esnext (batched, see :mod:`compilers`), then node on the emitted JavaScript."""
    keep = Limits().max_output_bytes
    if compiled["exit_code"] != 0:
        return {"status": "SyntaxError", "exit_code": compiled["exit_code"], "stdout": compiled["stdout"][:keep],
                "stderr": ""}
    box = Sandbox(limits=Limits(tmp_bytes=TMP_BYTES["js"]))
    box.write("program.js", compiled["js"])
    run = box.run([Step(["node", "program.js"], run_s)]).results[0]
    return _result(_node_status(run), run)
