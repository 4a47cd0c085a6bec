import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adlkit.synth import (
    AUGMENTATIONS,
    PseudoAnomaly,
    augment_sources,
    blend,
    builtin_sources,
    elastic_anomalies,
    fade,
    histograms,
    load_texture_sources,
    perlin_masks,
    perlin_noise,
    sample_beta,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_perlin import rand_perlin_2d_np  # noqa: E402  DRAEM's NumPy formulation

DTD = os.environ.get("ADLKIT_TEXTURES", "").strip()  # a folder of real textures (DTD), when you have one


def test_fade_endpoints_and_derivatives():
    t = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(fade(t), torch.tensor([0.0, 0.5, 1.0]))
    eps = 1e-3
    for x in (0.0, 1.0):  # first derivative vanishes at the lattice points
        d = (fade(torch.tensor(x + eps, dtype=torch.float64)) - fade(torch.tensor(x - eps, dtype=torch.float64))) / (2 * eps)
        assert abs(float(d)) < 1e-4  # f'(t) = 30 t^2 (t - 1)^2 ~ 30 eps^2 here


def test_equals_draems_numpy_formulation_when_divisible():
    g = torch.Generator().manual_seed(0)
    ours = perlin_noise(1, 64, 128, res=(4, 8), generator=g)[0].numpy()
    g = torch.Generator().manual_seed(0)
    theta = (2 * math.pi * torch.rand((1, 9, 9), generator=g))[0, :5, :9].numpy()

    class FixedAngles:  # feeds DRAEM's function the same gradient angles
        def random(self, shape):
            assert shape == theta.shape
            return theta / (2 * math.pi)

    ref = rand_perlin_2d_np((64, 128), (4, 8), FixedAngles())
    assert np.abs(ours - ref).max() < 1e-5


@pytest.mark.parametrize("h,w", [(250, 333), (17, 5), (256, 256)])
def test_any_size_shapes_dtype_range(h, w):
    n = perlin_noise(6, h, w, generator=torch.Generator().manual_seed(1))
    assert n.shape == (6, h, w) and n.dtype == torch.float32
    assert torch.isfinite(n).all() and n.abs().max() <= math.sqrt(2) / 2 * math.sqrt(2) + 1e-4  # |n| <= 1 for 2-D Perlin
    m = perlin_masks(6, h, w, generator=torch.Generator().manual_seed(1))
    assert m.masks.shape == (6, 1, h, w) and set(m.masks.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("r", [1, 2, 4, 8, 16, 32])
def test_no_nan_for_any_resolution(r):
    n = perlin_noise(2, 100, 70, res=(r, 32 // r), octaves=2, generator=torch.Generator().manual_seed(r))
    assert torch.isfinite(n).all()


def test_octaves_add_finer_noise_at_falling_amplitude():
    one = perlin_noise(3, 64, 64, res=2, generator=torch.Generator().manual_seed(0))
    two = perlin_noise(3, 64, 64, res=2, octaves=2, persistence=0.5, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    base = perlin_noise(3, 64, 64, res=2, generator=g)
    finer = perlin_noise(3, 64, 64, res=4, generator=g)  # the next draws from the same generator
    assert torch.equal(base, one) and torch.allclose(two, base + 0.5 * finer, atol=1e-6)
    with pytest.raises(ValueError, match="octaves"):
        perlin_noise(1, 8, 8, octaves=0)


def test_same_generator_same_output_other_seed_other_output():
    a = perlin_masks(4, 64, 64, generator=torch.Generator().manual_seed(3))
    b = perlin_masks(4, 64, 64, generator=torch.Generator().manual_seed(3))
    c = perlin_masks(4, 64, 64, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.noise, b.noise) and torch.equal(a.masks, b.masks) and torch.equal(a.res, b.res)
    assert not torch.equal(a.noise, c.noise)


def test_default_resolutions_are_powers_of_two_up_to_32():
    m = perlin_masks(400, 32, 32, generator=torch.Generator().manual_seed(0))
    assert set(m.res.flatten().tolist()) == {1, 2, 4, 8, 16, 32}


# Measured on 4 x 512 masks of 128 px without rotation: about 5.5% of pixels exceed 0.5 at every
# lattice resolution; res 1 leaves ~59% of masks empty, res 2 ~15%, res >= 4 none.
@pytest.mark.parametrize("r,coverage,empty", [(1, 0.053, (0.50, 0.68)), (2, 0.054, (0.08, 0.25)),
                                              (4, 0.055, (0.0, 0.01)), (32, 0.051, (0.0, 0.01))])
def test_mask_coverage_per_resolution(r, coverage, empty):
    m = perlin_masks(1024, 128, 128, res=r, rotate_degrees=0, generator=torch.Generator().manual_seed(10))
    assert m.masks.mean().item() == pytest.approx(coverage, abs=0.008)
    assert empty[0] <= m.empty_fraction <= empty[1]


def test_blend_exact_on_hand_case():
    image = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]])
    source = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    beta = 0.25
    # inside the mask: beta * source + (1 - beta) * image; outside: the image
    expected = torch.tensor([[[[0.25 * 1.0 + 0.75 * 0.2, 0.4], [0.25 * 0.5 + 0.75 * 0.6, 0.8]]]])
    assert torch.allclose(blend(image, mask, source, beta), expected, atol=1e-7)
    # the paper's form, term by term, on random inputs and a per-sample beta
    g = torch.Generator().manual_seed(0)
    im, src = torch.rand(5, 3, 9, 7, generator=g), torch.rand(5, 3, 9, 7, generator=g)
    m = (torch.rand(5, 1, 9, 7, generator=g) > 0.5).float()
    b = torch.rand(5, generator=g)
    bb = b.view(-1, 1, 1, 1)
    paper = (1 - m) * im + bb * (m * src) + (1 - bb) * (m * im)
    assert torch.allclose(blend(im, m, src, b), paper, atol=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        blend(im, m, src[:, :, :4], b)


def test_beta_ranges():
    b = sample_beta(10000, (0.1, 1.0), torch.Generator().manual_seed(0))
    assert 0.1 <= b.min() and b.max() <= 1.0 and abs(b.mean().item() - 0.55) < 0.01
    d = sample_beta(10000, (0.0, 0.8), torch.Generator().manual_seed(0))  # DRAEM: 0.8 * U(0, 1)
    assert d.max() <= 0.8
    with pytest.raises(ValueError):
        sample_beta(3, (0.5, 1.5))


def test_augmentations_keep_range_and_each_runs():
    x = torch.rand(6, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    for name, fn in AUGMENTATIONS.items():
        y = fn(x, torch.rand(6, 2, generator=g))  # parameters from uniforms in [0, 1)
        assert y.shape == x.shape and torch.isfinite(y).all(), name
        for u in (0.0, 0.999):  # both ends of every parameter range
            assert torch.isfinite(fn(x, torch.full((6, 2), u))).all(), name
    out = augment_sources(x, 3, torch.Generator().manual_seed(2))
    assert out.min() >= 0 and out.max() <= 1 and not torch.equal(out, x)
    assert torch.equal(out, augment_sources(x, 3, torch.Generator().manual_seed(2)))


def test_pseudo_anomaly_is_seeded_labelled_and_only_changes_masked_pixels():
    pa = PseudoAnomaly(48)
    imgs = torch.rand(8, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    out, masks, labels = pa(imgs, torch.Generator().manual_seed(5))
    out2, masks2, _ = pa(imgs, torch.Generator().manual_seed(5))
    assert torch.equal(out, out2) and torch.equal(masks, masks2)
    assert masks.shape == (8, 1, 48, 48) and set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(labels, (masks.flatten(1).amax(1) > 0).long()) and labels.all()  # empty ones redrawn
    outside = masks.expand_as(out) == 0
    assert torch.equal(out[outside], imgs[outside])
    with pytest.raises(ValueError, match="expected images"):
        pa(torch.rand(2, 3, 32, 32))


def test_chunked_cpu_path_matches_the_contract_and_ignores_the_thread_count():
    pa = PseudoAnomaly(48)
    pa.CPU_CHUNK_PIXELS = 3 * 48 * 48  # 8 samples: chunks of 3, 3 and 2
    imgs = torch.rand(8, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        out, masks, labels = pa(imgs, torch.Generator().manual_seed(5))
        torch.set_num_threads(1)
        again, masks2, _ = pa(imgs, torch.Generator().manual_seed(5))
    finally:
        torch.set_num_threads(threads)
    assert out.shape == imgs.shape and masks.shape == (8, 1, 48, 48) and labels.shape == (8,)
    assert torch.equal(out, again) and torch.equal(masks, masks2) and labels.all()
    outside = masks.expand_as(out) == 0
    assert torch.equal(out[outside], imgs[outside]) and not torch.equal(out, imgs)
    assert 0.0 <= pa.last_empty_fraction <= 1.0
    other, _, _ = pa(imgs, torch.Generator().manual_seed(6))
    assert not torch.equal(out, other)


def test_lookup_table_path_equals_running_the_augmentations_on_the_pixels():
    x8 = torch.randint(0, 256, (24, 3, 21, 17), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x8[3] = 7  # a flat image: auto-contrast and equalisation leave it alone
    x8[4, 1] = 200  # one flat channel
    x8[5] = x8[5] // 4 + 30  # a narrow range, which auto-contrast stretches
    for k in (1, 3, 5, 10):
        fast = augment_sources(x8, k, torch.Generator().manual_seed(k))
        slow = augment_sources(x8.float() / 255, k, torch.Generator().manual_seed(k))
        assert fast.dtype == torch.float32 and torch.allclose(fast, slow, atol=1e-6), k
    with pytest.raises(ValueError, match="histograms"):
        augment_sources(x8, 3, hist=histograms(x8[:2]))


def test_autocontrast_and_equalize_are_torchvisions():
    from torchvision.transforms.v2 import functional as TF

    from adlkit.synth.pseudo import _autocontrast, _equalize

    x = torch.rand(5, 3, 20, 30, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    x[1, 2] = 0.5  # a flat channel
    assert torch.equal(_autocontrast(x), TF.autocontrast(x))
    q = (x * 255).round().to(torch.uint8)
    assert torch.equal(_equalize(x), TF.equalize(q).float() / 255)


def test_hue_saturation_keeps_luma_and_is_the_identity_at_zero():
    from adlkit.synth.pseudo import _hue_saturation

    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(_hue_saturation(x, torch.zeros(4), torch.ones(4)), x, atol=1e-6)
    y = _hue_saturation(x, torch.tensor([-50.0, 10.0, 30.0, 50.0]), torch.tensor([0.5, 1.5, 1.0, 0.8]))
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.allclose((y * luma).sum(1), (x * luma).sum(1), atol=1e-5)  # Y of YIQ unchanged
    grey = _hue_saturation(x, torch.full((4,), 30.0), torch.zeros(4))  # saturation 0: grey
    assert torch.allclose(grey, grey[:, :1].expand_as(grey), atol=1e-5)


def test_rotation_keeps_the_centre_and_zeroes_what_comes_from_outside():
    g = torch.Generator().manual_seed(0)
    flat = perlin_noise(1, 65, 65, res=4, generator=g)
    g = torch.Generator().manual_seed(0)
    turned = perlin_noise(1, 65, 65, res=4, degrees=torch.tensor([45.0]), generator=g)
    assert torch.allclose(turned[0, 32, 32], flat[0, 32, 32], atol=1e-6)  # the centre pixel stays put
    assert turned[0, 0, 0] == 0 and turned[0, -1, -1] == 0  # corners come from outside the image
    flat64 = perlin_noise(1, 64, 64, res=4, generator=torch.Generator().manual_seed(0))[0]
    quarter = perlin_noise(1, 64, 64, res=4, degrees=torch.tensor([90.0]), generator=torch.Generator().manual_seed(0))[0]
    matches = [k for k in (1, -1) if torch.allclose(quarter, torch.rot90(flat64, k=k), atol=1e-5)]
    assert len(matches) == 1  # a quarter turn of a square field is exactly a 90-degree array rotation


def test_builtin_sources_and_texture_folder(tmp_path):
    src = builtin_sources(32, n=8, seed=0)
    assert src.shape == (8, 3, 32, 32) and src.dtype == torch.uint8 and src.float().std() > 10
    from PIL import Image

    (tmp_path / "tex" / "a").mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "tex/a/x.jpg")
    assert load_texture_sources(tmp_path / "tex", 16).shape == (1, 3, 16, 16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_texture_sources(tmp_path / "nope", 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        load_texture_sources(tmp_path / "empty", 16)


@pytest.mark.skipif(not (DTD and Path(DTD).is_dir()), reason="set ADLKIT_TEXTURES=<folder of DTD images> (optional)")
def test_dtd_folder_as_source():
    pa = PseudoAnomaly(32, sources=DTD, max_sources=20)
    assert 0 < len(pa.sources) <= 20 and f"folder {Path(DTD).name!r}" in repr(pa)  # by name, not this machine's path


def test_elastic_matches_torchvision_kernel_and_is_seeded():
    import torchvision.transforms.v2.functional as TF

    from adlkit.synth.perlin import _rand

    x = torch.rand(1, 3, 40, 50, generator=torch.Generator().manual_seed(0))
    y = elastic_anomalies(x, alpha=200, sigma=5, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    dx, dy = _rand((1, 1, 40, 50), g, "cpu") * 2 - 1, _rand((1, 1, 40, 50), g, "cpu") * 2 - 1
    dx, dy = TF.gaussian_blur(dx, [41, 41], [5.0, 5.0]), TF.gaussian_blur(dy, [41, 41], [5.0, 5.0])
    disp = torch.cat([dx * 200 / 50, dy * 200 / 40], 1).permute(0, 2, 3, 1)
    # adlkit blurs the noise with two matrix products (the same kernel and borders): the blurred noise agrees to
    # ~2e-6, which the displacement scale (alpha / size = 4 px) and bilinear sampling of a random image turn into
    # ~1e-4 in pixel values
    diff = (y - TF.elastic(x, disp, fill=None)).abs()
    assert diff.max() < 1e-3 and diff.mean() < 1e-5
    batch = torch.rand(3, 3, 32, 32)
    a = elastic_anomalies(batch, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, elastic_anomalies(batch, generator=torch.Generator().manual_seed(2)))
    assert not torch.allclose(a, batch)
