"""The fused head under Liger-Kernel's patched causal-LM forward (``use_liger_kernel: true``).

Liger's Triton kernels need CUDA, so only its model-level forward (``lce_forward``) is applied
here; with labels popped (as the Trainer does for a custom loss), that forward calls
``lm_head`` itself, which is where the fused DFT head takes over. The patch is global to the
transformers class, so it runs in a subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys, torch
from liger_kernel.transformers import apply_liger_kernel_to_qwen2
from transformers import AutoModelForCausalLM
from dft_mm.llamafactory.fused_head import FusedLMHead
from dft_mm.loss_spec import LossSpec
from dft_mm.llamafactory.head_support import plan_fused_head
from dft_mm.llamafactory.trainer import uses_liger_forward
from dft_mm.losses import dft_loss_and_stats

model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).train()
before = uses_liger_forward(model)
apply_liger_kernel_to_qwen2(rope=False, rms_norm=False, swiglu=False, cross_entropy=False, fused_linear_cross_entropy=True)
ids = torch.randint(10, 200, (2, 9), generator=torch.Generator().manual_seed(0))
labels = ids.clone()
labels[:, :4] = -100
plan = plan_fused_head(model)  # Liger's forward is read for what it does after lm_head
fused = FusedLMHead(plan.head, LossSpec.dft())
with fused.armed(labels, 10):
    outputs = model(input_ids=ids)
result = fused.take()
fused.check_output(outputs.logits, result.stub)
loss = result.loss
reference, _ = dft_loss_and_stats(model(input_ids=ids).logits, labels, num_items_in_batch=10)
print(json.dumps({"before": before, "after": uses_liger_forward(model), "logits": list(outputs.logits.shape),
                  "fused": loss.item(), "reference": reference.item()}))
"""


def test_fused_head_serves_liger_forward(tiny_text_model):
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tiny_text_model)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["before"] is False and result["after"] is True  # detection of Liger's forward
    assert result["logits"] == [2, 9, 0]  # Liger's forward went through the fused lm_head: no logits
    assert abs(result["fused"] - result["reference"]) <= 1e-6 * abs(result["reference"])
