"""VLMEvalKit (PyPI ``ms-vlmeval``), the paper's scorer, run in its own interpreter.

One job per module:

- :mod:`~dft_mm.evaluation.vlm.kit.environment`: finds the interpreter that has the kit
  (``--kit-python``, ``$DFT_MM_VLMEVAL_PYTHON``, this one, or the environment it creates for
  ``dft-mm eval vlm install-kit``) and starts :mod:`~dft_mm.evaluation.vlm.kit.worker` in it;
- :mod:`~dft_mm.evaluation.vlm.kit.worker`: the script that interpreter runs, by path (it
  imports nothing from dft_mm): the kit's own evaluation of one prediction file, or its runner;
- :mod:`~dft_mm.evaluation.vlm.kit.runner`: ``dft-mm eval vlm vlmevalkit``, the kit's own
  runner end to end (its generation and judged scoring), then its scores imported;
- :mod:`~dft_mm.evaluation.vlm.kit.score`: the judged route of ``dft-mm eval vlm score
  --judge URL``, the kit's evaluation of one of our prediction files;
- :mod:`~dft_mm.evaluation.vlm.kit.files`: reads the score files the kit writes, and which
  judge made each.

The judge-free scorer is beside this package (:mod:`dft_mm.evaluation.vlm.score`).
"""
