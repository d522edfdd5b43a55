"""``dft-mm bench head`` / ``bench step``: JSON lines per method, the CPU memory requirement
of the chunked path (separate processes, tokens 4096, vocab 32000, hidden 256), and
``scripts/gpu_check.sh`` refusing to run without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO
from dft_mm.cli import main
from dft_mm.bench.head import bench_head
from dft_mm.bench.step import bench_step


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


def test_chunk_size_sweep_writes_one_line_per_run(tmp_path, capsys):
    out = tmp_path / "sweep.jsonl"
    records = bench_head(tokens=64, hidden=16, vocab=50, device="cpu", repeats=1, methods=("chunked_torch",),
                         chunk_sizes=(8, 64), reference=False, out=str(out))
    assert [r["chunk_size"] for r in records] == [8, 64]
    assert [json.loads(line)["chunk_size"] for line in out.read_text().splitlines()] == [8, 64]
    assert abs(records[0]["loss"] - records[1]["loss"]) <= 1e-6 * abs(records[1]["loss"])


def test_training_step_methods_side_by_side_on_cpu(tmp_path):
    """The tiny shape on CPU: the fused DFT step and the HF SFT step run; GPU-only methods say why not."""
    records = bench_step(shape="tiny", tokens=(128,), dtype="float32", device="cpu", repeats=1, out=str(tmp_path / "s.jsonl"))
    by_method = {r["method"]: r for r in records}
    for method in ("hf_ce", "dft_fused_torch", "lf_dft"):
        assert by_method[method]["median_ms"] > 0 and by_method[method]["peak_gib"] > 0, by_method[method]
    assert "CUDA" in by_method["liger_ce"]["skipped"] and "CUDA" in by_method["dft_fused_triton"]["skipped"]
    # same random model and batch: DFT's loss is below SFT's NLL, and LLaMA-Factory's DFT equals ours
    assert by_method["dft_fused_torch"]["loss"] < by_method["hf_ce"]["loss"]
    assert by_method["lf_dft"]["loss"] == pytest.approx(by_method["dft_fused_torch"]["loss"], rel=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_gpu_check_stops_at_once_without_cuda(tmp_path):
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 3
    assert "no CUDA device is visible" in proc.stderr
    assert not (tmp_path / "out" / "summary.md").exists()


def test_gpu_check_summary_of_recorded_results(tmp_path):
    """The summary turns the sections' files into tables and checks every target."""
    from dft_mm.bench.summary import summarize

    (tmp_path / "env.json").write_text(json.dumps({"device": "NVIDIA H200", "capability": [9, 0], "torch": "2.11.0"}))
    head = [{"method": "gemms", "median_ms": 80.0}, {"method": "liger_dft", "median_ms": 115.0},
            {"method": "chunked_torch", "median_ms": 86.0, "peak_extra_mib": 2500.0, "grad_rel_err_weight": 2e-3,
             "grad_floor_weight": 2e-3}]
    (tmp_path / "head_16k.jsonl").write_text("\n".join(map(json.dumps, head)))
    step = [{"method": "hf_ce", "tokens": 8192, "median_ms": 500.0, "peak_gib": 20.0},
            {"method": "liger_ce", "tokens": 8192, "median_ms": 498.0, "peak_gib": 16.0},
            {"method": "dft_fused_torch", "tokens": 8192, "median_ms": 505.0, "peak_gib": 17.0}]
    (tmp_path / "step.jsonl").write_text("\n".join(map(json.dumps, step)))
    text = summarize(tmp_path)
    assert "NVIDIA H200 (sm_90)" in text
    assert "| chunked_torch: fwd+bwd ms at 16k <= 1.10 x GEMMs | 86.0 | 88.0 | met |" in text
    assert "| chunked_torch: peak extra GiB at 16384 | 2.44 | 1.3 | **not met** |" in text
    assert "| dft_fused_torch step at 8192: peak GiB <= Liger SFT | 17.0 | 16.0 | **not met** |" in text
    assert "| dft_fused_torch step at 8192: ms <= 1.02 x HF SFT | 505.0 | 510.0 | met |" in text


def test_bench_train_runs_each_method_alone_and_stops_one_past_the_memory_cap(tmp_path):
    """Whole llamafactory-cli runs (a tiny Qwen2, vocabulary 2,000): one JSON line each with the
    process's peak RSS, the trainer's runtime and the losses; a run past the cap is killed."""
    from dft_mm.bench.train import bench_train

    shape = {"batch": 1, "seq_len": 64, "steps": 1, "vocab": 2000, "hidden": 32, "workdir": str(tmp_path)}
    (ours,) = bench_train(methods=("asft",), out=str(tmp_path / "train.jsonl"), **shape)
    assert ours["returncode"] == 0 and "killed" not in ours
    assert 0.3 < ours["peak_rss_gib"] < 8 and ours["train_runtime_s"] > 0 and ours["first_loss"] > 0
    assert json.loads((tmp_path / "train.jsonl").read_text()) == ours
    (capped,) = bench_train(methods=("upstream_asft",), memory_cap_gib=0.2, **shape)
    assert capped["killed"].startswith("resident memory passed the 0.2 GiB cap") and capped["returncode"] != 0
