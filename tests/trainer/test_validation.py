"""eval.every and eval.validation: held-out accuracy every N steps (history, TensorBoard, PNG curve),
validation videos sampled with the current weights (step 0 = the base model), scored, shown, resumable; W&B
offline."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from tests.trainer.trainer_helpers import tiny_config
from videogpa.engine.core.config_loading import config_from_dict
from videogpa.engine.geometry.vggt import TINY_CONFIG, random_vggt, save_vggt
from videogpa.engine.models.tiny import build_tiny_pipeline
from videogpa.engine.train.trainer import Trainer

pytestmark = pytest.mark.slow
PROMPTS = ["a room, the camera pans", "a room, the camera orbits"]
SAMPLER = {"num_frames": 9, "height": 64, "width": 64, "steps": 2}


def _config(out, vggt, **sections):
    validation = {
        "prompts": PROMPTS,
        "seeds": [3],
        **SAMPLER,
        "grid_frames": 3,
        "score": {"geometry": "vggt", "weights": str(vggt), "num_frames": 4, "random_weights": True},
    }
    train = {"max_steps": 4, "checkpoint_every": 2}
    return tiny_config(
        out, train=train, eval={"draws": 1, "every": 2, "plot": True, "validation": validation}, **sections
    )


@pytest.fixture(scope="module")
def vggt(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "vggt_tiny.safetensors"
    torch.manual_seed(0)
    save_vggt(random_vggt(TINY_CONFIG), path)
    return path


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, vggt):
    out = tmp_path_factory.mktemp("validation")
    wandb_dir = tmp_path_factory.mktemp("wandb")
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(wandb_dir), "WANDB_SILENT": "true"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        result = Trainer(_config(out, vggt, logging={"wandb": {"project": "test", "mode": "offline"}})).run()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return out, result


def _scalars(out, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}, acc


def test_heldout_accuracy_every_n_steps(full_run):
    out, result = full_run
    history = result["heldout_history"]
    assert [h["step"] for h in history] == [0, 2, 4]
    # LoRA B = 0: policy = reference
    assert history[0]["accuracy"] == result["heldout_accuracy_before"] == 0.5
    assert history[-1]["accuracy"] == result["heldout_accuracy_after"]
    assert json.loads((out / "heldout_history.json").read_text()) == history
    scalars, acc = _scalars(out, "eval/heldout_accuracy")
    assert scalars == pytest.approx({h["step"]: h["accuracy"] for h in history})
    assert (out / "heldout_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert set(_scalars(out, "validation/3dcs_mean")[0]) == {0, 2, 4}
    assert "validation/frames" in acc.Tags()["images"]


def test_validation_videos_are_sampled_scored_and_shown(full_run):
    out, _ = full_run
    for step in (0, 2, 4):
        folder = out / "validation" / f"step_{step}"
        summary = json.loads((folder / "validation.json").read_text())
        assert summary["step"] == step and len(summary["videos"]) == len(PROMPTS)
        for video in summary["videos"]:
            assert (folder / video["video"]).suffix == ".mp4" and (folder / video["video"]).stat().st_size > 0
            assert video["status"] == "ok" and video["score"] >= 0 and video["seed"] == 3
        assert summary["mean_3dcs"] == pytest.approx(sum(v["score"] for v in summary["videos"]) / 2)
        assert (folder / "frames.png").read_bytes()[:4] == b"\x89PNG"
    # the LoRA of step 4 is the exported final one; step 0's is the untrained one (B = 0)
    final, first = (
        load_file(str(out / p / "pytorch_lora_weights.safetensors")) for p in ("", "validation/step_0")
    )
    step4 = load_file(str(out / "validation/step_4/pytorch_lora_weights.safetensors"))
    assert all(torch.equal(final[k], step4[k]) for k in final)
    assert all(not v.any() for k, v in first.items() if "lora_B" in k)


def _base_latents():
    """The built-in pipeline's final latents for PROMPTS[0], seed 3, with the validation sampler (no LoRA)."""
    pipe = build_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt=PROMPTS[0],
        generator=torch.Generator().manual_seed(3),
        num_frames=9,
        height=64,
        width=64,
        num_inference_steps=2,
        guidance_scale=6.0,
        max_sequence_length=64,
        output_type="latent",
    ).frames


def test_step_0_is_the_base_model_and_training_changes_the_videos(full_run):
    out, _ = full_run
    base = _base_latents()
    latents = {
        s: load_file(str(out / f"validation/step_{s}/latents/prompt00_s3.safetensors"))["latents"]
        for s in (0, 2, 4)
    }
    torch.testing.assert_close(latents[0], base[0], rtol=1e-4, atol=1e-4)
    assert (latents[2] - latents[0]).abs().max() > 1e-3 and (latents[4] - latents[2]).abs().max() > 1e-3


