"""The Hugging Face `tokenizers` tokenizer of text data, trained on the training split only:
shared by labelled text (data/text.py) and a corpus (data/corpus.py)."""

from __future__ import annotations

from deeprig.data.info import DataProblem
from deeprig.spec.data import TokenizerSpec

PAD, UNKNOWN = "[PAD]", "[UNK]"  # ids 0 and 1: padding is id 0 (the models mask it)


def text_column(table, name: str):
    """The table's column `name`, checked to hold some text."""
    import pyarrow as pa

    texts = table.column(name)
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise DataProblem("data.text", f"column {name!r} holds {texts.type}, not text")
    if texts.null_count == len(texts):
        raise DataProblem("data.text", f"column {name!r} is empty")
    return texts


def train_tokenizer(
    texts: list[str], spec: TokenizerSpec, fixed_length: bool = True, ends: str | None = None
):
    """A word-level, BPE or byte-level BPE tokenizer learned from `texts`; `fixed_length`:
    padding and truncating to max_length; `ends`: a special token that ends a text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    special = [PAD, UNKNOWN] + ([ends] if ends else [])
    if spec.kind == "byte_bpe":  # every byte a token to start from: nothing is unknown
        tokenizer = Tokenizer(models.BPE())
        trainer: object = trainers.BpeTrainer(
            vocab_size=spec.vocab_size,
            min_frequency=spec.min_frequency,
            special_tokens=special,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    elif spec.kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=UNKNOWN))
        trainer = trainers.BpeTrainer(
            vocab_size=spec.vocab_size,
            min_frequency=spec.min_frequency,
            special_tokens=special,
            show_progress=False,
        )
    else:
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNKNOWN))
        trainer = trainers.WordLevelTrainer(
            vocab_size=spec.vocab_size,
            min_frequency=spec.min_frequency,
            special_tokens=special,
            show_progress=False,
        )
    if spec.lowercase:
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
        )
    if spec.kind == "byte_bpe":
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, trainer=trainer)  # type: ignore[arg-type]
    if fixed_length:
        tokenizer.enable_padding(pad_id=0, pad_token=PAD, length=spec.max_length)
        tokenizer.enable_truncation(max_length=spec.max_length)
    return tokenizer
