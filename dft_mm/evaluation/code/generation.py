"""``dft-mm eval code generate``: completions for HumanEval(+) / MultiPL-E as samples JSONL.

Prompts follow each harness:

* HumanEval(+), as EvalPlus 0.3.1's ``codegen``, with its own prompt builder and stop strings:
  base models get ``prompt.strip() + "\n"`` and stop at EvalPlus's ``EOS`` plus its
  direct-completion end-of-function strings; ``--chat`` uses EvalPlus's ``make_raw_chat_prompt``
  (the instruction, then the assistant turn opened with the response prefix and a ``python``
  fence) and stops at ``EOS`` plus the closing fence line. 768 new tokens. Tabs become 4 spaces,
  and the stored sample is EvalPlus's ``sanitize`` of ``prompt + output`` (of ``output`` in chat
  mode) as ``solution``; the unsanitised text goes to ``samples.raw.jsonl``, as in EvalPlus.
* MultiPL-E, base models: the prompt as is, the row's ``stop_tokens``, 512 new tokens;
  ``--chat``: a user turn asking for the code and an assistant turn that already opens a fenced
  block and repeats the prompt, so the model continues the function; cut at the closing fence.
  Rows carry ``completion`` and MultiPL-E's ``temperature``/``top_p``/``max_tokens``.

Greedy decoding (temperature 0) generates one prompt at a time, as EvalPlus's ``--greedy`` does:
in a padded batch, the other prompts change the numerics and so the greedy output.

Output: ``out/samples.jsonl`` with ``{"task_id", "index", "completion" | "solution"}`` (EvalPlus
samples format; MultiPL-E rows also carry ``name``), appended and flushed per sample; a rerun
skips the (task_id, index) pairs already there. Backends: ``hf`` (transformers, KV cache, stop
strings; sampling batches ``batch_size`` prompts) and ``vllm`` (when installed).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from dft_mm.durable import append, complete_records, open_for_append
from dft_mm.errors import UserError
from dft_mm.evaluation.code import data as code_data
from dft_mm.evaluation.code.scoring import truncate_at_stop

EVALPLUS_INSTRUCTION = ("Please provide a self-contained Python script that solves the following problem in a "
                        "markdown code block:")  # evalplus.codegen.run_codegen's prefixes
EVALPLUS_RESPONSE = ("Below is a Python script with a self-contained function that solves the problem and passes "
                     "corresponding tests:")
MAX_NEW_TOKENS = {"humaneval": 768, "humaneval+": 768, "multipl-e": 512}
LANGUAGE_NAMES = {"python": "Python", "cpp": "C++", "java": "Java", "php": "PHP", "ts": "TypeScript",
                  "cs": "C#", "sh": "Bash", "js": "JavaScript"}
FENCE_NAMES = {"python": "python", "cpp": "cpp", "java": "java", "php": "php", "ts": "typescript",
               "cs": "csharp", "sh": "bash", "js": "javascript"}
SAMPLES = "samples.jsonl"
RAW_SAMPLES = "samples.raw.jsonl"  # EvalPlus's name for the unsanitised outputs


def evalplus_stop(chat: bool) -> list[str]:
    """EvalPlus's stop strings: its ``EOS`` plus the chat fence or the direct-completion strings."""
    from evalplus.provider.utility import EOS, extra_eos_for_direct_completion

    return [*EOS, "\n```\n"] if chat else [*EOS, *extra_eos_for_direct_completion("humaneval")]