def test_resumed_run_keeps_finished_evaluations(full_run, tmp_path, vggt):
    out, result = full_run
    cfg = _config(tmp_path, vggt)
    # killed after step 3: checkpoint at 2, evaluations 0 and 2 done
    assert Trainer(cfg).run(stop_after=3) is None
    kept = {s: (tmp_path / f"validation/step_{s}/validation.json").stat().st_mtime_ns for s in (0, 2)}
    resumed = Trainer(cfg, resume=True)
    assert resumed.start_step == 2
    again = resumed.run()
    assert again["heldout_history"] == result["heldout_history"]
    assert {s: (tmp_path / f"validation/step_{s}/validation.json").stat().st_mtime_ns for s in (0, 2)} == kept
    for step in (0, 2, 4):
        a, b = (
            json.loads((d / f"validation/step_{step}/validation.json").read_text()) for d in (out, tmp_path)
        )
        assert [v["score"] for v in a["videos"]] == pytest.approx([v["score"] for v in b["videos"]], rel=1e-4)


def test_two_ranks_equal_one_rank(full_run, tmp_path, vggt):
    """ZeRO-3 over two CPU ranks (torchrun, gloo): the videos are sharded over the ranks (each
    samples and scores its share with the gathered weights) and everything equals the one-rank run."""
    from tests.trainer.test_dpo_recipe import launch_dpo
    from videogpa.engine.core.config_loading import save_config

    out, result = full_run
    two = tmp_path / "two"
    save_config(_config(two, vggt), tmp_path / "two.yaml")
    launch_dpo(2, tmp_path / "two.yaml")
    assert {p.name for p in (two / "validation/step_0").glob("manifest*.jsonl")} == {
        "manifest.shard-0-of-2.jsonl",
        "manifest.shard-1-of-2.jsonl",
    }  # each rank sampled its share
    history = json.loads((two / "eval.json").read_text())["heldout_history"]
    assert [h["step"] for h in history] == [0, 2, 4]
    assert [h["accuracy"] for h in history] == pytest.approx(
        [h["accuracy"] for h in result["heldout_history"]], abs=1e-9
    )
    for step in (0, 2, 4):
        a, b = (json.loads((d / f"validation/step_{step}/validation.json").read_text()) for d in (out, two))
        assert [v["video"] for v in a["videos"]] == [v["video"] for v in b["videos"]]
        assert [v["score"] for v in b["videos"]] == pytest.approx([v["score"] for v in a["videos"]], rel=1e-3)
        for name in ("prompt00_s3", "prompt01_s3"):
            la, lb = (
                load_file(str(d / f"validation/step_{step}/latents/{name}.safetensors"))["latents"]
                for d in (out, two)
            )
            torch.testing.assert_close(lb, la, rtol=1e-3, atol=1e-3)


def test_wandb_offline_run_has_the_config_scalars_videos_and_scores(full_run):
    out, _ = full_run
    run_id = (out / "wandb_run_id.txt").read_text().strip()
    (run,) = (out / "wandb").glob(f"offline-run-*-{run_id}")
    (log,) = run.glob("*.wandb")  # the offline record stream: config, history rows
    data = log.read_bytes()
    for key in (b"global_batch_size", b"train/loss", b"eval/heldout_accuracy", b"validation/3dcs_mean"):
        assert key in data, key
    media = run / "files" / "media"
    for step in (0, 2, 4):
        assert len(list((media / "videos" / "validation").glob(f"videos_{step}_*.mp4"))) == len(PROMPTS)
        assert len(list((media / "images" / "validation").glob(f"frames_{step}_*.png"))) == 1
        (table,) = (media / "table" / "validation").glob(f"scores_{step}_*.table.json")
        summary = json.loads((out / f"validation/step_{step}/validation.json").read_text())
        rows = json.loads(table.read_text())
        assert [r[3] for r in rows["data"]] == pytest.approx([v["score"] for v in summary["videos"]])


