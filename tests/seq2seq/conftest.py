"""Tiny random encoder-decoder models (BART, T5, Marian; 2+2 layers, 2 heads, float64) and a tiny
word-level fast tokenizer, all built in the test (no weights are downloaded)."""

from __future__ import annotations

import pytest
import torch

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "in", "park", "and", "my", "car", "is", "red", "blue", "die", "katze", "sass", "auf", "der", "matte", "ein", "hund", "lief", "im", "mein", "auto", "ist", "rot"]
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
VOCAB = {w: i for i, w in enumerate(SPECIAL + WORDS)}


def tiny_tokenizer(template: str):
    """A fast word-level tokenizer; ``template`` is the post-processor (``"<s> $A </s>"`` BART, ``"$A </s>"`` T5)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(dict(VOCAB), unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single=template, special_tokens=[("<s>", 1), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def _bart_like(config_cls, model_cls, seed):
    torch.manual_seed(seed)
    config = config_cls(
        vocab_size=len(VOCAB), d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=2, init_std=0.3,
        forced_eos_token_id=None,
    )
    return model_cls(config).double().eval()


def make_model(kind: str):
    """``(model, tokenizer)`` for ``kind`` in ``bart``, ``t5``, ``marian``."""
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        MarianConfig,
        MarianMTModel,
        T5Config,
        T5ForConditionalGeneration,
    )

    if kind == "bart":
        return _bart_like(BartConfig, BartForConditionalGeneration, 0), tiny_tokenizer("<s> $A </s>")
    if kind == "marian":
        model = _bart_like(MarianConfig, MarianMTModel, 2)
        model.config.decoder_start_token_id = 0  # Marian starts the decoder with the padding token
        return model, tiny_tokenizer("$A </s>")
    if kind == "t5":
        torch.manual_seed(1)
        config = T5Config(
            vocab_size=len(VOCAB), d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=2,
            pad_token_id=0, eos_token_id=2, decoder_start_token_id=0, initializer_factor=3.0,
            relative_attention_num_buckets=8,
        )
        return T5ForConditionalGeneration(config).double().eval(), tiny_tokenizer("$A </s>")
    raise ValueError(kind)


@pytest.fixture(scope="session", params=["bart", "t5", "marian"])
def seq2seq(request):
    """``(kind, model, tokenizer)`` for each tiny family."""
    return (request.param, *make_model(request.param))


def tiny_slow_tokenizer():
    """A slow (Python) word tokenizer in the manner of Marian's sentencepiece one: pieces ``▁word``,
    every word split after its third letter (``▁kat`` + ``ze``), ``</s>`` appended; no offsets."""
    from transformers import PreTrainedTokenizer

    pieces = [f"▁{w}" for w in WORDS] + [f"▁{w[:3]}" for w in WORDS if len(w) > 3] + [w[3:] for w in WORDS if len(w) > 3]
    vocab = {p: i for i, p in enumerate(dict.fromkeys(SPECIAL + pieces))}

    class SlowWords(PreTrainedTokenizer):
        def __init__(self, **kwargs):
            self.vocab = vocab
            self.inverse = {i: p for p, i in vocab.items()}
            super().__init__(pad_token="<pad>", eos_token="</s>", unk_token="<unk>", special_tokens_pattern="eos", **kwargs)

        @property
        def vocab_size(self):
            return len(self.vocab)

        def get_vocab(self):
            return dict(self.vocab)

        def _tokenize(self, text, **kwargs):
            out = []
            for word in text.split():
                out += [f"▁{word[:3]}", word[3:]] if len(word) > 3 else [f"▁{word}"]
            return out

        def _convert_token_to_id(self, token):
            return self.vocab.get(token, self.vocab["<unk>"])

        def _convert_id_to_token(self, index):
            return self.inverse.get(index, "<unk>")

        def convert_tokens_to_string(self, tokens):
            return "".join(tokens).replace("▁", " ").strip()

    return SlowWords()
