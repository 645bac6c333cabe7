"""Model FLOPs of an EXAONE forward/backward pass, read off the architecture.

MFU compares these *model* FLOPs (what the math needs, no recomputation) with the device
peak. Every matmul of m x k by k x n counts 2*m*n*k. Per token and per layer:

- attention projections: Q and O are h x (heads*d); K and V are h x (kv_heads*d) (GQA);
- attention itself: Q.K^T and P.V, each 2 * context * heads*d, where ``context`` is the
  number of keys a query sees: seq_length for full counting, (seq_length + 1) / 2 on average
  under the causal mask (the default here: it is the work a causal kernel actually does);
  an EXAONE 4.0 sliding-window layer sees at most ``sliding_window`` keys (query i sees
  min(i + 1, window) of them under the causal mask, min(seq_length, window) in full counting);
- SwiGLU MLP: gate, up and down matrices, 3 * 2 * h * ffn;
plus the LM head (2 * h * vocab) once per token. Norms, RoPE, softmax and the embedding
lookup are negligible and not counted. Training costs 3x the forward pass (backward computes
grads for inputs and weights).
"""

from __future__ import annotations

from dataclasses import dataclass

from nemo_exaone.config.presets import ExaoneArch


@dataclass(frozen=True)
class FlopsPerToken:
    """Forward FLOPs per token, by component."""

    attention_projections: float
    attention_scores: float
    mlp: float
    lm_head: float

    @property
    def forward(self) -> float:
        return self.attention_projections + self.attention_scores + self.mlp + self.lm_head

    @property
    def training(self) -> float:
        """Forward + backward (2x forward) model FLOPs per trained token."""
        return 3.0 * self.forward


def flops_per_token(arch: ExaoneArch, seq_length: int, causal: bool = True) -> FlopsPerToken:
    """Forward FLOPs per token of ``arch`` at ``seq_length`` (see module docstring)."""
    h, layers, d = arch.hidden_size, arch.num_layers, arch.kv_channels
    q_width = arch.num_attention_heads * d
    kv_width = arch.num_key_value_heads * d
    context = (seq_length + 1) / 2.0 if causal else float(seq_length)
    contexts = [context] * layers
    if arch.sliding_window is not None and arch.layer_types is not None:
        w = min(int(arch.sliding_window), seq_length)
        windowed = (w * (w + 1) / 2.0 + (seq_length - w) * w) / seq_length if causal \
            else float(w)
        contexts = [windowed if kind == "sliding_attention" else context
                    for kind in arch.layer_types]
    projections = 2.0 * h * (2 * q_width + 2 * kv_width)
    mlp = 2.0 * 3.0 * h * arch.intermediate_size
    return FlopsPerToken(
        attention_projections=layers * projections,
        attention_scores=2.0 * 2.0 * q_width * sum(contexts),
        mlp=layers * mlp,
        lm_head=2.0 * h * arch.vocab_size,
    )


def training_flops_per_token(arch: ExaoneArch, seq_length: int, causal: bool = True) -> float:
    """Model FLOPs to train on one token (forward + backward)."""
    return flops_per_token(arch, seq_length, causal).training


def mfu(tokens_per_second: float, flops_per_trained_token: float, peak_flops_total: float
        ) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the devices' combined peak."""
    if peak_flops_total <= 0:
        return float("nan")
    return tokens_per_second * flops_per_trained_token / peak_flops_total