def test_wandb_absent_is_a_clear_error_only_when_asked(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    data = {"output_dir": str(tmp_path), "data": {"synthetic": {}}}
    config_from_dict(data)  # not asked for: fine
    with pytest.raises(ValueError, match="logging.wandb.*pip install wandb"):
        config_from_dict({**data, "logging": {"wandb": {"project": "p"}}})
    with pytest.raises(ValueError, match="eval.validation.prompts"):
        config_from_dict({**data, "eval": {"validation": {"prompts": []}}})


def test_run_report_shows_the_validation_grids(full_run):
    from tests.test_report import check_report

    out, result = full_run
    images, text = check_report(out)  # written by the trainer at its end
    assert [i for i in images if i.startswith("validation/")] == [
        f"validation/step_{s}/frames.png" for s in (0, 2, 4)
    ]
    assert "heldout_accuracy.png" in images and "training_curves.png" in images
    assert f"{100 * result['heldout_accuracy_after']:.1f}% after 4 steps" in text and "(base model)" in text


def test_resume_drops_later_evaluations_and_a_fresh_run_drops_all(tmp_path, vggt):
    from videogpa.engine.train.heldout import Evaluations
    from videogpa.engine.train.validation import ValidationVideos

    cfg = _config(tmp_path, vggt)
    history = [{"step": 0, "accuracy": 0.5}, {"step": 2, "accuracy": 0.6}, {"step": 4, "accuracy": 0.7}]

    def evaluations(start_step):
        (tmp_path / "heldout_history.json").write_text(json.dumps(history))
        for step in (0, 2, 4):
            (tmp_path / f"validation/step_{step}").mkdir(parents=True, exist_ok=True)
            (tmp_path / f"validation/step_{step}/validation.json").write_text("{}")
        videos = ValidationVideos(cfg, None, tmp_path, torch.device("cpu"), torch.float32)
        return Evaluations(cfg, tmp_path, start_step, None, lambda: 1.0, videos, None)

    assert evaluations(2).history == history[:2]  # resumed at step 2: step 4 is redone
    assert sorted(p.name for p in (tmp_path / "validation").iterdir()) == ["step_0", "step_2"]
    assert json.loads((tmp_path / "heldout_history.json").read_text()) == history[:2]
    assert evaluations(0).history == []  # a fresh run (--overwrite) keeps nothing of the old one
    assert list((tmp_path / "validation").iterdir()) == []


def test_full_fine_tuning_samples_with_the_trained_transformer(tmp_path):
    validation = {"prompts": PROMPTS[:1], "seeds": [3], **SAMPLER}
    cfg = tiny_config(
        tmp_path,
        lora={"enabled": False},
        dpo={"beta": 500.0, "reference": "precomputed"},
        train={"max_steps": 2, "checkpoint_every": 0},
        eval={"draws": 1, "validation": validation},
    )
    Trainer(cfg).run()
    latents = {
        s: load_file(str(tmp_path / f"validation/step_{s}/latents/prompt00_s3.safetensors"))["latents"]
        for s in (0, 2)
    }
    base = _base_latents()
    torch.testing.assert_close(latents[0], base[0], rtol=1e-4, atol=1e-4)
    assert (latents[2] - latents[0]).abs().max() > 1e-3
    assert not (tmp_path / "validation/step_2/pytorch_lora_weights.safetensors").exists()
    assert json.loads((tmp_path / "validation/step_2/validation.json").read_text())["videos"][0]["seed"] == 3


def test_bad_validation_inputs_are_named_before_anything_is_written(tmp_path):
    validation = {"prompts": PROMPTS[:1], "images": [str(tmp_path / "missing.png")]}
    with pytest.raises(ValueError, match="eval.validation.images: .*missing.png does not exist"):
        Trainer(tiny_config(tmp_path / "run", eval={"validation": validation}))
    with pytest.raises(ValueError, match="not a local diffusers pipeline folder"):
        Trainer(
            tiny_config(
                tmp_path / "run", eval={"validation": {"prompts": PROMPTS, "pipeline": str(tmp_path)}}
            )
        )
    assert not (tmp_path / "run").exists()


def test_lora_scale_zero_samples_the_base_model(tmp_path, vggt):
    cfg = _config(tmp_path / "run", vggt)
    cfg.train.max_steps, cfg.eval.every = 2, 2
    cfg.eval.validation.lora_scale, cfg.eval.validation.score = 0.0, None
    Trainer(cfg).run()
    steps = [tmp_path / "run" / "validation" / f"step_{n}" for n in (0, 2)]
    rows = [json.loads(line) for line in (steps[1] / "manifest.jsonl").read_text().splitlines()]
    assert rows and all(row["lora_scale"] == 0.0 for row in rows)
    files = sorted(p.name for p in (steps[0] / "latents").glob("*.safetensors"))
    assert files
    for name in files:
        before, after = (load_file(str(step / "latents" / name))["latents"] for step in steps)
        torch.testing.assert_close(after, before)
