"""A generated token of a Hugging Face encoder–decoder model (BART, T5, Marian) explained.

Teacher-forced pass: ``source`` ids through the encoder, ``decoder_input_ids`` through the
decoder; the explained score is the logit of the token predicted at decoder position ``p``
(by default the token the model would generate there). One forward and one backward pass give
every layer's encoder self-attention, decoder self-attention and decoder cross-attention maps
and their gradients; :class:`~attngrad.crossattn.rules.Relevance` applies Chefer et al.'s
rules (encoder layers first, then per decoder layer its self-attention, then its
cross-attention), and the result is row ``p`` of ``R^{ts}`` (over source tokens) and of
``R^{tt}`` (over decoder tokens up to ``p``).

Run here on tiny random configs only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import AttngradError
from .rules import Relevance, head_mean


@dataclass
class Seq2SeqExplanation:
    """``source`` (B, S): the map over source tokens; ``target`` (B, T): over decoder input tokens;
    ``tokens`` (B,): the explained (predicted) token ids; ``logits`` (B,) their logits."""

    source: torch.Tensor
    target: torch.Tensor
    tokens: torch.Tensor
    logits: torch.Tensor
    weighting: str


class Seq2SeqExplainer:
    """Explain a generated token of an encoder–decoder model over its source (cross-attention rules).

    Args:
        model: a Hugging Face ``*ForConditionalGeneration`` model (BART, T5, Marian, ...).
    """

    def __init__(self, model):
        config = getattr(model, "config", None)
        if config is None or not getattr(config, "is_encoder_decoder", False):
            raise AttngradError(f"{type(model).__name__} is not a Hugging Face encoder-decoder model")
        if config._attn_implementation != "eager":
            model.set_attn_implementation("eager")
        self.model = model.eval()

    def explain(
        self,
        input_ids: torch.Tensor,
        decoder_input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position: int = -1,
        token: torch.Tensor | int | None = None,
        weighting: str = "complete",
    ) -> Seq2SeqExplanation:
        """Maps for the token predicted at decoder ``position`` (default: the last), for every item.

        Args:
            input_ids, attention_mask: (B, S) source ids and mask (1 = real token).
            decoder_input_ids: (B, T) decoder inputs (start token first; teacher forcing).
            token: the token whose logit is explained (default: the argmax at ``position``).
            weighting: ``complete`` (default), ``gae``, ``absolute`` or ``rollout``.
        """
        t = decoder_input_ids.shape[1]
        pos = position % t
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                         output_attentions=True)
        maps = [*out.encoder_attentions, *out.decoder_attentions, *out.cross_attentions]
        if any(m is None for m in maps) or not out.cross_attentions:
            raise AttngradError(f"{type(self.model).__name__} returned no attention maps; load it with eager attention")
        logits = out.logits[:, pos]
        if token is None:
            tokens = logits.argmax(dim=-1)
        else:
            tokens = torch.as_tensor(token, device=logits.device).expand(logits.shape[0])
        chosen = logits.gather(1, tokens[:, None])[:, 0]
        grads = torch.autograd.grad(chosen.sum(), maps)
        n_enc, n_dec = len(out.encoder_attentions), len(out.decoder_attentions)
        g_enc, g_dec, g_cross = grads[:n_enc], grads[n_enc : n_enc + n_dec], grads[n_enc + n_dec :]
        a = out.encoder_attentions[0]
        rel = Relevance({"source": input_ids.shape[1], "target": t}, input_ids.shape[0], a.dtype, a.device)
        for attn, grad in zip(out.encoder_attentions, g_enc):
            rel.self_attention("source", head_mean(attn.detach(), grad, weighting))
        for self_a, self_g, cross_a, cross_g in zip(out.decoder_attentions, g_dec, out.cross_attentions, g_cross):
            rel.self_attention("target", head_mean(self_a.detach(), self_g, weighting))
            rel.cross_attention("target", "source", head_mean(cross_a.detach(), cross_g, weighting))
        return Seq2SeqExplanation(
            source=rel.r["target", "source"][:, pos], target=rel.r["target", "target"][:, pos],
            tokens=tokens.detach(), logits=chosen.detach(), weighting=weighting,
        )
