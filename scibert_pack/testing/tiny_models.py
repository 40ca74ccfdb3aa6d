"""Tiny BERT-family sequence classifiers, built offline in a few hundred KB for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

Family = Literal["bert", "roberta", "distilbert"]
LABELS = {0: "biology", 1: "chemistry", 2: "physics"}

CORPUS = [
    "risk assessment implications of site-specific oral relative bioavailability .",
    "the protein folds into a stable structure inside the cell membrane .",
    "gene expression in mice changes after the drug is given orally .",
    "the catalyst speeds up the reaction between the acid and the base .",
    "a solvent dissolves the salt and the molecule binds to the metal .",
    "the electron beam scatters from the crystal lattice at low temperature .",
    "quantum states of the photon decay in the magnetic field .",
    "energy and momentum are conserved when the particles collide .",
    "cells divide and the tissue grows under the microscope .",
    "polymer chains form bonds when the mixture is heated .",
]


def _word_vocab() -> list[str]:
    words = sorted({w for line in CORPUS for w in line.split()})
    pieces = ["##s", "##ing", "##ed", "##ly", "##ity", "##al", "##ic", "##ation"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [
        f"##{chr(c)}" for c in range(97, 123)
    ]
    digits = [str(d) for d in range(10)]
    punct = list(".,;:!?-'\"()[]{}%/")
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    seen: dict[str, None] = {}
    for tok in special + words + pieces + letters + digits + punct:
        seen.setdefault(tok, None)
    return list(seen)


def _bert_tokenizer(folder: Path) -> object:
    from tokenizers import decoders, normalizers
    from transformers import BertTokenizerFast

    vocab = {tok: i for i, tok in enumerate(_word_vocab())}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        do_lower_case=True,
        model_max_length=64,
    )


def _roberta_tokenizer(folder: Path) -> object:
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 5, trainer=trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=64,
    )


# Labels with non-ASCII characters, for messages that list the labels.
FRENCH_LABELS = {0: "chimie", 1: "médecine", 2: "physique"}


def make_tiny_classifier(
    folder: Path,
    family: Family = "bert",
    *,
    seed: int = 0,
    labels: dict[int, str] | None = None,
) -> Path:
    """Save a tiny randomly initialised `*ForSequenceClassification` with its tokenizer."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    id2label = dict(labels or LABELS)
    label2id = {v: k for k, v in id2label.items()}
    common = {"num_labels": len(id2label), "id2label": id2label, "label2id": label2id}
    if family == "roberta":
        tokenizer = _roberta_tokenizer(folder)
        config = RobertaConfig(
            vocab_size=len(tokenizer),  # type: ignore[arg-type]
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=66,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            **common,
        )
        model: torch.nn.Module = RobertaForSequenceClassification(config)
    else:
        tokenizer = _bert_tokenizer(folder)
        if family == "distilbert":
            config = DistilBertConfig(
                vocab_size=len(tokenizer),  # type: ignore[arg-type]
                dim=32,
                n_layers=2,
                n_heads=2,
                hidden_dim=64,
                max_position_embeddings=64,
                **common,
            )
            model = DistilBertForSequenceClassification(config)
        else:
            config = BertConfig(
                vocab_size=len(tokenizer),  # type: ignore[arg-type]
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=64,
                **common,
            )
            model = BertForSequenceClassification(config)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)  # type: ignore[operator]
    tokenizer.save_pretrained(folder)  # type: ignore[attr-defined]
    return folder
