import pytest
import torch

from adlkit.synth import cutmix, cutpaste, derangement, rectangles

AREA = (0.02, 0.15)


def _images(b=6, size=48, seed=0):
    """Random noise: any patch of it occurs once, so a pasted patch can be traced to its source."""
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _box(mask):
    """(top, left, h, w) of a rectangular mask [1, H, W]; asserts it is one filled rectangle."""
    rows = mask[0].any(1).nonzero()[:, 0]
    cols = mask[0].any(0).nonzero()[:, 0]
    top, left, h, w = int(rows[0]), int(cols[0]), len(rows), len(cols)
    assert int(rows[-1]) - top + 1 == h and int(cols[-1]) - left + 1 == w
    assert mask.sum() == h * w  # filled, one rectangle
    return top, left, h, w


def _area_ok(h, w, size, area=AREA):
    slack = 0.5 * (h + w) + 0.25  # rounding h and w to whole pixels
    return area[0] * size * size - slack <= h * w <= area[1] * size * size + slack


def _sources(patch, image):
    """Top-left corners (y, x) where ``patch`` [C, h, w] occurs exactly in ``image`` [C, H, W]."""
    c, h, w = patch.shape
    windows = image.unfold(1, h, 1).unfold(2, w, 1)  # [C, H-h+1, W-w+1, h, w]
    hit = (windows == patch[:, None, None]).flatten(3).all(-1).all(0)
    return [tuple(p) for p in hit.nonzero().tolist()]


@pytest.mark.parametrize("fn", [cutmix, cutpaste])
def test_shapes_dtypes_and_unchanged_outside(fn):
    x = _images()
    out, masks = fn(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert masks.shape == (6, 1, 48, 48) and masks.dtype == x.dtype
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(out * (1 - masks), x * (1 - masks))
    assert 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("fn", [cutmix, cutpaste])
def test_masks_are_rectangles_in_the_area_range(fn):
    x = _images(b=32, size=64)
    _, masks = fn(x, torch.Generator().manual_seed(2))
    for m in masks:
        _, _, h, w = _box(m)
        assert _area_ok(h, w, 64), (h, w)


def test_rectangle_sizes_follow_area_and_aspect():
    h, w = rectangles(2000, 128, 128, torch.Generator().manual_seed(0))
    frac = (h * w).float() / 128**2
    assert frac.min() > 0.018 and frac.max() < 0.16
    ratio = w.float() / h.float()
    assert ratio.min() > 0.25 and ratio.max() < 3.8
    assert abs(torch.log(ratio).median()) < 0.1  # log-uniform aspect: as many wide as tall
    h, w = rectangles(200, 64, 32, torch.Generator().manual_seed(0), area=(0.1, 0.1), aspect=(1.0, 1.0))
    assert torch.all((h * w - 0.1 * 64 * 32).abs() <= 0.5 * (h + w) + 0.25) and torch.all((h - w).abs() <= 1)


def test_cutmix_patch_comes_from_another_image_same_place():
    x = _images(b=8)
    out, masks = cutmix(x, torch.Generator().manual_seed(3))
    for b in range(8):
        top, left, h, w = _box(masks[b])
        patch = out[b, :, top:top + h, left:left + w]
        donors = [j for j in range(8) if torch.equal(patch, x[j, :, top:top + h, left:left + w])]
        assert len(donors) == 1 and donors[0] != b


def test_cutpaste_patch_comes_from_the_same_image():
    x = _images(b=8)
    out, masks = cutpaste(x, torch.Generator().manual_seed(4), jitter=0)
    for b in range(8):
        top, left, h, w = _box(masks[b])
        patch = out[b, :, top:top + h, left:left + w]
        assert _sources(patch, x[b]), f"sample {b}: pasted patch not found in its own image"
        assert not any(_sources(patch, x[j]) for j in range(8) if j != b)


def test_cutpaste_jitter_changes_colours_a_little():
    x = _images(b=8)
    out, masks = cutpaste(x, torch.Generator().manual_seed(4), jitter=0.1)
    plain, same_masks = cutpaste(x, torch.Generator().manual_seed(4), jitter=0)
    assert torch.equal(masks, same_masks)  # the jitter draws come after the boxes: same places
    inside = masks.bool().expand_as(x)
    diff = (out - plain)[inside]
    assert diff.abs().max() > 0.005 and diff.abs().mean() < 0.2
    assert torch.equal(out[~inside], x[~inside])


@pytest.mark.parametrize("fn", [cutmix, cutpaste])
def test_seeded_reproducible_and_seeds_differ(fn):
    x = _images()
    a = fn(x, torch.Generator().manual_seed(7))
    b = fn(x, torch.Generator().manual_seed(7))
    c = fn(x, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_derangement_has_no_fixed_points():
    for n in (2, 3, 5, 16):
        for seed in range(5):
            p = derangement(n, torch.Generator().manual_seed(seed))
            assert sorted(p.tolist()) == list(range(n)) and not (p == torch.arange(n)).any()
    assert derangement(1).tolist() == [0]


def test_cutmix_single_image_is_unchanged():
    x = _images(b=1)
    out, masks = cutmix(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, x) and masks.sum() == 0


@pytest.mark.parametrize("kwargs,match", [
    ({"area": (0.2, 0.1)}, "0 < lo <= hi <= 1"),
    ({"area": (0.0, 0.1)}, "0 < lo <= hi <= 1"),
    ({"aspect": (0.0, 3.0)}, "width/height"),
])
@pytest.mark.parametrize("fn", [cutmix, cutpaste])
def test_bad_arguments(fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fn(_images(), **kwargs)


@pytest.mark.parametrize("fn", [cutmix, cutpaste])
def test_uint8_images_are_refused(fn):
    with pytest.raises(ValueError, match=r"float\(\) / 255"):
        fn((_images() * 255).to(torch.uint8))


def test_cutpaste_jitter_needs_rgb():
    with pytest.raises(ValueError, match="jitter=0"):
        cutpaste(torch.rand(2, 1, 32, 32))
    out, masks = cutpaste(torch.rand(2, 1, 32, 32), jitter=0)
    assert out.shape == (2, 1, 32, 32) and masks.sum() > 0
