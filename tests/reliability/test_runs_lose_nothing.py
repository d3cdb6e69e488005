"""Nothing lost: a fresh run never mixes with or deletes another run's files, one trainer per folder, resume
takes the newest intact checkpoint and refuses a changed config, a full disk keeps the last checkpoint, bad
input is one line."""

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.reliability.conftest import STEPS
from tests.stages.stage_helpers import REPO
from tests.trainer.trainer_helpers import tiny_config
from videogpa.engine.io.records import read_jsonl
from videogpa.engine.train import checkpoint as ckpt
from videogpa.engine.train.trainer import Trainer


def test_a_fresh_run_refuses_a_used_folder_and_keeps_its_files(run_copy):
    config, names = (run_copy / "config.yaml").read_bytes(), [p.name for p in ckpt.list_checkpoints(run_copy)]
    with pytest.raises(
        ValueError, match=r"holds another run \(checkpoints in .*\); continue it with --resume"
    ):
        Trainer(tiny_config(run_copy, seed=1, train=STEPS))
    assert (run_copy / "config.yaml").read_bytes() == config  # a failed start never rewrites the config
    assert [p.name for p in ckpt.list_checkpoints(run_copy)] == names and (run_copy / "eval.json").is_file()
    trainer = Trainer(tiny_config(run_copy, train={"max_steps": 1, "checkpoint_every": 0}), overwrite=True)
    trainer.close()
    assert not ckpt.list_checkpoints(run_copy) and not (run_copy / "eval.json").exists()


def test_one_trainer_per_folder(tmp_path):
    first = Trainer(tiny_config(tmp_path, train=STEPS))
    try:
        with pytest.raises(ValueError, match=r"in use by another process \(pid \d+; lock .*\.train\.lock\)"):
            Trainer(tiny_config(tmp_path, train=STEPS))
    finally:
        first.close()
    Trainer(
        tiny_config(tmp_path, train=STEPS), overwrite=True
    ).close()  # released: the folder can be taken again


def test_resume_passes_over_a_damaged_checkpoint_and_a_half_written_metrics_line(run_copy, capsys):
    newest = ckpt.latest_checkpoint(run_copy)
    state = newest / "state" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    state.write_bytes(state.read_bytes()[:100])  # a disk that lost the end of a file
    with open(run_copy / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # a kill in the middle of a line
    trainer = Trainer(tiny_config(run_copy, train=STEPS), resume=True)
    trainer.close()
    out = capsys.readouterr().out
    assert trainer.start_step == 2
    assert "passing over damaged checkpoint step_00000004" in out and "optim_states.pt differs" in out
    assert [r["step"] for r in read_jsonl(run_copy / "metrics.jsonl")] == [1, 2]


def test_resume_refuses_a_changed_config_unless_allowed(run_copy):
    changed = tiny_config(run_copy, dpo={"beta": 100.0}, train=STEPS)
    with pytest.raises(ValueError, match=r"config differs from step_00000004's \(dpo.beta: 500.0 -> 100.0\)"):
        Trainer(changed, resume=True)
    Trainer(tiny_config(run_copy, train={**STEPS, "log_every": 7}), resume=True).close()  # bookkeeping only
    trainer = Trainer(changed, resume=True, allow_config_change=True)
    trainer.close()
    (record,) = read_jsonl(run_copy / "config_changes.jsonl")
    assert record == {"step": 4, "changes": {"dpo.beta": [500.0, 100.0]}}


def test_a_full_disk_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path, train=STEPS))
    real = type(trainer.engine).save_checkpoint

    def save(engine, save_dir, **kwargs):
        if "step_00000004" in str(save_dir):
            real(engine, save_dir, **kwargs)  # half of it written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", f"{save_dir}/state/x.pt")
        return real(engine, save_dir, **kwargs)

    monkeypatch.setattr(type(trainer.engine), "save_checkpoint", save)
    with pytest.raises(
        ValueError, match=r"could not write checkpoint .*step_00000004/state/x.pt: No space left"
    ):
        trainer.run()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000002"]
    assert ckpt.damage(ckpt.latest_checkpoint(tmp_path)) is None
    assert not [p for p in ckpt.checkpoint_root(tmp_path).iterdir() if p.name.startswith(".tmp")]


