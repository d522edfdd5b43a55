"""Can the fused head serve this model exactly? Which ``lm_head``, which logit transform.

The fused head replaces the model's ``lm_head`` call, so it must also reproduce whatever the
model's forward does to the logits afterwards. Known transforms are read from the model
(:func:`logit_transform_of`): Gemma 2/3 ``final_logit_softcapping``, Cohere ``logit_scale``,
Granite ``logits_scaling``. Any *other* statement of the forward that reassigns ``logits``
after the ``lm_head`` call (:func:`unknown_logit_statements`) makes the model unservable:
the fused head is then declined with that statement as the reason, never run with a wrong loss.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import dataclass

import torch

from dft_mm.fused.transforms import LogitTransform

# statements after lm_head that these known transforms account for (or that change nothing)
_KNOWN_STATEMENTS = (
    re.compile(r"logits\s*=\s*logits\s*/\s*self\.config\.final_logit_softcapping"),
    re.compile(r"logits\s*=\s*torch\.tanh\(\s*logits\s*\)"),
    re.compile(r"logits\s*=\s*logits\s*\*\s*self\.config\.final_logit_softcapping"),
    re.compile(r"logits\s*=\s*logits\s*\*\s*self\.logit_scale"),
    re.compile(r"logits\s*=\s*logits\s*/\s*self\.config\.logits_scaling"),
    re.compile(r"logits\s*=\s*logits\.float\(\)"),
)


@dataclass(frozen=True)
class HeadPlan:
    """``head`` (None when the fused head cannot serve the model, with ``reason``) and the
    logit transform to replay."""

    head: torch.nn.Linear | None
    transform: LogitTransform | None = None
    reason: str = ""


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under PEFT wrappers."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def find_lm_head(model: torch.nn.Module) -> tuple[torch.nn.Linear | None, str]:
    """``(lm_head, "")`` when the model has a plain ``nn.Linear`` output layer we can
    drive (tied embeddings included), else ``(None, reason)``."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is None:
        return None, f"{type(model).__name__} exposes no output embeddings (lm_head)"
    if type(head) is not torch.nn.Linear:
        return None, f"its lm_head is a {type(head).__name__} (e.g. LoRA on lm_head), not a plain Linear"
    return head, ""


def logit_transform_of(model: torch.nn.Module) -> LogitTransform | None:
    """The map the model's forward applies to its logits, from its config and attributes."""
    model = base_model(model)
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    steps = []
    scale = getattr(model, "logit_scale", None)  # Cohere: logits * self.logit_scale
    if isinstance(scale, (int, float)) and scale != 1:
        steps.append(("mul", float(scale)))
    divisor = getattr(text, "logits_scaling", None)  # Granite: logits / config.logits_scaling
    if isinstance(divisor, (int, float)) and divisor != 1:
        steps.append(("div", float(divisor)))
    cap = getattr(text, "final_logit_softcapping", None)  # Gemma 2/3
    if cap:
        steps.append(("softcap", float(cap)))
    return LogitTransform(tuple(steps)) if steps else None


def _assigns_logits(node: ast.AST) -> bool:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
    return any(isinstance(target, ast.Name) and target.id == "logits" for target in targets)


def unknown_logit_statements(model: torch.nn.Module) -> list[str] | None:
    """Statements of the model's forward after its first ``lm_head(...)`` call that assign
    ``logits`` and are not one of the known transforms; None when the source cannot be read."""
    forward = type(base_model(model)).forward
    try:
        source = textwrap.dedent(inspect.getsource(forward))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return None
    head_calls = [
        node.lineno for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "lm_head"
    ]
    if not head_calls:
        return None
    first = min(head_calls)
    statements = [
        ast.get_source_segment(source, node) or "" for node in ast.walk(tree)
        if _assigns_logits(node) and node.lineno > first
    ]
    return [text for text in statements if not any(known.fullmatch(text.strip()) for known in _KNOWN_STATEMENTS)]


def plan_fused_head(model: torch.nn.Module) -> HeadPlan:
    """Decide whether (and how) the fused head serves ``model`` exactly."""
    head, reason = find_lm_head(model)
    if head is None:
        return HeadPlan(None, reason=reason)
    name = type(base_model(model)).__name__
    unknown = unknown_logit_statements(model)
    if unknown is None:
        return HeadPlan(None, reason=f"the source of {name}.forward cannot be read to check what it does after lm_head")
    if unknown:
        return HeadPlan(None, reason=f"{name}.forward changes the logits after lm_head (`{unknown[0]}`), "
                                     "which the fused head cannot reproduce")
    return HeadPlan(head, logit_transform_of(model))
