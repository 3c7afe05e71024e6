"""pipeline/core/data.py: the batched shift crop, the augmentations, the shrink and the batches."""
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core.data import Augment, Part, augment, batches, shift_crop, shrink

OFF = Augment(flip=False, shift=0.0, brightness=0.0, contrast=0.0)


def test_shift_crop_takes_each_image_at_its_own_offset():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    got = shift_crop(x, dx=torch.tensor([0, 2]), dy=torch.tensor([1, 0]), s=2)
    # image 0: rows 1-2, cols 0-1; image 1: rows 0-1, cols 2-3 (values written out by hand)
    assert got.tolist() == [[[[4.0, 5.0], [8.0, 9.0]]], [[[18.0, 19.0], [22.0, 23.0]]]]


def test_shift_crop_equals_a_slice_per_image_on_a_real_batch():
    g = torch.Generator().manual_seed(0)
    padded = torch.randn(16, 3, 44, 44, generator=g)
    dx, dy = torch.randint(0, 13, (2, 16), generator=g)
    want = torch.stack([padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(16)])
    assert torch.equal(shift_crop(padded, dx, dy, 32), want)


def test_shrink_averages_pixels_down_and_leaves_the_full_size_alone():
    x = torch.zeros(2, 3, 8, 8)
    x[:, :, :, 4:] = 1.0                                   # left half dark, right half bright
    small = shrink(x, 4)
    assert small.shape == (2, 3, 4, 4)
    # each output pixel averages its neighbourhood (a triangle filter: not one sampled pixel)
    assert small[0, 0, 0].tolist() == pytest.approx([0.0, 0.125, 0.875, 1.0])
    assert torch.allclose(shrink(torch.ones(1, 3, 8, 8) * 0.3, 2), torch.tensor(0.3))   # antialiased: means kept
    assert shrink(x, 0) is x and shrink(x, 8) is x
    with pytest.raises(ValueError, match="larger than the batch"):
        shrink(x, 16)                                       # never an upscale


def test_augment_off_is_the_identity_and_flip_mirrors_whole_images():
    x = torch.randn(8, 3, 16, 16)
    assert torch.equal(augment(x, OFF, torch.Generator().manual_seed(0)), x)
    out = augment(x, Augment(True, 0.0, 0.0, 0.0), torch.Generator().manual_seed(1))
    for a, b in zip(out, x, strict=True):
        assert torch.equal(a, b) or torch.equal(a, b.flip(2))
    assert any(not torch.equal(a, b) for a, b in zip(out, x, strict=True)) and any(
        torch.equal(a, b) for a, b in zip(out, x, strict=True))


def test_shift_moves_content_within_the_reflect_padding_and_keeps_the_shape():
    x = torch.zeros(32, 3, 20, 20)
    x[:, :, 10, 10] = 1.0                                   # one bright pixel in the middle
    out = augment(x, Augment(False, 0.1, 0.0, 0.0), torch.Generator().manual_seed(0))   # pad = 2 px
    assert out.shape == x.shape
    where = [tuple(torch.nonzero(o[0])[0].tolist()) for o in out]
    assert all(abs(r - 10) <= 2 and abs(c - 10) <= 2 for r, c in where)
    assert len(set(where)) > 5                              # different offsets for different images


def test_batches_cover_the_part_once_and_shuffle_with_a_generator():
    n = 10
    meta = pd.DataFrame({"filename": [f"{i}" for i in range(n)], "gender": ["f"] * n, "group": ["asian"] * n,
                         "rating": np.arange(n, dtype=float)})
    part = Part(np.arange(n, dtype=np.uint8).repeat(4 * 4 * 3).reshape(n, 4, 4, 3), meta)
    plain = [idx.tolist() for idx, _ in batches(part, 4)]
    assert plain == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    shuffled = [(idx, x) for idx, x in batches(part, 4, torch.Generator().manual_seed(0))]
    order = [i for idx, _ in shuffled for i in idx.tolist()]
    assert sorted(order) == list(range(n)) and order != list(range(n))
    for idx, x in shuffled:                                 # each tensor row is the indexed image
        assert x.shape == (len(idx), 3, 4, 4)
        expected = (idx.float() / 255 - 0.5) / 0.5
        torch.testing.assert_close(x[:, 0, 0, 0], expected)


def test_split_lists_keep_names_with_spaces_whole(tmp_path):
    """MEBeauty has file names with spaces ('photo (1).jpg'): a list split on whitespace lost them."""
    from pipeline.core.data import read_names

    (tmp_path / "test.txt").write_text("mebeauty/female/asian/a (1).jpg\nscut/ftw1.jpg\n")
    assert read_names(tmp_path / "test.txt") == ["mebeauty/female/asian/a (1).jpg", "scut/ftw1.jpg"]
