"""The trainer under DeepSpeed ZeRO-3 on one in-process CPU rank (gloo): resume, references, NaN, export."""

import contextlib
import hashlib
import io
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.trainer_helpers import tiny_config
from videogpa.engine.core.config_loading import load_config
from videogpa.engine.loop.loop_config import load_loop_config
from videogpa.engine.models.tiny import build_tiny_transformer
from videogpa.engine.train import checkpoint as ckpt
from videogpa.engine.train import trainer as trainer_module
from videogpa.engine.train.run_logs import read_metrics
from videogpa.engine.train.trainer import Trainer

pytestmark = pytest.mark.slow
COMPARED = (
    "loss",
    "accuracy",
    "reward_margin",
    "policy_err_w",
    "policy_err_l",
    "ref_err_w",
    "lr",
    "grad_norm",
)


def _trajectory(out):
    return [{k: r[k] for k in ("step", *COMPARED)} for r in read_metrics(out)]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted 6-step run (2 micro-steps of 2 pairs per step, checkpoints every 2 steps)."""
    out = tmp_path_factory.mktemp("full")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = Trainer(tiny_config(out)).run()
    return out, result, printed.getvalue()


def test_run_writes_every_record(full_run):
    out, result, printed = full_run
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    for key in (*COMPARED, "logits_mean", "ref_err_l", "samples_per_s", "nan_skipped"):
        assert all(r[key] is not None for r in records), key
    assert records[0]["lr"] < records[1]["lr"]  # warm-up
    assert len({r["loss"] for r in records}) > 1
    assert json.loads((out / "eval.json").read_text()) == result
    assert (
        set(result) >= {"heldout_accuracy_before", "heldout_accuracy_after", "pairs"} and result["pairs"] == 8
    )
    info = json.loads((out / "run_info.json").read_text())
    assert info["seed"] == 0 and info["torch"] == torch.__version__ and info["deepspeed"]
    assert info["demo"].startswith("built-in tiny model and synthetic data")  # the report's warning
    # the run's last line names its report
    assert printed.strip().splitlines()[-1] == f"report (open it in a browser): {out / 'report.html'}"
    assert (out / "report.html").is_file()
    assert (out / "config.yaml").is_file() and any((out / "tensorboard").iterdir())
    names = [p.name for p in ckpt.list_checkpoints(out)]
    assert names == ["step_00000004", "step_00000006"]  # keep the newest 2
    assert not [p for p in ckpt.checkpoint_root(out).iterdir() if p.name.startswith(".tmp")]


def test_killed_and_resumed_run_reproduces_the_uninterrupted_run(full_run, tmp_path):
    out, result, _ = full_run
    cfg = tiny_config(tmp_path)
    assert Trainer(cfg).run(stop_after=5) is None  # "killed" after step 5: last checkpoint at step 4
    assert [r["step"] for r in read_metrics(tmp_path)][-1] == 5
    resumed = Trainer(cfg, resume=True)
    assert resumed.start_step == 4
    assert resumed.run() == result
    assert _trajectory(tmp_path) == _trajectory(out)  # step 5 is redone, identically
    a, b = (load_file(str(d / "pytorch_lora_weights.safetensors")) for d in (out, tmp_path))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_exported_lora_loads_into_the_diffusers_transformer_and_changes_its_output(full_run):
    out, _, _ = full_run
    weights = load_file(str(out / "pytorch_lora_weights.safetensors"))
    assert weights and all(k.startswith("transformer.") for k in weights)
    model = build_tiny_transformer().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 4, 8, 8, generator=gen)
    text = torch.randn(1, 8, 32, generator=gen)
    t = torch.tensor([500])
    with torch.no_grad():
        before = model(hidden_states=x, encoder_hidden_states=text, timestep=t, return_dict=False)[0]
        model.load_lora_adapter(str(out / "pytorch_lora_weights.safetensors"), prefix="transformer")
        after = model(hidden_states=x, encoder_hidden_states=text, timestep=t, return_dict=False)[0]
    assert not torch.allclose(before, after)
    loaded = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert loaded and any(p.abs().sum() > 0 for p in loaded.values())


def test_separate_and_precomputed_references_match_adapters_off(tmp_path):
    steps = {"max_steps": 2, "checkpoint_every": 0}
    runs = {}
    for name in ("adapters_off", "separate", "precomputed"):
        cfg = tiny_config(tmp_path / name, dpo={"reference": name}, train=steps)
        Trainer(cfg).run()
        runs[name] = read_metrics(tmp_path / name)
    # The frozen copy is the model before LoRA: the same reference, the same step-0 loss.
    assert runs["separate"][0]["loss"] == pytest.approx(runs["adapters_off"][0]["loss"], rel=1e-6)
    assert runs["separate"][0]["ref_err_w"] == pytest.approx(runs["adapters_off"][0]["ref_err_w"], rel=1e-6)
    # The precomputed table holds the same draws' reference errors: the same trajectory, no reference forward.
    for a, b in zip(runs["adapters_off"], runs["precomputed"]):
        for key in ("loss", "ref_err_w", "ref_err_l", "policy_err_w"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
    run = tmp_path / "precomputed"  # a resume checks the tables against the SHA-256s its checkpoint recorded
    recorded = ckpt.read_trainer_state(ckpt.latest_checkpoint(run))["reference_tables"]
    names = {"reference_errors.safetensors", "reference_errors_heldout.safetensors"}
    assert recorded == {name: hashlib.sha256((run / name).read_bytes()).hexdigest() for name in names}


def _nan_at_step(monkeypatch, bad_step: int) -> None:
    """Make the training loss non-finite in optimizer step `bad_step` (1-based; two micro-steps a step)."""
    real = trainer_module.dpo_forward
    calls = {"train": 0}

    def forward(*args, **kwargs):
        out = real(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["train"] += 1
            if (calls["train"] - 1) // 2 + 1 == bad_step:
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(trainer_module, "dpo_forward", forward)


def test_nan_loss_skips_the_step_and_counts_it(tmp_path, monkeypatch):
    _nan_at_step(monkeypatch, 2)
    cfg = tiny_config(tmp_path, train={"max_steps": 3, "checkpoint_every": 0})
    trainer = Trainer(cfg)
    trainer.train_step(0)
    # ZeRO-3 keeps only the partitions; the flat fp32 master copy is what the optimizer updates
    master = lambda: torch.cat(
        [g.detach().clone() for g in trainer.engine.optimizer.fp32_partitioned_groups_flat]
    )
    before, lr_before = master(), trainer.engine.get_lr()[0]
    record = trainer.train_step(1)
    assert record["skipped"] and record["loss"] is None and record["nan_skipped"] == 1
    assert torch.equal(master(), before) and trainer.engine.get_lr()[0] == lr_before
    record = trainer.train_step(2)
    assert "skipped" not in record and record["nan_skipped"] == 1 and not torch.equal(master(), before)


def test_nan_loss_stops_when_configured(tmp_path, monkeypatch):
    _nan_at_step(monkeypatch, 1)
    cfg = tiny_config(tmp_path, dpo={"nan_policy": "stop"}, train={"max_steps": 2, "checkpoint_every": 0})
    with pytest.raises(FloatingPointError, match="non-finite DPO loss at step 1"):
        Trainer(cfg).train_step(0)


@pytest.mark.parametrize("name", ["cogvideox_5b_t2v", "cogvideox_5b_i2v", "wan22_ti2v_5b"])
def test_real_model_configs_name_every_placeholder_at_once(name, tmp_path):
    path = Path(__file__).resolve().parents[2] / "recipes" / "configs" / f"{name}.yaml"
    cfg = load_config(path, [f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(ValueError, match=r"2 placeholder.*model\.path \(/path/to/.*data\.train \(/path/to/"):
        Trainer(cfg)
    cfg = load_config(path, [f"output_dir={tmp_path / 'out'}", f"data.train={tmp_path}"])
    with pytest.raises(ValueError, match=r"1 placeholder.*model\.path") as err:
        Trainer(cfg)
    assert "data.train" not in str(err.value)
    # the loop fills data.train from its encode stage: only model.path is named
    with pytest.raises(ValueError, match=r"1 placeholder.*model\.path") as err:
        load_loop_config(path, [f"output_dir={tmp_path / 'out'}"])
    assert "data.train" not in str(err.value)
    overrides = [
        f"output_dir={tmp_path / 'out'}",
        f"model.path={tmp_path / 'nowhere'}",
        f"data.train={tmp_path}",
    ]
    cfg = load_config(path, overrides)
    with pytest.raises(ValueError, match=f"model.path.*{tmp_path / 'nowhere'}.*does not exist"):
        Trainer(cfg)
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are checked


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="model.path.*does not exist"):
        Trainer(tiny_config(tmp_path / "a", model={"path": str(tmp_path / "no-such-model")}))
    with pytest.raises(ValueError, match="index.jsonl"):
        Trainer(tiny_config(tmp_path / "b", data={"synthetic": None, "train": str(tmp_path / "missing")}))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "index.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty.*is empty"):
        Trainer(tiny_config(tmp_path / "b", data={"synthetic": None, "train": str(tmp_path / "empty")}))
    with pytest.raises(ValueError, match="no checkpoint"):
        Trainer(tiny_config(tmp_path / "c"), resume=True)
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        Trainer(tiny_config(tmp_path / "d", data={"synthetic": {"train_pairs": 2}}))
