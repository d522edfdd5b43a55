"""Answer extraction by a judge model behind an OpenAI-compatible chat endpoint.

Used only when the rules of :mod:`dft_mm.evaluation.vlm.extract` find no confident answer
(no tag, box, answer phrase or option). Any server speaking ``POST /v1/chat/completions``
works (vLLM, LMDeploy, SGLang, llama.cpp, OpenAI); ``OPENAI_API_KEY`` is sent when set.

Example::

    judge = Judge("http://127.0.0.1:8000/v1", model="Qwen2.5-7B-Instruct")
    judge.extract(question, response, options)   # -> "B" / "22.3" / None
    # concurrent use: complete() in worker threads, interpret() in the main thread
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from dft_mm.errors import UserError

NO_ANSWER = "NONE"
_PROMPT = """You read a model's response to a math question and report its final answer.
Reply with the final answer only: {form}. If the response gives no final answer, or gives
several different ones, reply {none}.

Question:
{question}

Response:
{response}

Final answer:"""


def chat_url(url: str) -> str:
    """``.../v1`` or a server root becomes ``.../v1/chat/completions``; a full URL stays."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


class Judge:
    """Extraction through a chat-completions endpoint (temperature 0, short replies)."""

    def __init__(self, url: str, model: str = "judge", timeout: float = 60.0, retries: int = 3):
        self.url = chat_url(url)
        self.model = model
        self.timeout = timeout
        self.retries = retries

    def prompt(self, question: str, response: str, options: dict[str, str] | None) -> str:
        """Our extraction prompt (multiple choice asks for the option letter)."""
        if options:
            listed = "\n".join(f"{letter}. {text}" for letter, text in options.items() if text)
            form = "the option letter (" + ", ".join(options) + ")"
            question = f"{question}\n{listed}" if listed and listed not in question else question
        else:
            form = "a number, expression or short phrase, no explanation"
        return _PROMPT.format(form=form, none=NO_ANSWER, question=question, response=response)

    def complete(self, prompt: str) -> str:
        """One chat completion; raises UserError naming the endpoint when it cannot be reached."""
        body = json.dumps({
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": 64,
        }).encode()
        headers = {"Content-Type": "application/json"}
        if os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
        error = None
        for _ in range(self.retries):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    payload = json.loads(reply.read().decode())
                return str(payload["choices"][0]["message"]["content"]).strip()
            except (urllib.error.URLError, TimeoutError, KeyError, IndexError, ValueError) as err:
                error = err
        raise UserError(f"judge endpoint {self.url} failed after {self.retries} tries ({error}); check --judge URL "
                        "(an OpenAI-compatible server, e.g. `vllm serve MODEL` then --judge http://HOST:8000/v1)")

    def extract(self, question: str, response: str, options: dict[str, str] | None) -> str | None:
        """The judge's final answer (option letter for multiple choice), or None."""
        return interpret(self.complete(self.prompt(question, response, options)), options)


def interpret(reply: str, options: dict[str, str] | None) -> str | None:
    """A judge reply as an answer: None for ``NONE``/empty, an option letter for multiple choice."""
    from dft_mm.evaluation.vlm.extract import to_option_letter

    reply = reply.strip().strip(".").strip()
    if not reply or reply.upper() == NO_ANSWER:
        return None
    return to_option_letter(reply, options) if options else reply
