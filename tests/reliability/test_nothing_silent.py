"""Nothing silent: non-finite config values are config errors, a run whose steps keep going non-finite stops
after dpo.max_consecutive_skips, and non-finite weights are never exported."""

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.reliability.conftest import STEPS
from tests.stages.stage_helpers import load_recipe
from tests.trainer.trainer_helpers import BASE, tiny_config
from videogpa.engine.core.config_loading import load_config
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.models.lora import LORA_WEIGHT_NAME, export_trained_weights
from videogpa.engine.train import checkpoint as ckpt
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


def test_a_run_that_keeps_going_non_finite_stops_names_the_pairs_and_keeps_its_state(tmp_path, monkeypatch):
    """A run whose steps keep going non-finite stops after dpo.max_consecutive_skips, naming the shard and
    pair of each skipped step, saves its last good (finite) state as a checkpoint and says so, exports
    nothing."""
    real = trainer_module.dpo_forward

    def forward(*args, **kwargs):
        out = real(*args, **kwargs)
        if torch.is_grad_enabled():  # every training step from now on: as if the weights had gone bad
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(trainer_module, "dpo_forward", forward)
    cfg = tiny_config(tmp_path, dpo={"max_consecutive_skips": 2}, train={**STEPS, "checkpoint_every": 0})
    trainer = Trainer(cfg)
    stop = (
        r"stopped at step 3: 3 steps in a row had a non-finite loss or gradients .*, "
        r"the last from preference "
    )
    saved = (
        rf"shard .*pair_id .*; the last good state \(step 3\) is saved as checkpoint {tmp_path}/checkpoints/"
    )
    with pytest.raises(FloatingPointError, match=stop + saved + "step_00000003; continue with --resume"):
        trainer.run()
    assert not (tmp_path / LORA_WEIGHT_NAME).exists()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000003"]
    assert ckpt.damage(ckpt.latest_checkpoint(tmp_path)) is None
    assert all(torch.isfinite(p).all() for p in trainer.engine.module.parameters())  # skipped: no update
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3] and all(r["skipped"] for r in records)
    assert all("preference shard" in r["non_finite_pairs"][0] for r in records)


def test_bad_data_mid_run_names_the_pair_and_keeps_the_steps_done(tmp_path, monkeypatch):
    """A pair that cannot be read at step 2 (here: its latents hold NaN) stops the run with the dataset's
    one-line error; step 1 is not lost: it is saved as a checkpoint, and the error says so."""
    real = trainer_module.inputs_for_pairs
    calls = []

    def inputs(adapter, dataset, idx, *args):
        calls.append(idx)
        if len(calls) > 2:  # step 2 (two micro-steps a step)
            raise ValueError(f"{dataset.describe_pair(idx[0])}, keys '{idx[0]}/...': latents_w holds NaN")
        return real(adapter, dataset, idx, *args)

    monkeypatch.setattr(trainer_module, "inputs_for_pairs", inputs)
    cfg = tiny_config(tmp_path, train={**STEPS, "checkpoint_every": 0})
    with pytest.raises(
        ValueError,
        match=r"preference shard .*latents_w holds NaN; the last good state \(step 1\) "
        rf"is saved as checkpoint {tmp_path}/checkpoints/step_00000001; continue with --resume",
    ):
        Trainer(cfg).run()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000001"]
    assert ckpt.damage(ckpt.latest_checkpoint(tmp_path)) is None


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


def test_a_lora_holding_nan_is_exported_in_no_format(run_copy, tmp_path, capsys):
    """Audit N58: recipes/export.py wrote a LoRA holding NaN in every format and exited 0."""
    path = run_copy / LORA_WEIGHT_NAME
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    state = load_file(path)
    key = sorted(k for k in state if "lora_B" in k)[0]
    state[key][0, 0] = float("nan")
    save_file(state, path, metadata=metadata)
    out = tmp_path / "exports"
    assert load_recipe("export").main(["--run", str(run_copy), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1] == f"error: LoRA {path}: tensor {key!r} holds 1 non-finite value(s) (NaN/inf); not exporting"
    )
    assert not out.exists() or not any(out.iterdir())