def build_requests(benchmark: str, problems: list[dict], chat: bool) -> list[dict]:
    """One request per problem: ``{"task_id", "text" (the prompt; the user turn in MultiPL-E chat
    mode), "prefix" (MultiPL-E chat: the assistant's opening), "evalplus_chat", "stop",
    "entry_point" (HumanEval(+))}``."""
    kind, language = code_data.parse_benchmark(benchmark)
    requests = []
    for problem in problems:
        if kind != "multipl-e":  # EvalPlus codegen; its make_raw_chat_prompt builds chat prompts
            requests.append({"task_id": problem["task_id"], "text": problem["prompt"].strip() + "\n", "prefix": "",
                             "evalplus_chat": chat, "stop": evalplus_stop(chat),
                             "entry_point": problem["entry_point"]})
            continue
        request = {"task_id": problem["task_id"], "text": problem["prompt"], "prefix": "", "evalplus_chat": False,
                   "stop": code_data.stop_tokens_for(problem, language)}
        if chat:
            name, fence = LANGUAGE_NAMES[language], FENCE_NAMES[language]
            request["text"] = (f"Please provide a self-contained {name} script that solves the following problem "
                               f"in a markdown code block:\n```{fence}\n{problem['prompt'].rstrip()}\n```\n")
            request["prefix"] = (f"Below is a {name} script with a self-contained function that solves the problem "
                                 f"and passes corresponding tests:\n```{fence}\n{problem['prompt']}")
            request["stop"] = ["\n```", *request["stop"]]
        requests.append(request)
    return requests


