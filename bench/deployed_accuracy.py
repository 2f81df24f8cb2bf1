"""Accuracy of an exported TorchScript subnet on the raw test split, as a deployment would feed it.

    python bench/deployed_accuracy.py runs/sst2/winner.pt --data ../shared/data/sst2
    python bench/deployed_accuracy.py runs/fsdd/winner.pt --data ../shared/data/fsdd

Nothing of the training pipeline runs: sentences are turned into ids with the vocabulary the file's metadata
carries (``supernet.text.encode_sentences``), recordings are read as 16-bit samples scaled to [-1, 1] (the
log-mel front end is inside the file). Prints how many of the test split the file classifies right.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search.export import read_metadata  # noqa: E402
from supernet.audio import load_audio  # noqa: E402
from supernet.family import audio_frontend, get_space  # noqa: E402
from supernet.errors import UserError, run_cli  # noqa: E402
from supernet.text import class_names, encode_sentences, is_text_folder, read_tsv, test_file  # noqa: E402


def text_split(root: Path, metadata: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids ``[N, max_len]`` of the labelled test sentences and their labels (classes as training names them)."""
    if not is_text_folder(root):
        raise UserError(f"{root} holds no train.tsv: pass the text dataset the supernet was trained on")
    lines = read_tsv(test_file(root))
    names = class_names({label for label, _ in read_tsv(root / "train.tsv")})
    ids = encode_sentences([" ".join(words) for _, words in lines], metadata["input"]["vocabulary"],
                           metadata["input"]["max_len"])
    return ids.view(len(lines), -1), torch.tensor([names.index(label) for label, _ in lines])


def audio_split(root: Path, metadata: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw test clips ``[N, samples]`` in [-1, 1] and their labels."""
    frontend = audio_frontend(get_space(metadata["space"]).config)
    _, (clips, labels), _ = load_audio(root, frontend)
    return clips.view(len(labels), -1).float() / 32768.0, labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a TorchScript file written by search.export")
    parser.add_argument("--data", type=Path, required=True, help="the dataset folder the supernet was trained on")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    metadata = read_metadata(args.model)
    kind = metadata["input"].get("kind")
    if kind not in ("text", "audio"):
        raise UserError(f"{args.model} takes images; this script scores exported text and audio subnets")
    x, y = (text_split if kind == "text" else audio_split)(args.data, metadata)
    model = torch.jit.load(str(args.model))
    with torch.no_grad():
        predicted = torch.cat([model(batch.float()).argmax(1) for batch in x.split(args.batch_size)])
    right = int((predicted == y).sum())
    print(f"{args.model}: {right} of {len(y)} test {'sentences' if kind == 'text' else 'recordings'} right "
          f"({100 * right / len(y):.1f}%)")


if __name__ == "__main__":
    run_cli(main)
