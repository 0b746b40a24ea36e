"""Write a Detoxify-format checkpoint with random weights, and the local model files beside it.

For tests and benchmarks on machines that cannot download Detoxify's weights: the file has
the layout of Detoxify's releases (``config.arch.args``, ``config.dataset.args.classes`` with
the Jigsaw class names, ``state_dict`` of ``BertForSequenceClassification``), the folder has
``config.json`` for the base model (without the label count, as ``save_pretrained`` of
``bert-base-uncased`` writes it) and a WordPiece tokenizer trained here on the texts given.
Scores from random weights mean nothing; the shapes, the loading path and the cost of
inference are those of the real model.

    python -m lqo.processors.safety.toxicity_checkpoint DIR [--size original|tiny] [--corpus FILE…]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

# The Jigsaw toxic-comment classes in the order of Detoxify's `original` checkpoint.
ORIGINAL_CLASSES = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
CHECKPOINT_NAME = "toxicity.ckpt"
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# BERT-base, as bert-base-uncased's config.json (Detoxify `original`); `tiny` keeps the classes
# and the code path at a size tests load in well under a second.
SIZES = {
    "original": {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "intermediate_size": 3072},
    "tiny": {"vocab_size": 0, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64, "initializer_range": 0.3},
}
_DEFAULT_CORPUS = (
    "thanks for the help the router works again after the reset. you are an idiot and a clown. "
    "the meeting moved to thursday and the agenda is attached. shut up nobody asked for your stupid opinion. "
    "here is a summary of the quarterly report revenue grew while costs fell. i will find you and you will "
    "regret this. what a lovely photo of your garden. this code is garbage delete it. please hold the button "
    "for ten seconds then pair the device from the app settings. refunds are issued within five business days."
)


def build_vocab(texts: Iterable[str], size: int) -> dict[str, int]:
    """A WordPiece vocabulary learned from ``texts`` (lower-cased, BERT pre-tokenization), padded
    with ``[unusedN]`` entries to ``size`` when ``size`` is larger than what the texts yield."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=max(size, 200), special_tokens=list(SPECIAL), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    vocab = tokenizer.get_vocab()
    ordered = sorted(vocab, key=vocab.__getitem__)
    for n in range(size - len(ordered)):
        ordered.append(f"[unused{n}]")
    return {token: i for i, token in enumerate(ordered)}


def write_checkpoint(out_dir: str | Path, size: str = "tiny", corpus: Iterable[str] | None = None,
                     seed: int = 0, classifier_scale: float = 1.0) -> Path:
    """Write ``out_dir/toxicity.ckpt`` and the model files; returns the checkpoint's path.
    ``classifier_scale`` multiplies the random classifier weights (a tiny model's scores then
    spread over 0..1 instead of all sitting near 0.5)."""
    import torch
    import transformers

    if size not in SIZES:
        raise ValueError(f"size {size!r}: one of {', '.join(SIZES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dims = dict(SIZES[size])
    vocab = build_vocab(list(corpus) if corpus is not None else [_DEFAULT_CORPUS], dims["vocab_size"])
    dims["vocab_size"] = len(vocab)
    tokenizer = transformers.BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=512)
    tokenizer.save_pretrained(out)
    base = transformers.BertConfig(**dims)  # two labels, as the base model's own config.json has
    base.save_pretrained(out)
    torch.manual_seed(seed)
    config = transformers.BertConfig(**dims, num_labels=len(ORIGINAL_CLASSES))
    model = transformers.BertForSequenceClassification(config).eval()
    if classifier_scale != 1.0:
        with torch.no_grad():
            model.classifier.weight.mul_(classifier_scale)
    checkpoint = {
        "config": {
            "arch": {"args": {"model_type": "bert-base-uncased", "model_name": "BertForSequenceClassification",
                              "tokenizer_name": "BertTokenizer", "num_classes": len(ORIGINAL_CLASSES)}},
            "dataset": {"args": {"classes": list(ORIGINAL_CLASSES)}},
        },
        "state_dict": model.state_dict(),
    }
    path = out / CHECKPOINT_NAME
    torch.save(checkpoint, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lqo.processors.safety.toxicity_checkpoint",
                                     description="Write a Detoxify-format checkpoint with random weights.")
    parser.add_argument("out_dir")
    parser.add_argument("--size", choices=sorted(SIZES), default="original")
    parser.add_argument("--corpus", nargs="*", default=(), help="text files the tokenizer's vocabulary is learned on")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    corpus = [Path(f).read_text(encoding="utf-8", errors="replace") for f in args.corpus] or None
    path = write_checkpoint(args.out_dir, args.size, corpus, args.seed)
    print(f"wrote {path} and the model files in {path.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