def test_an_unwritable_output_folder_is_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "dpo.py"), "--output-dir", "/proc/version/run"],
        capture_output=True,
        text=True,
        env={"DS_ACCELERATOR": "cpu", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == "error: cannot write the output folder /proc/version/run: Not a directory"
    assert "Traceback" not in done.stderr


def test_the_checkpoint_records_the_config_it_was_made_with(finished_run):
    state = ckpt.read_trainer_state(ckpt.latest_checkpoint(finished_run))
    assert state["step"] == 4 and state["config"]["dpo"]["beta"] == 500.0
    assert set(json.loads((ckpt.latest_checkpoint(finished_run) / "manifest.json").read_text())["files"]) >= {
        "rng_rank0.safetensors",
        "trainer.json",
        "config.json",
        "state/zero_pp_rank_0_mp_rank_00_model_states.pt",
    }


class TorchSavingEngine:
    """Writes its state through its checkpoint engine, as DeepSpeed's engine does (torch.save underneath)."""

    def __init__(self):
        from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

        self.checkpoint_engine = TorchCheckpointEngine()

    def save_checkpoint(self, save_dir, tag, save_latest):
        (Path(save_dir) / tag).mkdir()
        for name in ("model_states.pt", "optim_states.pt"):
            self.checkpoint_engine.save({"w": torch.zeros(4)}, str(Path(save_dir) / tag / name))


def test_a_disk_filling_up_during_torch_save_is_one_line_naming_the_file(tmp_path, monkeypatch):
    """Audit f10: torch.save reports a full disk as a RuntimeError without a path. The error names the file
    and the cause; the earlier checkpoints stay intact and no temporary is left."""
    ckpt.save_checkpoint(TorchSavingEngine(), tmp_path, 2, {"nan_skipped": 0}, {"seed": 0}, keep=2)
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if str(f).endswith("optim_states.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 320 vs 256")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9, free=0))
    expected = (
        rf"could not write checkpoint {tmp_path}/checkpoints/.tmp-step_00000004/state/optim_states.pt: "
        r"No space left on device \(0 bytes free; torch: \[enforce fail at inline_container.cc:672\]"
    )
    with pytest.raises(ValueError, match=expected):
        ckpt.save_checkpoint(TorchSavingEngine(), tmp_path, 4, {"nan_skipped": 0}, {"seed": 0}, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000002"]
    assert ckpt.damage(ckpt.latest_checkpoint(tmp_path)) is None
    assert sorted(p.name for p in ckpt.checkpoint_root(tmp_path).iterdir()) == ["step_00000002"]


def test_a_shape_changing_key_is_refused_even_when_changes_are_allowed(run_copy):
    """Audit N32: --allow-config-change let lora.rank 4 -> 2 through, into DeepSpeed's size-mismatch
    traceback."""
    changed = tiny_config(run_copy, lora={"rank": 2}, train=STEPS)
    refused = r"^--resume: lora.rank: 4 -> 2 \(the LoRA matrices' shapes\) cannot change in a resumed run"
    with pytest.raises(ValueError, match=refused + ", not even with --allow-config-change"):
        Trainer(changed, resume=True, allow_config_change=True)


def test_resuming_with_more_ranks_than_wrote_the_checkpoint_is_one_line(run_copy, monkeypatch):
    """Audit N31 (in-process; test_two_rank_resume launches it): every rank reads the manifest's world size
    and gives the same verdict before anyone loads."""
    from videogpa.engine.runtime import distributed as D
    from videogpa.engine.train.run_folder import resume_point

    monkeypatch.setattr(D, "world_size", lambda: 2)
    with pytest.raises(
        ValueError, match=r"checkpoint .*step_00000004 was written by 1 rank\(s\) and this run has 2"
    ):
        resume_point(run_copy, tiny_config(run_copy, train=STEPS).to_dict(), False)
