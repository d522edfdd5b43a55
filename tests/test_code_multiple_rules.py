"""MultiPL-E's rule table, row by row: for each language a program written for every rule of
``MultiPL-E/evaluation/src/eval_<lang>.py`` (compile failure, assertion failure, exit codes,
output markers, timeouts) must get MultiPL-E's status and exit code, and pass exactly when
``pass_k.py`` counts it (status OK and exit code 0). TypeScript is compiled by the pinned npm
release, and the batch compiler matches its ``tsc`` command line exactly."""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from dft_mm.errors import UserError
from dft_mm.evaluation.code.compilers import compile_typescript, typescript_dir
from dft_mm.evaluation.code.languages import check_toolchain, evaluate_program
from dft_mm.evaluation.code.scoring import multiple_passed, score

RUN_TIMEOUT_S = 3.0
LOOP = {"python": "while True:\n    pass\n", "sh": "while true; do :; done\n", "js": "while (true) {}\n",
        "ts": "while (true) {}\n"}
CS_MAIN = "using System;\nusing System.Diagnostics;\nclass Problem {{ public static void Main(string[] a) {{ {} }} }}\n"
JAVA_MAIN = "class Problem {{ public static void main(String[] a) throws Exception {{ {} }} }}\n"
CPP_MAIN = "#include <bits/stdc++.h>\nint main() {{ {} }}\n"
NODE = {  # shared by js and ts (ts adds type errors and the ES2023 library below)
    "ok": ("const assert = require('node:assert');\nassert.deepEqual([1, 2], [1, 2]);\n", "OK", 0),
    "assert": ("const assert = require('node:assert');\nassert.deepEqual([1, 2], [2, 1]);\n", "AssertionError", 1),
    "reference": ("undefinedFunction();\n", "ReferenceError", 1),
    "runtime_syntax": ("JSON.parse('{');\n", "SyntaxError", 1),
    "throw": ("throw new Error('no');\n", "Exception", 1),
    "exit3": ("process.exit(3);\n", "Exception", 3),
}
# language -> rule -> (program, MultiPL-E status, exit code); None = any exit code (compiler-specific)
RULES = {
    "python": {"ok": ("assert 1 + 1 == 2\n", "OK", 0), "assert": ("assert 1 == 2\n", "Exception", 1),
               "syntax": ("def f(:\n", "SyntaxError", 1), "exit3": ("import sys\nsys.exit(3)\n", "Exception", 3),
               "numpy": ("import numpy\nassert numpy.array([1, 2]).sum() == 3\n", "OK", 0),
               "timeout": (LOOP["python"], "Timeout", -1)},
    "sh": {"ok": ("[ 1 -eq 1 ]\n", "OK", 0), "syntax": ("if then fi\n", "SyntaxError", 2),
           "fail": ("false\n", "Exception", 1), "timeout": (LOOP["sh"], "Timeout", -1)},
    "php": {"ok": ("<?php\nassert(1 == 1);\n", "OK", 0),
            # Debian's and Ubuntu's php-cli log parse errors to stderr, so MultiPL-E's stdout test misses them
            "parse": ("<?php\nfunction f( {\n", "Exception", 255),
            "throw": ("<?php\nthrow new Exception('no');\n", "Exception", 255),
            "timeout": ("<?php\nwhile (true) {}\n", "Exception", -1)},  # eval_php.py has no Timeout status
    "cpp": {"ok": (CPP_MAIN.format("assert(1 + 1 == 2);"), "OK", 0),
            "compile": (CPP_MAIN.format("int x = ;"), "SyntaxError", 1),
            "assert": (CPP_MAIN.format("assert(1 == 2);"), "Exception", -6),  # SIGABRT, as Popen reports it
            "timeout": (CPP_MAIN.format("volatile long i = 0; while (true) ++i;"), "Timeout", -1)},
    "java": {"ok": (JAVA_MAIN.format("assert 1 + 1 == 2;"), "OK", 0),
             "compile": (JAVA_MAIN.format("int x = ;"), "SyntaxError", 1),
             "assert": (JAVA_MAIN.format("assert 1 == 2;"), "Exception", 1),
             "exit3": (JAVA_MAIN.format("System.exit(3);"), "Exception", 3),
             "timeout": (JAVA_MAIN.format("while (true) {}"), "Timeout", -1)},
    "cs": {"ok": (CS_MAIN.format("Debug.Assert(1 + 1 == 2);"), "OK", 0),
           "compile": (CS_MAIN.format("int x = ;"), "SyntaxError", 1),
           "assert": (CS_MAIN.format("Debug.Assert(1 == 2);"), "Exception", 0),  # mono exits 0 on a failed assert
           "throw": (CS_MAIN.format("throw new Exception();"), "Exception", 1),
           "exit3": (CS_MAIN.format("Environment.Exit(3);"), "OK", 3),  # no marker: OK, but pass_k fails it
           "timeout": (CS_MAIN.format("while (true) {}"), "Timeout", -1)},
    "js": {**NODE, "timeout": (LOOP["js"], "Timeout", -1)},
    "ts": {**NODE, "type": ("const x: number = 'a';\n", "SyntaxError", 2),
           "parse": ("const = 1;\n", "SyntaxError", None),
           "es2023": ("const sorted: number[] = [3, 1, 2].toSorted();\nif (sorted[0] !== 1) throw new Error();\n",
                      "OK", 0),  # ES2023 library: TypeScript 5.x (Debian's 4.8 rejects it)
           "timeout": (LOOP["ts"], "Timeout", -1)},
}
TS_DECLARATIONS = ("declare var require: any;\ndeclare var process: any;\n"
                   "declare function undefinedFunction(): void;\n")  # as MultiPL-E's TS tests declare require
