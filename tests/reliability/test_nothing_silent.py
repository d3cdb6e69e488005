"""Nothing silent: non-finite config values are config errors, a run whose steps keep going non-finite stops
after dpo.max_consecutive_skips, and non-finite weights are never exported."""

import pytest
import torch
import yaml

from tests.reliability.conftest import STEPS
from tests.trainer.trainer_helpers import BASE, tiny_config
from videogpa.engine.core.config import load_config
from videogpa.engine.models.lora import LORA_WEIGHT_NAME, export_trained_weights
from videogpa.engine.train import trainer as trainer_module
from videogpa.engine.train.trainer import Trainer


@pytest.mark.parametrize(
    ("key", "value"), [("optim.lr", ".nan"), ("dpo.beta", ".inf"), ("optim.eps", "-.inf")]
)
def test_non_finite_config_values_are_config_errors(tmp_path, key, value):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    with pytest.raises(ValueError, match=rf"c.yaml: config key '{key}': expected a finite number"):
        load_config(path, [f"{key}={value}"])


def test_a_run_that_keeps_going_non_finite_stops_and_exports_nothing(tmp_path, monkeypatch):
    real = trainer_module.dpo_forward

    def forward(*args, **kwargs):
        out = real(*args, **kwargs)
        if torch.is_grad_enabled():  # every training step from now on: as if the weights had gone bad
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(trainer_module, "dpo_forward", forward)
    cfg = tiny_config(tmp_path, dpo={"max_consecutive_skips": 2}, train={**STEPS, "checkpoint_every": 0})
    with pytest.raises(
        FloatingPointError, match=r"stopped at step 3: 3 steps in a row had a non-finite loss"
    ):
        Trainer(cfg).run()
    assert not (tmp_path / LORA_WEIGHT_NAME).exists()


def test_non_finite_weights_are_never_exported(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, train=STEPS))
    trainer.close()
    module = trainer.engine.module
    lora = next(p for n, p in module.named_parameters() if "lora_B" in n)
    import deepspeed

    with deepspeed.zero.GatheredParameters([lora], modifier_rank=0):
        lora.data.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="not exporting non-finite weights"):
        export_trained_weights(module, tmp_path, lora=True)
    assert not (tmp_path / LORA_WEIGHT_NAME).exists()
