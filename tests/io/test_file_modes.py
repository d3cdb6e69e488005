"""Files we write are readable by whoever the user's umask lets read them, whatever the writer library does
(safetensors' save_file creates 0600 files)."""

import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from videogpa.engine.io.atomic import atomic_path


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    previous = os.umask(0o022)
    yield set_mask
    os.umask(previous)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_a_safetensors_file_gets_the_umask_modes(tmp_path, umask, mask, expected):
    umask(mask)
    target = tmp_path / "lora.safetensors"
    with atomic_path(target) as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))
    assert stat.S_IMODE(target.stat().st_mode) == expected


def test_every_file_of_a_folder_gets_them(tmp_path, umask):
    umask(0o022)
    with atomic_path(tmp_path / "merged") as tmp:
        (tmp / "sub").mkdir(parents=True)
        save_file({"w": torch.zeros(2)}, str(tmp / "sub" / "model.safetensors"))
        save_file({"w": torch.zeros(2)}, str(tmp / "top.safetensors"))
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "merged").rglob("*.safetensors")}
    assert modes == {"model.safetensors": 0o644, "top.safetensors": 0o644}
