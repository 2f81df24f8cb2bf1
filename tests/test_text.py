"""Text input: TSV reading with one-line refusals, the vocabulary, token ids through batching, and the elastic
transformer's masking (a sentence's logits do not depend on its padding) on the supernet and extracted subnets."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from supernet import family
from supernet.data import batches, load_splits, to_float
from supernet.errors import UserError
from supernet.frontend import TokenConfig
from supernet.text import PAD, UNKNOWN, encode_sentences, read_tsv, tokens, vocabulary
from tests.conftest import FSDD, NO_SST2, SST2, make_sst2_slice

TOKENS = TokenConfig(vocab_size=50, max_len=8)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_skips_a_header_and_refuses_malformed_lines_naming_file_and_line(tmp_path: Path) -> None:
    good = write(tmp_path / "a.tsv", "label\tsentence\n1\tA Fine film\n0\tdull .\n")
    assert read_tsv(good) == [("1", ["a", "fine", "film"]), ("0", ["dull", "."])]
    for text, line in (("1\tok\nno tab here\n", 2), ("1\tok\n0\t   \n", 2), ("\tno label\n", 1)):
        with pytest.raises(UserError, match=rf"b.tsv:{line}: expected 'label<TAB>sentence'"):
            read_tsv(write(tmp_path / "b.tsv", text))
    (tmp_path / "c.tsv").write_bytes(b"1\t\xff\xfe bad\n")
    with pytest.raises(UserError, match="c.tsv is not UTF-8"):
        read_tsv(tmp_path / "c.tsv")
    with pytest.raises(UserError, match="holds no sentences"):
        read_tsv(write(tmp_path / "d.tsv", "label\tsentence\n"))


def test_vocabulary_is_most_frequent_first_and_ids_pad_and_cut() -> None:
    lines = [("1", "b a a c".split()), ("0", "c a d".split())]
    assert vocabulary(lines, 5) == ["a", "c", "b"]  # a x3, c x2, then b before d (ties alphabetical), cut at 5 - 2
    ids = tokens([("1", "a b z".split()), ("0", "c c c c c c c c c c".split())], ["a", "c", "b"], 4)
    assert ids.dtype == torch.int32 and ids.shape == (2, 1, 1, 4)
    assert ids[0, 0, 0].tolist() == [2, 4, UNKNOWN, PAD] and ids[1, 0, 0].tolist() == [3, 3, 3, 3]
    assert encode_sentences(["A b"], ["a", "c", "b"], 3)[0, 0, 0].tolist() == [2, 4, PAD]


def test_a_text_folder_loads_as_token_ids_and_is_never_flipped_or_cropped(tmp_path: Path) -> None:
    root = tmp_path / "text"
    root.mkdir()
    write(root / "train.tsv", "".join(f"{i % 3}\tword{i} common words here\n" for i in range(30)))
    write(root / "test.tsv", "label\tsentence\n2\tcommon words\n0\tunseen words\n")
    splits = load_splits(root, channels=1, size=8, val_size=6, text=TOKENS)
    assert splits.classes == ("0", "1", "2") and len(splits.train) == 24 and len(splits.val) == 6
    assert splits.test.images.shape == (2, 1, 1, 8) and splits.test.labels.tolist() == [2, 0]
    x = to_float(splits.test.images)
    assert x.dtype == torch.float32 and torch.equal(x.long(), splits.test.images.long())
    (got, _), = list(batches(splits.test, 4, flip_seed=1))
    assert torch.equal(got, x)
    with pytest.raises(UserError, match="this dataset is text"):
        next(batches(splits.test, 4, crop_padding=2, crop_seed=0))
    write(root / "test.tsv", "7\tcommon words\n")
    with pytest.raises(UserError, match="test.tsv: sentence 1 has label '7', which no training sentence has"):
        load_splits(root, channels=1, size=8, val_size=6, text=TOKENS)
    (root / "test.tsv").unlink()
    with pytest.raises(UserError, match="no labelled test split"):
        load_splits(root, channels=1, size=8, val_size=6, text=TOKENS)


def test_text_and_other_data_are_refused_by_the_other_kind_of_space(tmp_path: Path) -> None:
    root = make_sst2_slice(tmp_path / "sst2", 40, 10) if SST2.is_dir() else None
    if root is None:
        pytest.skip(NO_SST2)
    with pytest.raises(UserError, match="holds text .* train a text space"):
        load_splits(root, channels=1, size=28, val_size=5)
    with pytest.raises(UserError, match="no text dataset in"):
        load_splits(FSDD if FSDD.is_dir() else tmp_path, channels=1, size=8, val_size=5, text=TOKENS)


@pytest.mark.skipif(not SST2.is_dir(), reason=NO_SST2)
def test_sst2_dev_is_the_test_split_with_the_training_vocabulary(tmp_path: Path) -> None:
    config = family.get_space("tfm-sst2").config
    splits = load_splits(make_sst2_slice(tmp_path / "sst2", 500, 100), **family.data_format(config), val_size=100)
    assert splits.classes == ("0", "1") and len(splits.test) == 100 and len(splits.train) == 400
    assert splits.train.images.shape[1:] == (1, 1, 64) and int(splits.train.images.max()) < config.tokens.vocab_size
    known = (splits.test.images > UNKNOWN).sum() / (splits.test.images != PAD).sum()
    assert 0.5 < float(known) < 1.0  # dev words unseen in 500 training phrases are unknown, most are not


def test_logits_do_not_depend_on_padding_and_extracted_subnets_agree() -> None:
    config = family.get_space("tfm-sst2").config
    supernet = family.build_supernet(config).eval()
    space = supernet.space
    generator = torch.Generator().manual_seed(0)
    short = torch.zeros(3, 1, 1, 64)
    for row, length in enumerate((3, 10, 40)):
        short[row, 0, 0, :length] = torch.randint(2, config.tokens.vocab_size, (length,), generator=generator).float()
    rng = random.Random(0)
    for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(3)]:
        supernet.set_active(arch)
        subnet = supernet.extract().eval()
        with torch.no_grad():
            together = supernet(short)
            alone = torch.cat([supernet(short[i:i + 1]) for i in range(3)])  # trimmed to each sentence's length
            torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(subnet(short), together, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(subnet(short.view(3, 64).long()), together, atol=1e-5, rtol=1e-5)


def test_gradients_reach_only_the_active_slices() -> None:
    config = family.get_space("tfm-sst2").config
    supernet = family.build_supernet(config).train()
    space = supernet.space
    arch = space.parse("e64|h1f128")
    supernet.set_active(arch)
    x = torch.randint(2, 100, (4, 1, 1, 64)).float()
    supernet(x).sum().backward()
    layer = supernet.stages[0]
    assert layer.fc1.weight.grad[:128, :64].abs().sum() > 0 and layer.fc1.weight.grad[128:].abs().sum() == 0
    assert layer.q.weight.grad[32:].abs().sum() == 0 and layer.q.weight.grad[:, 64:].abs().sum() == 0
    assert supernet.stages[1].fc1.weight.grad is None  # a layer beyond the depth does not run
    assert supernet.embed.token.weight.grad[:, 64:].abs().sum() == 0


def test_space_strings_codes_and_modes() -> None:
    space = family.get_space("tfm-sst2")
    arch = space.parse("e96|h4f512-h1f128")
    assert arch["embed"] == 96 and arch["layers"] == 2 and arch["layer3.heads"] == 1
    assert space.from_codes(space.to_codes(arch)) == arch
    layout = space.layout()
    assert (layout.groups, layout.modes, layout.mode_choices, layout.split) == (1, 3, 9, 3)
    assert space.size() == 3 * sum(9 ** d for d in (1, 2, 3, 4))
    codes = space.to_codes(space.parse("e64|h1f128-h1f128"))
    codes[3] += 3  # the second layer's first digit moved into the next mode
    with pytest.raises(UserError, match="layer 2 is of another embedding width"):
        space.from_codes(codes)
    for bad, match in (("h4f512", "must start with the embedding width"), ("e96|h4x512", "is not of the form"),
                       ("e96|" + "-".join(["h1f128"] * 5), "has 5 layers"), ("e80|h1f128", "embed=80")):
        with pytest.raises(UserError, match=match):
            space.parse(bad)


def test_kept_weight_views_follow_updates_moves_and_loads_and_a_full_batch_equals_the_plain_model() -> None:
    config = family.get_space("tfm-sst2").config
    supernet = family.build_supernet(config).eval()
    arch = supernet.space.parse("e96|h2f256-h4f512")
    supernet.set_active(arch)
    x = torch.randint(2, config.tokens.vocab_size, (12, 1, 1, 64), generator=torch.Generator().manual_seed(1)).float()
    with torch.no_grad():  # 12 full sentences at width 96: the residual GEMM that accumulates onto x runs
        before = supernet(x)
        torch.testing.assert_close(supernet.extract()(x), before, atol=1e-5, rtol=1e-5)
        supernet.stages[1].fc2.weight.mul_(2.0)  # an in-place update, as an optimizer's step
        updated = supernet(x)
        assert not torch.allclose(updated, before)
        torch.testing.assert_close(supernet.extract()(x), updated, atol=1e-5, rtol=1e-5)
        supernet.set_active(supernet.space.parse("e96|h2f256"))
        torch.testing.assert_close(supernet(x), supernet.extract()(x), atol=1e-5, rtol=1e-5)
        supernet.set_active(arch)
        torch.testing.assert_close(supernet(x), updated)
        supernet.double()  # new parameter tensors: the kept views must not point at the old ones
        torch.testing.assert_close(supernet(x.double()), updated.double(), atol=1e-5, rtol=1e-5)
        fresh = family.build_supernet(config).double()
        supernet.load_state_dict(fresh.state_dict(), assign=True)
        fresh.set_active(arch)
        torch.testing.assert_close(supernet(x.double()), fresh.eval()(x.double()))


def test_training_drops_out_on_the_residual_branches_under_torch_manual_seed() -> None:
    config = family.get_space("tfm-sst2").config
    supernet = family.build_supernet(config).train()
    supernet.set_active(supernet.space.parse("e64|h1f128"))
    x = torch.randint(2, 100, (4, 1, 1, 64)).float()
    torch.manual_seed(0)
    first = supernet(x)
    torch.manual_seed(0)
    assert torch.equal(supernet(x), first) and not torch.equal(supernet(x), first)
    with torch.no_grad():
        assert not torch.allclose(supernet.eval()(x), first)