RULES["ts"] = {name: (TS_DECLARATIONS + program, status, code) for name, (program, status, code) in RULES["ts"].items()}


@pytest.mark.e2e
@pytest.mark.parametrize("lang", sorted(RULES))
def test_rule_table_matches_multipl_e(lang):
    try:
        check_toolchain(lang)
    except UserError as err:
        pytest.skip(str(err))
    rules = RULES[lang]
    compiled = dict(zip(rules, compile_typescript([p for p, _, _ in rules.values()]))) if lang == "ts" else {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(evaluate_program, lang, program, RUN_TIMEOUT_S, compiled.get(name))
                   for name, (program, _, _) in rules.items()}
        results = {name: future.result() for name, future in futures.items()}
    got = {name: (r["status"], r["exit_code"] if rules[name][2] is not None else None) for name, r in results.items()}
    assert got == {name: (status, code) for name, (_, status, code) in rules.items()}, \
        {name: r["stderr"][:200] for name, r in results.items()}
    assert {name for name, r in results.items() if multiple_passed(r)} == \
        {name for name, (_, status, code) in rules.items() if status == "OK" and code == 0}


@pytest.mark.e2e
def test_score_counts_pass_k_rule_and_keeps_sampling_fields(tmp_path):
    """A C# program that exits 3 with no failure marker is OK for eval_cs.py but fails pass_k.py."""
    try:
        check_toolchain("cs")
    except UserError as err:
        pytest.skip(str(err))
    data = tmp_path / "rules-cs.jsonl"
    data.write_text(json.dumps({"name": "exit_code_rule", "language": "cs", "prompt": "", "tests": "",
                                "stop_tokens": []}) + "\n")
    sampling = {"temperature": 0.2, "top_p": 0.95, "max_tokens": 512}
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"name": "exit_code_rule", "solution": RULES["cs"][rule][0], **sampling})
                               + "\n" for rule in ("ok", "exit3")))
    summary = score("multipl-e-cs", samples, tmp_path / "out", workers=2, data=data)
    assert summary["status"] == {"OK": 2} and summary["pass@1"] == pytest.approx(0.5)
    record = json.loads((tmp_path / "out" / "results" / "exit_code_rule.results.json").read_text())
    assert {k: record[k] for k in sampling} == sampling  # pass_k.py reads temperature from here
    assert [r["exit_code"] for r in record["results"]] == [0, 3]


@pytest.mark.e2e
def test_typescript_batch_compiler_matches_tsc_command_line(tmp_path):
    directory = typescript_dir()
    if directory is None:
        pytest.skip("the pinned TypeScript is not installed (scripts/setup.sh)")
    # tsc's start-up is seconds per file: one program per exit code (0, 2 with JavaScript, parse error)
    programs = [RULES["ts"][rule][0] for rule in ("es2023", "type", "parse")]
    batch = compile_typescript(programs)
    for i, program in enumerate(programs):
        source = tmp_path / f"p{i}.ts"
        source.write_text(program)
        cli = subprocess.run(["node", str(directory / "bin" / "tsc"), "--target", "esnext", source.name],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert (batch[i]["exit_code"], batch[i]["stdout"]) == (cli.returncode, cli.stdout), program
        if cli.returncode != 1:  # tsc emitted JavaScript
            assert batch[i]["js"] == source.with_suffix(".js").read_text()
    assert any(r["exit_code"] == 2 for r in batch) and any(r["exit_code"] == 0 for r in batch)


# C# constructs newer than what Debian's mcs parses; Roslyn's csc (MultiPL-E's image) accepts them
NEWER_CSHARP = {
    "local function": "long Twice(long z) => z * 2; Debug.Assert(Twice(2) == 4);",
    "switch expression": "long x = 1; long y = x switch { 1 => 2, _ => 0 }; Debug.Assert(y == 2);",
    "is not pattern": "object o = 1; Debug.Assert(o is not null);",
    "target-typed new": "System.Collections.Generic.List<long> l = new(); Debug.Assert(l.Count == 0);",
    "index from end": "long[] a = {1, 2}; Debug.Assert(a[^1] == 2);",
    "range": "long[] a = {1, 2, 3}; Debug.Assert(a[1..].Length == 2);",
    "using declaration": "using var s = new System.IO.MemoryStream(); Debug.Assert(s.Length == 0);",
    "null-coalescing assignment": "long? x = null; x ??= 3; Debug.Assert(x == 3);",
    "default literal": "long x = default; Debug.Assert(x == 0);",
}


@pytest.mark.e2e
def test_mcs_rejects_newer_csharp_constructs():
    """The documented C# divergence: with mcs (no Roslyn csc here), each construct is a SyntaxError."""
    try:
        check_toolchain("cs")
    except UserError as err:
        pytest.skip(str(err))
    if shutil.which("csc"):
        pytest.skip("a Roslyn csc is installed: the divergence does not apply")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(NEWER_CSHARP, pool.map(lambda body: evaluate_program("cs", CS_MAIN.format(body)),
                                                  NEWER_CSHARP.values())))
    assert {name: r["status"] for name, r in results.items()} == {name: "SyntaxError" for name in NEWER_CSHARP}
