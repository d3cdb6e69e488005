"""DA3's input processing: upper-bound resize to 504, the patch grid, area/bicubic filters, ImageNet norm."""

import pytest
import torch
import torch.nn.functional as F

from videogpa.engine.geometry.da3 import preprocess
from videogpa.engine.geometry.da3.preprocess import area_weights, normalise, processed_size, resize


@pytest.mark.parametrize(
    ("hw", "scaled", "final"),
    [
        ((504, 504), (504, 504), (504, 504)),  # already processed: untouched
        ((518, 518), (504, 504), (504, 504)),  # the authors' crop
        ((480, 720), (336, 504), (336, 504)),  # the longest side scales to 504
        ((1080, 1920), (284, 504), (280, 504)),  # 283.5 rounds to 284, then to the nearest multiple of 14
        ((300, 400), (378, 504), (378, 504)),  # upscaling
        ((504, 250), (504, 250), (504, 252)),  # longest side already 504: only the grid rounding
        ((504, 245), (504, 245), (504, 252)),  # 245 = 17.5·14: a tie goes up
    ],
)
def test_processed_sizes_follow_the_official_rules(hw, scaled, final):
    assert processed_size(*hw) == (scaled, final)


def test_area_resize_of_an_integer_factor_is_the_box_average():
    frames = torch.rand(2, 3, 12, 18, generator=torch.Generator().manual_seed(0))
    expected = (F.avg_pool2d(frames, 3) * 255).round() / 255
    torch.testing.assert_close(resize(frames, (4, 6)), expected, rtol=0, atol=1e-6)


def test_area_weights_cover_every_input_pixel_once():
    weights = area_weights(518, 504)
    torch.testing.assert_close(weights.sum(1), torch.ones(504, dtype=torch.float64))  # each output: a mean
    torch.testing.assert_close(weights.sum(0), torch.full((518,), 504 / 518, dtype=torch.float64))


def test_upscaling_is_bicubic_and_every_resize_lands_on_the_8_bit_grid():
    frames = torch.rand(1, 3, 14, 21, generator=torch.Generator().manual_seed(1))
    up = resize(frames, (28, 42))
    bicubic = F.interpolate(frames, size=(28, 42), mode="bicubic", align_corners=False)
    torch.testing.assert_close(up, bicubic.clamp(0, 1), rtol=0, atol=0.5 / 255 + 1e-6)
    assert torch.equal(up, (up * 255).round() / 255)


def test_preprocess_normalises_and_keeps_leading_dimensions():
    frames = torch.rand(2, 1, 3, 480, 720, generator=torch.Generator().manual_seed(2))
    out = preprocess(frames)
    assert out.shape == (2, 1, 3, 336, 504)
    square = torch.rand(4, 3, 504, 504, generator=torch.Generator().manual_seed(3))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(preprocess(square), (square - mean) / std, rtol=0, atol=0)
    torch.testing.assert_close(normalise(square), preprocess(square), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"frames must be floating point \[..., 3, H, W\]"):
        preprocess(torch.zeros(4, 504, 504, 3))
