"""Adapter over Hugging Face BERT-family text models: classifiers and sentence encoders.

A ``*ForSequenceClassification`` model gives class logits, read from the CLS row.
A plain encoder (``BertModel``, a sentence-transformers folder) gives one sentence
embedding per text, pooled exactly as the folder's pooling config says
(``1_Pooling/config.json``; all-MiniLM-L6-v2: the mean over real tokens).

Loading is offline: ``local_files_only=True`` everywhere (``HF_HUB_OFFLINE=1``
semantics); a Hub name works only when it is already in the local cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import AttngradError
from ..models.base import ForwardOutput
from ..models.hf import HFModelAdapter, check_model_folder, first_line, load_all_weights, load_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel

#: Pooling modes of sentence-transformers' ``Pooling`` module that are linear in the tokens.
POOLING_MODES = ("cls", "mean", "mean_sqrt_len")

#: Largest ``model_max_length`` taken at face value (tokenizers without a limit report ~1e30).
_NO_LIMIT = 100_000


@dataclass(frozen=True)
class Pooling:
    """How an encoder's token states become one sentence embedding.

    ``cls``: the CLS token's state; ``mean``: the mean over real tokens (padding excluded,
    CLS and SEP included, as sentence-transformers does); ``mean_sqrt_len``: the sum over
    real tokens divided by sqrt(length) (the same direction as ``mean``, so the same cosine).
    """

    mode: str = "mean"

    def __post_init__(self):
        if self.mode not in POOLING_MODES:
            raise AttngradError(
                f"pooling {self.mode!r} is not supported (it is not linear in the tokens); use one of {POOLING_MODES}"
            )

    @classmethod
    def from_folder(cls, folder: Path) -> "Pooling | None":
        """The sentence-transformers pooling config of a model folder, or ``None`` if it has none."""
        config = folder / "1_Pooling" / "config.json"
        modules = folder / "modules.json"
        if modules.exists():
            for module in json.loads(modules.read_text()):
                if module.get("type", "").endswith("Pooling"):
                    config = folder / module.get("path", "") / "config.json"
        if not config.exists():
            return None
        flags = json.loads(config.read_text())
        modes = [m for m in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens",
                             "lasttoken") if flags.get(f"pooling_mode_{m}")]
        if len(modes) != 1:
            raise AttngradError(f"{config}: pooling {'+'.join(modes) or 'none'} is not supported; use one of {POOLING_MODES}")
        return cls(modes[0].replace("_tokens", "").replace("_token", ""))

    @property
    def read(self) -> str:
        """Which rows of the rollout explain the embedding: ``"cls"`` or ``"pooled"`` (every real token)."""
        return "cls" if self.mode == "cls" else "pooled"

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, D) token states and (B, N) real-token mask -> (B, D) sentence embeddings."""
        if self.mode == "cls":
            return hidden[:, 0]
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        total = (hidden * weights).sum(dim=1)
        count = weights.sum(dim=1)
        return total / (count if self.mode == "mean" else count.sqrt())


class TextAdapter(HFModelAdapter):
    """Wrap a BERT-family ``PreTrainedModel`` and its tokenizer.

    Implements the modality-neutral :class:`~attngrad.models.base.ModelAdapter`; inherits from
    :class:`~attngrad.models.hf.HFModelAdapter` the switch to eager attention, the labels from
    ``config.id2label`` and :meth:`override_attention`.

    Args:
        model: a ``*ForSequenceClassification`` classifier, or a plain encoder (``BertModel``).
        tokenizer: a fast tokenizer (word ids and character offsets are used for display).
        pooling: for encoders, how token states become the sentence embedding (default mean).
        max_length: most tokens read per text, special tokens included (default: the model's limit).
    """

    model: PreTrainedModel  # a transformers model (get_input_embeddings, config), set by HFModelAdapter

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        pooling: Pooling | None = None,
        max_length: int | None = None,
    ):
        super().__init__(model)
        self.tokenizer = tokenizer
        self.is_classifier = type(model).__name__.endswith("ForSequenceClassification")
        self.pooling = None if self.is_classifier else (pooling or Pooling("mean"))
        if self.is_classifier and pooling is not None:
            raise AttngradError("a sequence classifier reads its CLS token; pooling applies to sentence encoders only")
        limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None),
                  max_length]
        self.max_length = min((int(n) for n in limits if n and n < _NO_LIMIT), default=512)

    @property
    def read(self) -> str:
        """``"cls"`` for classifiers and CLS-pooled encoders, ``"pooled"`` for mean-pooled encoders."""
        return "cls" if self.pooling is None else self.pooling.read

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: torch.device | str | None = None) -> "TextAdapter":
        """Load a local BERT-family folder (or a Hub name already in the local cache), offline."""
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder = check_model_folder(name_or_path, missing="pass an existing folder with config.json, a tokenizer and weights")
        where = str(folder if folder is not None else name_or_path)
        config = load_config(where, what="text model", hint="offline; pass a local model folder", local_files_only=True)
        architectures = getattr(config, "architectures", None) or []
        if getattr(config, "vocab_size", None) is None or config.is_encoder_decoder or any(
            a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in architectures
        ):
            raise AttngradError(
                f"{where}: not a text encoder (model type {config.model_type!r}); pass a BERT-family folder "
                "(a *ForSequenceClassification classifier or a sentence encoder such as all-MiniLM-L6-v2)"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise AttngradError(f"{where}: no usable tokenizer ({first_line(err)}); a text model folder needs one") from None
        classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
        loader = AutoModelForSequenceClassification if classifier else AutoModel
        # the pooler is never read (a classifier reads its own head, an encoder pools the token states)
        model = load_all_weights(loader, where, attn_implementation="eager", local_files_only=True,
                                 failure=lambda why: f"cannot load text model {where!r}: {why}",
                                 unused=lambda key: "pooler." in key)
        pooling = None if classifier or folder is None else Pooling.from_folder(folder)
        limit = None
        st_config = folder / "sentence_bert_config.json" if folder is not None else None
        if st_config is not None and st_config.exists():
            limit = json.loads(st_config.read_text()).get("max_seq_length")
        if device is not None:
            model = model.to(device)
        return cls(model, tokenizer, pooling, limit)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, N, D) of ``input_ids``, detached: the input the maps are traced from."""
        return self.model.get_input_embeddings()(input_ids.to(self.device)).detach()

    # Not ModelAdapter.forward(inputs): the mask comes too; text.explainer's _TaskView is the adapter the methods call.
    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> ForwardOutput:
        """Logits (classifier) or pooled sentence embeddings (encoder), and every layer's attention maps.

        Takes token embeddings from :meth:`embed` (``inputs_embeds``; position and segment
        embeddings are added by the model) so that a graph to the maps exists even when the
        weights are frozen; ``attention_mask`` (B, N) is 1 on real tokens, 0 on padding.
        """
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, output_attentions=True)
        attentions = self.check_attentions(getattr(out, "attentions", None))
        if self.pooling is None:
            return ForwardOutput(out.logits, attentions)
        return ForwardOutput(self.pooling(out.last_hidden_state, attention_mask), attentions)
