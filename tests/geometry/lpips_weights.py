"""Random LPIPS weight files in the real layouts, for tests (nothing can be downloaded)."""

import torch

from videogpa.engine.geometry.lpips import TAP_CHANNELS, VGG16_CONVS


def random_weight_files(folder, seed=0):
    """A torchvision-layout vgg16 state dict (with classifier keys) and an LPIPS-layout lin file."""
    g = torch.Generator().manual_seed(seed)
    vgg = {}
    for i, cin, cout in VGG16_CONVS:
        vgg[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2.0 / (9 * cin)) ** 0.5
        vgg[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.01
    vgg["classifier.0.weight"] = torch.zeros(4, 4)
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(TAP_CHANNELS)}
    torch.save(vgg, folder / "vgg16.pth")
    torch.save(lins, folder / "lpips_vgg.pth")
    return folder / "vgg16.pth", folder / "lpips_vgg.pth", vgg, lins
