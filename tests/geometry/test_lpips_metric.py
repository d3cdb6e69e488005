"""LPIPS-VGG: loads torchvision-format VGG16 and LPIPS linear weights from local files (random here)."""

import pytest
import torch
import torch.nn.functional as F

from tests.geometry.lpips_weights import random_weight_files
from videogpa.engine.geometry.lpips import LPIPS


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return random_weight_files(tmp_path_factory.mktemp("lpips"))


def test_distance_properties(files):
    model = LPIPS.from_files(files[0], files[1])
    x = torch.rand(3, 3, 32, 32)
    small = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    large = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    d_small, d_large = model(x, small), model(x, large)
    assert d_small.shape == (3,)
    torch.testing.assert_close(model(x, x), torch.zeros(3))
    torch.testing.assert_close(model(small, x), d_small)
    assert (d_small > 0).all() and (d_large > d_small).all()


def test_first_layer_matches_the_formula(files):
    """Only lin0 non-zero: d = mean_hw Σ_c w_c (φ̂(x) − φ̂(y))² with
    φ = relu(conv2(relu(conv0(scaled x))))."""
    vgg_path, _, vgg, lins = files
    only_first = {k: (v if k.startswith("lin0") else torch.zeros_like(v)) for k, v in lins.items()}
    lin_path = vgg_path.parent / "first_only.pth"
    torch.save(only_first, lin_path)
    model = LPIPS.from_files(vgg_path, lin_path)
    x, y = torch.rand(2, 3, 20, 24), torch.rand(2, 3, 20, 24)

    def feature(img):
        scaled = (img * 2 - 1 - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor(
            [0.458, 0.448, 0.450]
        ).view(1, 3, 1, 1)
        h = F.relu(F.conv2d(scaled, vgg["features.0.weight"], vgg["features.0.bias"], padding=1))
        h = F.relu(F.conv2d(h, vgg["features.2.weight"], vgg["features.2.bias"], padding=1))
        return h / (h.norm(dim=1, keepdim=True) + 1e-10)

    expected = ((feature(x) - feature(y)) ** 2 * lins["lin0.model.1.weight"]).sum(1).mean(dim=(1, 2))
    torch.testing.assert_close(model(x, y), expected, rtol=1e-5, atol=1e-7)


def test_bad_weight_files(tmp_path, files):
    vgg_path, lin_path, vgg, lins = files
    with pytest.raises(ValueError, match="does not exist"):
        LPIPS.from_files(tmp_path / "none.pth", lin_path)
    torch.save({k: v for k, v in vgg.items() if k != "features.28.bias"}, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match="features.28.bias"):
        LPIPS.from_files(tmp_path / "cut.pth", lin_path)
    torch.save({**lins, "lin3.model.1.weight": torch.zeros(1, 3, 1, 1)}, tmp_path / "bad_lin.pth")
    with pytest.raises(ValueError, match="lin3"):
        LPIPS.from_files(vgg_path, tmp_path / "bad_lin.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pth"):
        LPIPS.from_files(tmp_path / "junk.pth", lin_path)