class HFBackend:
    """transformers ``generate``: left-padded batches, KV cache, greedy or sampled, stop strings."""

    def __init__(self, model: str, chat: bool):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device).eval()
        self.device = device
        if chat and not self.tokenizer.chat_template:
            raise UserError(f"--chat needs a chat template, but the tokenizer in {model} has none; drop --chat "
                            "for base-model completion mode")

    def render(self, request: dict, chat: bool) -> str:
        if not chat:
            return request["text"]
        if request["evalplus_chat"]:
            from evalplus.provider.utility import make_raw_chat_prompt

            return make_raw_chat_prompt(request["text"], EVALPLUS_INSTRUCTION, EVALPLUS_RESPONSE, self.tokenizer)
        messages = [{"role": "user", "content": request["text"]}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + request["prefix"]

    def generate(self, prompts: list[str], stop: list[str], max_new_tokens: int, temperature: float,
                 top_p: float) -> list[str]:
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kwargs = {"max_new_tokens": max_new_tokens, "use_cache": True, "pad_token_id": self.tokenizer.pad_token_id,
                  "stop_strings": stop, "tokenizer": self.tokenizer}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with self.torch.no_grad():
            output = self.model.generate(**encoded, **kwargs)
        new_tokens = output[:, encoded["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


class VLLMBackend:
    """vLLM offline engine (used when ``--backend vllm`` and vllm is importable)."""

    def __init__(self, model: str, chat: bool):
        try:
            from vllm import LLM
        except ImportError as err:
            raise UserError("--backend vllm needs the vllm package: pip install 'dft_mm[vllm]'") from err
        self.llm = LLM(model=model)
        self.tokenizer = self.llm.get_tokenizer()

    render = HFBackend.render

    def generate(self, prompts: list[str], stop: list[str], max_new_tokens: int, temperature: float,
                 top_p: float) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                                max_tokens=max_new_tokens, stop=stop)
        return [out.outputs[0].text for out in self.llm.generate(prompts, params, use_tqdm=False)]


def _sample_rows(benchmark_kind: str, request: dict, index: int, text: str, chat: bool,
                 sampling: dict) -> tuple[dict, dict | None]:
    """The sample row and, for HumanEval(+), EvalPlus's raw row (before ``sanitize``)."""
    text = truncate_at_stop(text, request["stop"])
    row = {"task_id": request["task_id"], "index": index}
    if benchmark_kind == "multipl-e":
        return {**row, "name": request["task_id"], "completion": text, **sampling}, None
    from evalplus.sanitize import sanitize

    text = text.replace("\t", "    ")  # as EvalPlus's providers do
    raw = text if chat else request["text"] + text
    return {**row, "solution": sanitize(raw, entrypoint=request["entry_point"])}, {**row, "solution": raw}


@dataclass(frozen=True)
class GenerationSettings:
    """How :func:`generate` generates: one value per ``dft-mm eval code generate`` option
    (``--a-b`` -> ``a_b``) besides ``--model``, ``--benchmark``, ``--data`` and ``--out``."""

    backend: str = "hf"  # "hf" or "vllm"
    n_samples: int = 1  # completions per problem (pass@k needs temperature > 0)
    temperature: float = 0.0  # 0: greedy, one prompt at a time
    top_p: float = 0.95  # with temperature > 0
    chat: bool = False  # EvalPlus's chat prompt through the model's chat template
    batch_size: int = 8  # prompts per generate call (sampling only)
    max_new_tokens: int | None = None  # None: MAX_NEW_TOKENS of the benchmark's harness
    limit: int | None = None  # only the first N problems (smoke tests)


def generate(model: str | Path, benchmark: str, out: str | Path, settings: GenerationSettings = GenerationSettings(),
             data: str | Path | None = None) -> Path:
    """Write ``settings.n_samples`` completions per problem of ``benchmark`` (its problems from
    ``data``, else the pinned release) to ``out/samples.jsonl`` (resumable); returns its path."""
    from tqdm import tqdm

    backend, n_samples, temperature, top_p = settings.backend, settings.n_samples, settings.temperature, settings.top_p
    chat, batch_size, max_new_tokens, limit = settings.chat, settings.batch_size, settings.max_new_tokens, settings.limit

    kind, _ = code_data.parse_benchmark(benchmark)
    if n_samples > 1 and temperature == 0:
        raise UserError(f"--n-samples {n_samples} with --temperature 0 gives identical samples; "
                        "use --temperature > 0 (e.g. 0.8) for pass@k with k > 1")
    problems = code_data.load_problems(benchmark, data)[: limit or None]
    requests = build_requests(benchmark, problems, chat)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / SAMPLES
    done = {(row["task_id"], int(row.get("index", 0))) for row in complete_records(path)}
    todo = [(r, i) for r in requests for i in range(n_samples) if (r["task_id"], i) not in done]
    if not todo:
        print(f"{benchmark}: all {len(requests) * n_samples} samples already in {path}")
        return path
    engine = (VLLMBackend if backend == "vllm" else HFBackend)(str(model), chat)
    if temperature == 0 and batch_size > 1:
        print(f"{benchmark}: greedy decoding generates one prompt at a time (--batch-size {batch_size} applies "
              "to sampling only): in a padded batch, the other prompts change greedy outputs")
        batch_size = 1
    # A batch shares one stop list (a sequence must not stop at another problem's stop string);
    # similar prompt lengths share a batch: less padding.
    todo.sort(key=lambda item: (item[0]["stop"], len(item[0]["text"])))
    batches, current = [], []
    for item in todo:
        if current and (len(current) == batch_size or current[0][0]["stop"] != item[0]["stop"]):
            batches.append(current)
            current = []
        current.append(item)
    batches.append(current)
    limit_tokens = max_new_tokens or MAX_NEW_TOKENS[kind]
    sampling = {"temperature": temperature, "top_p": top_p if temperature > 0 else 1.0, "max_tokens": limit_tokens}
    progress = tqdm(total=len(todo), desc=f"{benchmark}: generating", unit="sample")
    raw_file = open_for_append(out / RAW_SAMPLES) if kind != "multipl-e" else contextlib.nullcontext()
    with open_for_append(path) as handle, raw_file as raw_handle, progress as bar:
        for batch in batches:
            texts = engine.generate([engine.render(r, chat) for r, _ in batch], batch[0][0]["stop"], limit_tokens,
                                    temperature, top_p)
            for (request, index), text in zip(batch, texts):
                row, raw = _sample_rows(kind, request, index, text, chat, sampling)
                append(handle, row)
                if raw is not None:
                    append(raw_handle, raw)
            bar.update(len(batch))
    return path
