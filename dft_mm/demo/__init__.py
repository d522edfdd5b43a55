"""The offline experiment (``make demo``): everything here runs on tiny models and synthetic data.

* :mod:`~dft_mm.demo.plan`: the experiment as data (methods and their YAML keys, tasks, regimes,
  schedules, selection candidates, run sizes);
* :mod:`~dft_mm.demo.run`: the run itself (trainings, held-out evaluations, token analyses,
  report) and the protocol's selection on the validation split;
* :mod:`~dft_mm.demo.tiny`: tiny random Qwen2 / Qwen2.5-VL models with a tokenizer trained on
  the spot (also the tests' and ``dft-mm bench``'s models);
* :mod:`~dft_mm.demo.synthetic`: the synthetic tasks and their files in the ecosystem's formats;
* :mod:`~dft_mm.demo.preloaded`: trainings forked from a process that has LLaMA-Factory loaded;
* :mod:`~dft_mm.demo.commands`: ``dft-mm demo`` and ``dft-mm tiny``.

Nothing outside ``dft_mm.demo`` imports it except ``dft_mm.bench`` (its tiny models and data)
and the CLI's command list.
"""
