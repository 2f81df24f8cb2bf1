"""Text: sentences read from TSV files, a vocabulary built from the training split, and token ids.

A text dataset is a folder with ``train.tsv`` and a labelled ``test.tsv`` or ``dev.tsv`` (GLUE's SST-2 has no
public test labels, so its dev split is the test split); each line is ``label<TAB>sentence``, a first line
whose label field reads ``label`` is a header. Labels are any names (sorted numerically when they are all
whole numbers); sentences are lower-cased and split on white space, which is exactly SST-2's tokenisation.

The vocabulary is the training file's words, most frequent first (ties alphabetical), cut to
``vocab_size - 2``: id 0 pads, id 1 stands for every other word. It is a function of the training file alone, so
every command given the same ``--data`` rebuilds it identically, and exports carry it in their metadata.
Sentences are held as int32 ids ``[N, 1, 1, max_len]`` in the same :class:`supernet.data.ImageSet` as images and
audio, so batching, scoring and timing are shared.
"""
from __future__ import annotations

import collections
from pathlib import Path

import torch

from supernet.errors import UserError
from supernet.frontend import TokenConfig

PAD, UNKNOWN = 0, 1
TEST_FILES = ("test.tsv", "dev.tsv")

Lines = list[tuple[str, list[str]]]  # (label, words) of every sentence of a file


def is_text_folder(root: Path) -> bool:
    """Whether ``root`` holds a text dataset (a ``train.tsv``)."""
    return (root / "train.tsv").is_file()


def read_tsv(path: Path) -> Lines:
    """The ``(label, words)`` of every sentence of ``path``; a malformed line is one error naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    out: Lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        label, tab, sentence = line.partition("\t")
        if number == 1 and label.strip().lower() == "label":
            continue
        words = sentence.lower().split()
        if not tab or not label.strip() or not words:
            raise UserError(f"{path}:{number}: expected 'label<TAB>sentence', got {line[:60]!r}")
        out.append((label.strip(), words))
    if not out:
        raise UserError(f"{path} holds no sentences: expected lines of 'label<TAB>sentence'")
    return out


def vocabulary(lines: Lines, vocab_size: int) -> list[str]:
    """The ``vocab_size - 2`` most frequent words of ``lines`` (ties alphabetical), ids 2, 3, ... in order."""
    counts = collections.Counter(word for _, words in lines for word in words)
    return sorted(counts, key=lambda word: (-counts[word], word))[:vocab_size - 2]


def class_names(labels: set[str]) -> list[str]:
    """Label names in order: numerically when every one is a whole number (SST-2's 0 and 1), else as text."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def tokens(lines: Lines, vocab: list[str], max_len: int) -> torch.Tensor:
    """int32 ids ``[N, 1, 1, max_len]``: each sentence's first ``max_len`` words, padded with :data:`PAD`."""
    index = {word: i for i, word in enumerate(vocab, start=2)}
    out = torch.full((len(lines), max_len), PAD, dtype=torch.int32)
    for row, (_, words) in enumerate(lines):
        ids = [index.get(word, UNKNOWN) for word in words[:max_len]]
        out[row, :len(ids)] = torch.tensor(ids, dtype=torch.int32)
    return out.view(len(lines), 1, 1, max_len)


def encode_sentences(sentences: list[str], vocab: list[str], max_len: int) -> torch.Tensor:
    """Token ids of plain sentences, as a deployed text network takes them."""
    return tokens([("", sentence.lower().split()) for sentence in sentences], vocab, max_len)


Sentences = tuple[torch.Tensor, torch.Tensor]  # int32 ids [N, 1, 1, max_len], int64 labels [N]


def test_file(root: Path) -> Path:
    """The labelled test split of the text dataset at ``root``: ``test.tsv``, else ``dev.tsv``."""
    found = next((root / name for name in TEST_FILES if (root / name).is_file()), None)
    if found is None:
        raise UserError(f"text dataset {root} has train.tsv but no labelled test split: add test.tsv (or dev.tsv)")
    return found


def load_text(root: Path, config: TokenConfig) -> tuple[Sentences, Sentences, list[str], list[str]]:
    """The training and test sentences of the text dataset at ``root``, the class names and the vocabulary."""
    test_path = test_file(root)
    train, test = read_tsv(root / "train.tsv"), read_tsv(test_path)
    names = class_names({label for label, _ in train})
    index = {name: i for i, name in enumerate(names)}
    for number, (label, _) in enumerate(test, start=1):
        if label not in index:
            raise UserError(f"{test_path}: sentence {number} has label {label!r}, which no training sentence has "
                            f"(known: {', '.join(names[:10])})")
    vocab = vocabulary(train, config.vocab_size)

    def split(lines: Lines) -> Sentences:
        labels = torch.tensor([index[label] for label, _ in lines], dtype=torch.int64)
        return tokens(lines, vocab, config.max_len), labels

    return split(train), split(test), names, vocab


def dataset_vocabulary(root: str | Path, config: TokenConfig) -> list[str]:
    """The vocabulary a text space trained on ``root`` uses (for an export's metadata)."""
    return vocabulary(read_tsv(Path(root) / "train.tsv"), config.vocab_size)
