"""Shared fixtures."""

import pytest
import torch

from language import BABYAI_VOCAB


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory) -> str:
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("tiny_distilbert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", *BABYAI_VOCAB[2:]]
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(words) + "\n")
    # Positional path: the vocab file in transformers 4.x and 5.x alike.
    tokenizer = transformers.DistilBertTokenizerFast(str(vocab_file))
    assert tokenizer.unk_token_id not in tokenizer("go to the red ball, then open a door")["input_ids"]
    config = transformers.DistilBertConfig(
        vocab_size=len(words),
        dim=32,
        n_layers=1,
        n_heads=2,
        hidden_dim=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.DistilBertModel(config)
    tokenizer.save_pretrained(str(path))
    model.save_pretrained(str(path))
    return str(path)
