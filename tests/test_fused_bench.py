"""``dft-mm bench head``: JSON lines per method, and the CPU memory requirement of the
chunked path (separate processes, tokens 4096, vocab 32000, hidden 256)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from dft_mm.cli import main
from dft_mm.fused.bench import bench_head


def test_cli_prints_one_json_line_per_method():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"  # the Triton method runs in the interpreter on CPU
    methods = "naive,triton,liger_dft,gemms"
    proc = subprocess.run(
        [sys.executable, "-m", "dft_mm.cli", "bench", "head", "--tokens", "48", "--hidden", "16", "--vocab", "50",
         "--level", "geomean", "--alpha", "0.5", "--repeats", "1", "--seqs", "3", "--methods", methods],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    records = {r["method"]: r for r in map(json.loads, proc.stdout.strip().splitlines())}
    assert list(records) == methods.split(",")
    for name in ("naive", "triton"):
        record = records[name]
        assert record["median_ms"] > 0 and "peak_extra_mib" in record
        assert record["grad_rel_err_hidden"] < 1e-5 and record["grad_rel_err_weight"] < 1e-5
        assert abs(record["loss"] - records["naive"]["loss"]) < 1e-5
    assert "skipped" in records["liger_dft"]  # geomean is not Liger's token scaling
    assert "median_ms" in records["gemms"] and "loss" not in records["gemms"]


def test_chunked_peak_memory_is_under_a_quarter_of_naive(capsys):
    records = bench_head(
        tokens=4096, hidden=256, vocab=32000, dtype="float32", device="cpu", repeats=0,
        methods=("naive", "chunked_torch"), reference=False,
    )
    naive, chunked = records
    assert "error" not in naive and "error" not in chunked
    assert chunked["peak_extra_mib"] <= naive["peak_extra_mib"] / 4, (chunked, naive)
    # naive holds at least the fp32 logits and their log-softmax (2 x 500 MiB)
    assert naive["peak_extra_mib"] > 900
    assert abs(chunked["loss"] - naive["loss"]) <= 1e-5 * abs(naive["loss"])
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tokens", "65", "--seqs", "4"], "must be a multiple of --seqs 4"),
        (["--methods", "naive,fast"], "unknown --methods fast"),
        (["--alpha", "-1"], "--alpha must be >= 0"),
    ],
)
def test_bad_flags_exit_2_with_a_message(argv, message, capsys):
    assert main(["bench", "head", *argv]) == 2
    assert message in capsys.readouterr().err
