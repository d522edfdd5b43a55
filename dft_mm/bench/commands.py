"""``dft-mm bench head``, ``bench step`` and ``bench train`` (see :mod:`dft_mm.bench.head`,
:mod:`dft_mm.bench.step`, :mod:`dft_mm.bench.train`). Exit code 1 when any method crashed."""

from __future__ import annotations

from dft_mm.loss_spec import LEVELS
from dft_mm.errors import UserError


def _ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, e.g. 128,256,512; got {text!r}.") from None


def _methods(text: str | None) -> tuple[str, ...] | None:
    return tuple(text.split(",")) if text else None


def _head(args) -> int:
    from dft_mm.bench.head import bench_head

    records = bench_head(
        tokens=args.tokens, hidden=args.hidden, vocab=args.vocab, dtype=args.dtype, level=args.level,
        alpha=args.alpha, device=args.device, repeats=args.repeats, seqs=args.seqs, chunk_size=args.chunk_size,
        methods=_methods(args.methods), reference=not args.no_reference,
        chunk_sizes=_ints(args.chunk_sizes, "--chunk-sizes"), out=args.out, fp32_logits=args.fp32_logits,
    )
    return 1 if any("error" in record for record in records) else 0


def _step(args) -> int:
    from dft_mm.bench.step import bench_step

    records = bench_step(
        shape=args.shape, tokens=_ints(args.tokens, "--tokens"), dtype=args.dtype, device=args.device,
        repeats=args.repeats, methods=_methods(args.methods), out=args.out,
    )
    return 1 if any("error" in record for record in records) else 0


def register(subparsers) -> None:
    """Add ``bench`` with its ``head`` and ``step`` verbs to the top-level ``subparsers``."""
    bench = subparsers.add_parser("bench", help="benchmarks: the LM head + loss, a training step, whole training runs")
    verbs = bench.add_subparsers(dest="bench_command", required=True, metavar="VERB")
    head = verbs.add_parser(
        "head",
        help="LM head + DFT loss: naive fp32 logits vs chunked torch vs Triton vs Liger",
        description="One JSON line per method: median ms (fwd+bwd), peak extra memory (MiB), gradient "
        "relative error vs a float64 reference. Each method runs in its own process.",
    )
    head.add_argument("--tokens", type=int, default=4096, help="tokens in the batch (default 4096)")
    head.add_argument("--hidden", type=int, default=256, help="hidden size H (default 256)")
    head.add_argument("--vocab", type=int, default=32000, help="vocabulary size V (default 32000)")
    head.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    head.add_argument("--level", choices=LEVELS, default="token")
    head.add_argument("--alpha", type=float, default=1.0, help="DFT weight exponent (0 = SFT, 1 = DFT)")
    head.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    head.add_argument("--repeats", type=int, default=3, help="timed steps after the first (default 3)")
    head.add_argument("--seqs", type=int, default=4, help="rows the tokens are split into (default 4)")
    head.add_argument("--chunk-size", type=int, default=None, help="tokens per chunk of the fused paths (default auto)")
    head.add_argument("--chunk-sizes", default=None, help="comma-separated chunk sizes: a sweep (one run each)")
    head.add_argument("--methods", default=None, help="comma-separated subset (default all)")
    head.add_argument("--no-reference", action="store_true", help="skip the float64 gradient reference")
    head.add_argument("--fp32-logits", action="store_true",
                      help="fused methods: fp32 logits from the GEMM accumulator (default: rounded like nn.Linear)")
    head.add_argument("--out", default=None, help="also append the JSON lines to this file")
    head.set_defaults(handler=_head)

    step = verbs.add_parser(
        "step",
        help="a whole training step: HF CE vs LLaMA-Factory DFT vs Liger vs dft_mm fused",
        description="One JSON line per method and token count: median ms of forward + backward with gradient "
        "checkpointing, peak GiB, for a causal LM with random weights. Each method runs in its own process.",
    )
    step.add_argument("--shape", default="tiny", help="qwen2.5-coder-3b, qwen2.5-coder-7b or tiny (default)")
    step.add_argument("--tokens", default="256", help="comma-separated token counts of the one-row batch")
    step.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    step.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    step.add_argument("--repeats", type=int, default=3, help="timed steps after the first (default 3)")
    step.add_argument("--methods", default=None, help="comma-separated subset (default all)")
    step.add_argument("--out", default=None, help="also append the JSON lines to this file")
    step.set_defaults(handler=_step)

    from dft_mm.bench.train import register as register_train

    register_train(verbs)
