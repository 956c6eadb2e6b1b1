"""Tiny random causal LMs built from configs (Llama with grouped-query attention, GPT-2) and a word tokenizer."""

from __future__ import annotations

import pytest
import torch

WORDS = ("the capital of france is paris rome berlin a cat sat on mat and dog ran to park "
         "it was very good bad movie i liked hated this film").split()


def word_tokenizer():
    """A whitespace word-level fast tokenizer over :data:`WORDS` (ids: 0 <pad>, 1 <unk>, 2 <eos>, then words)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<eos>": 2}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")


VOCAB = 64


@pytest.fixture(scope="session")
def tokenizer():
    return word_tokenizer()


@pytest.fixture(scope="session")
def tiny_llama():
    """3 layers, 4 query heads sharing 2 key/value heads (GQA), vocabulary 64."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                      pad_token_id=0, bos_token_id=None, eos_token_id=2, attn_implementation="eager")
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_gpt2():
    """3 layers, 4 heads, absolute position embeddings (positions matter with left padding)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=32, bos_token_id=2,
                     eos_token_id=2, pad_token_id=0, attn_implementation="eager")
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="session", params=["llama", "gpt2"])
def tiny_lm(request, tiny_llama, tiny_gpt2, tokenizer):
    from attngrad.lm import LMExplainer

    model = tiny_llama if request.param == "llama" else tiny_gpt2
    return LMExplainer(model, tokenizer)


@pytest.fixture(scope="session")
def saved_llama(tmp_path_factory, tiny_llama, tokenizer):
    """:func:`tiny_llama` and its tokenizer saved as a model folder (for ``from_pretrained`` and the commands)."""
    return save_folder(tmp_path_factory.mktemp("tiny-llama"), tiny_llama, tokenizer)


def save_folder(folder, model, tokenizer):
    """``model`` and ``tokenizer`` saved into ``folder`` as a model folder; returns ``folder``."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
