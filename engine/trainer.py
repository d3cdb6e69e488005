"""The Diffusion-DPO trainer: composes a model adapter, preference data, a reference strategy and the fused
loss under DeepSpeed (ZeRO, bf16, accumulation, clipping), with atomic checkpoints and exact resume."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path

import torch

from videogpa.engine import checkpoint as ckpt
from videogpa.engine import distributed as D
from videogpa.engine import dpo_reference as R
from videogpa.engine.config import Config, config_changes
from videogpa.engine.data.preference import PreferenceSampler
from videogpa.engine.dpo_step import LossSettings, dpo_forward, inputs_for_pairs
from videogpa.engine.exports import export_run
from videogpa.engine.heldout import EVAL_SEED_OFFSET, accuracy_before, heldout_accuracy
from videogpa.engine.io.lock import folder_lock
from videogpa.engine.io.records import append_jsonl
from videogpa.engine.logging_utils import MetricsLogger, StepReporter, write_final_report, write_run_records
from videogpa.engine.models import get_adapter
from videogpa.engine.models.lora import (
    apply_lora,
    enable_full_finetuning,
    enable_gradient_checkpointing,
    export_trained_weights,
)
from videogpa.engine.optim import build_optimizer
from videogpa.engine.training_data import load_training_sets

METRIC_NAMES = ("loss", "accuracy", "reward_margin", "logits_mean", "policy_err_w", "policy_err_l")
METRIC_NAMES += ("ref_err_w", "ref_err_l")
SOURCE_DIR = Path(__file__).resolve().parents[1]
LOCK_NAME = ".train.lock"


class Trainer:
    """Build everything from a Config; `run()` trains, checkpoints, evaluates and exports."""

    def __init__(
        self, cfg: Config, resume: bool = False, overwrite: bool = False, allow_config_change: bool = False
    ):
        """Validate everything (model folder, data, weights, the checkpoint to resume) before the output folder
        is written; one trainer per folder (a lock); a fresh run never mixes with another run's files."""
        self.cfg, self.out = cfg, Path(cfg.output_dir)
        D.init_distributed()
        self.device, self.world = D.device(), D.world_size()
        self.dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32
        self.loss = LossSettings(cfg.dpo.beta, cfg.dpo.loss_type, cfg.dpo.label_smoothing)
        self.gas = D.accumulation_steps(cfg, self.world)
        D.seed_everything(cfg.seed)
        self._lock = contextlib.ExitStack()
        try:
            self._claim_output_dir(resume, overwrite)
            self._set_up(resume, overwrite, allow_config_change)
        except BaseException:
            self.close()
            raise

    def _claim_output_dir(self, resume: bool, overwrite: bool) -> None:
        """Collective: rank 0 locks the folder and checks it holds no other run; every rank agrees."""
        error = None
        if D.is_main():
            try:
                self._lock.enter_context(folder_lock(self.out, LOCK_NAME))
                other = ckpt.previous_run(self.out)
                if other and not resume and not overwrite:
                    raise ValueError(f"{self.out} holds another run ({other}); continue it with --resume or "
                                     "replace it with --overwrite")  # fmt: skip
            except ValueError as err:
                error = err
            except OSError as err:  # a read-only or full disk, a path through a file
                error = ValueError(
                    f"cannot write the output folder {err.filename or self.out}: {err.strerror or err}"
                )
        D.raise_together(error)

    def _set_up(self, resume: bool, overwrite: bool, allow_config_change: bool) -> None:
        cfg = self.cfg
        path = cfg.model.path
        if path is not None and not Path(path).is_dir():
            raise ValueError(f"config key 'model.path': checkpoint folder {path!r} does not exist (set it to a "
                             f"local diffusers folder for model {cfg.model.name!r})")  # fmt: skip
        self.adapter = get_adapter(cfg.model.name, path=path)
        self.train_set, self.heldout_set = load_training_sets(cfg, self.adapter, self.out)
        self.sampler = PreferenceSampler(
            len(self.train_set), cfg.train.global_batch_size, D.rank(), self.world, cfg.seed
        )
        self.engine, self.ref_model = self._build_engine()
        self.start_step, self.nan_skipped, self.skips_in_row = 0, 0, 0
        if resume:
            self._resume(allow_config_change)
        elif overwrite and D.is_main():
            ckpt.clear_run_files(self.out)
        if D.is_main():
            write_run_records(self.out, cfg, self.world, SOURCE_DIR)
        D.barrier()
        self.reference = self._reference(train=True)
        self.heldout_reference = self._reference(train=False) if self.heldout_set is not None else None
        self.logger = MetricsLogger(self.out, D.is_main(), resume_step=self.start_step)

    def close(self) -> None:
        """Release the output folder's lock (run() does at its end)."""
        self._lock.close()

    def _build_engine(self):
        import deepspeed

        cfg = self.cfg
        model = self.adapter.load_transformer(cfg.model.path, self.dtype)
        ref_model = (
            copy.deepcopy(model).requires_grad_(False).eval() if cfg.dpo.reference == "separate" else None
        )
        if cfg.lora.enabled:
            targets = cfg.lora.targets or list(self.adapter.default_lora_targets)
            model = apply_lora(model, cfg.lora.rank, cfg.lora.alpha, targets, cfg.lora.dropout)
        else:
            model = enable_full_finetuning(model)
        if cfg.model.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        optimizer, scheduler = build_optimizer(
            model, cfg.optim, cfg.train.max_steps, cfg.distributed.offload_optimizer
        )
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                          config=D.deepspeed_config(cfg, self.world))  # fmt: skip
        if ref_model is not None:
            ds = D.inference_config(cfg, self.world, cfg.dpo.reference_offload)
            ref_model = deepspeed.initialize(model=ref_model, config=ds)[0].eval()
        return engine, ref_model

    def _reference(self, train: bool):
        """This split's reference strategy; `precomputed` tables are keyed by seed, pairs, draws and model."""
        cfg = self.cfg
        online = R.online_reference(self.adapter, self.engine.module if cfg.lora.enabled else self.engine,
                                    self.ref_model, cfg.lora.enabled)  # fmt: skip
        if cfg.dpo.reference != "precomputed":
            return online
        dataset = self.train_set if train else self.heldout_set
        seed = cfg.seed if train else cfg.seed + EVAL_SEED_OFFSET
        epochs = math.ceil(cfg.train.max_steps / self.sampler.batches_per_epoch)  # one draw per epoch
        draws = min(epochs, cfg.dpo.noise_cycle or epochs) if train else cfg.eval.draws
        meta = {"seed": str(seed), "pairs": str(len(dataset)), "draws": str(draws), "model": cfg.model.name}
        name = "reference_errors.safetensors" if train else "reference_errors_heldout.safetensors"

        def compute():
            make = lambda idx, draw: inputs_for_pairs(self.adapter, dataset, idx, [draw] * len(idx), seed,
                                                      self.device, self.dtype)  # fmt: skip
            self.engine.eval()
            table = R.compute_table(len(dataset), draws, cfg.eval.batch_size, make, online, self.device)
            self.engine.train()
            return table

        return R.precomputed_reference(self.out / name, meta, compute, resuming=self.start_step > 0)

    def _resume(self, allow_config_change: bool) -> None:
        """The newest intact checkpoint (damaged newer ones are named and passed over), refused when the
        config changed unless allowed (then the change is recorded in config_changes.jsonl)."""
        path, passed = ckpt.newest_intact(self.out)
        for line in passed if D.is_main() else []:
            print(f"resume: passing over damaged checkpoint {line}", flush=True)
        if path is None:
            found = "; ".join(passed) or f"no checkpoint folder under {ckpt.checkpoint_root(self.out)}"
            raise ValueError(f"--resume: no intact checkpoint in {self.out} ({found})")
        state = ckpt.read_trainer_state(path)
        changes = config_changes(state["config"], self.cfg.to_dict())
        if changes and not allow_config_change:
            listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in changes.items()))
            raise ValueError(f"--resume: the config differs from {path.name}'s ({listed}); "
                             "pass --allow-config-change to resume with it")  # fmt: skip
        state = ckpt.load_checkpoint(self.engine, path, verified=True)
        self.start_step, self.nan_skipped = state["step"], state["nan_skipped"]
        self.skips_in_row = state.get("skips_in_row", 0)
        if D.is_main():
            if changes:
                append_jsonl(self.out / "config_changes.jsonl", {"step": self.start_step, "changes": changes})
            print(f"resumed from {path} at step {self.start_step}", flush=True)

    def train_step(self, step: int) -> dict:
        """One optimizer step (all accumulation micro-steps); returns its metrics record."""
        cfg, t0, lr = self.cfg, time.perf_counter(), self.engine.get_lr()[0]
        epoch, batch = divmod(step, self.sampler.batches_per_epoch)
        draw = epoch if cfg.dpo.noise_cycle is None else epoch % cfg.dpo.noise_cycle
        micro = D.micro_batch_size(cfg, self.world)
        stats, bad = [], False
        for k in range(self.gas):
            pairs = self.sampler.rank_batch(epoch, batch)[k * micro : (k + 1) * micro]
            inputs = inputs_for_pairs(self.adapter, self.train_set, pairs, [draw] * len(pairs), cfg.seed,
                                      self.device, self.dtype)  # fmt: skip
            out = dpo_forward(self.adapter, self.engine, self.reference, inputs, self.loss)
            nonfinite = D.all_reduce_max(
                torch.tensor(float(not torch.isfinite(out.loss)), device=self.device)
            )
            if nonfinite.item() > 0 and cfg.dpo.nan_policy == "stop":
                raise FloatingPointError(f"non-finite DPO loss at step {step + 1} (pairs {pairs}); "
                                         "set dpo.nan_policy: skip to skip such steps")  # fmt: skip
            # A non-finite loss gives non-finite gradients; DeepSpeed then discards the whole optimizer step.
            self.engine.backward(out.loss)
            self.engine.step()
            stats.append(torch.stack([getattr(out, name).float() for name in METRIC_NAMES]))
            bad |= bool(nonfinite.item() > 0)
        mean = D.all_reduce_mean(torch.stack(stats).mean(0))
        record = {"step": step + 1, **dict(zip(METRIC_NAMES, mean.tolist()))}
        self.skips_in_row = self.skips_in_row + 1 if bad else 0
        if bad:
            self.nan_skipped += 1
            record.update(loss=None, skipped=True)
        if self.skips_in_row > cfg.dpo.max_consecutive_skips:
            raise FloatingPointError(f"stopped at step {step + 1}: {self.skips_in_row} steps in a row had a non-finite "
                                     f"loss or gradients (dpo.max_consecutive_skips {cfg.dpo.max_consecutive_skips}); "
                                     "the last checkpoint and the exported weights are the last finite ones")  # fmt: skip
        grad_norm = self.engine.get_global_grad_norm()
        record.update(lr=lr, grad_norm=None if grad_norm is None else float(grad_norm),
                      samples_per_s=cfg.train.global_batch_size / (time.perf_counter() - t0),
                      nan_skipped=self.nan_skipped)  # fmt: skip
        return record

    def heldout_accuracy(self) -> float:
        """Implicit-reward accuracy on the held-out pairs (engine.heldout)."""
        if self.heldout_set is None:
            raise ValueError("no held-out set: set data.heldout or data.synthetic")
        self.engine.eval()
        acc = heldout_accuracy(self.adapter, self.engine, self.heldout_reference, self.heldout_set,
                               draws=self.cfg.eval.draws, batch_size=self.cfg.eval.batch_size, seed=self.cfg.seed,
                               loss=self.loss, device=self.device, dtype=self.dtype)  # fmt: skip
        self.engine.train()
        return acc

    def run(self, stop_after: int | None = None) -> dict | None:
        """Train to train.max_steps (or stop after `stop_after` steps, as a kill would); returns eval.json."""
        try:
            return self._run(stop_after)
        finally:
            self.close()

    def _run(self, stop_after: int | None) -> dict | None:
        cfg = self.cfg
        before = self._accuracy_before()
        stopped = False
        report = StepReporter(cfg.train.max_steps, self.start_step, cfg.train.log_every, D.is_main(),
                              cfg.train.progress_bar)  # fmt: skip
        for step in range(self.start_step, cfg.train.max_steps):
            record = self.train_step(step)
            self.logger.log(record)
            report.step(record)
            every = cfg.train.checkpoint_every
            if every and record["step"] % every == 0 and record["step"] < cfg.train.max_steps:
                self._save(record["step"])
            if stop_after is not None and record["step"] >= stop_after:
                stopped = True
                break
        report.close()
        if stopped:
            self.logger.close()
            return None
        self._save(cfg.train.max_steps)
        export_trained_weights(self.engine.module, self.out, cfg.lora.enabled)
        result = self._finish(before)
        # the other formats are made from the diffusers file, with eval.json's numbers
        if cfg.train.export_formats != ["diffusers"]:
            if D.is_main():
                export_run(self.out, cfg.train.export_formats)
            D.barrier()
        return result

    def _save(self, step: int) -> None:
        state = {"nan_skipped": self.nan_skipped, "skips_in_row": self.skips_in_row}
        ckpt.save_checkpoint(
            self.engine, self.out, step, state, self.cfg.to_dict(), self.cfg.train.keep_checkpoints
        )

    def _accuracy_before(self) -> float | None:
        """Held-out accuracy of the initial model, computed once (eval_before.json keeps it across resumes)."""
        if self.heldout_set is None:
            return None
        return accuracy_before(
            self.out / "eval_before.json", self.start_step > 0, self.heldout_accuracy, self.logger
        )

    def _finish(self, before: float | None) -> dict | None:
        result = None
        if self.heldout_set is not None:
            after = self.heldout_accuracy()
            self.logger.scalar("eval/heldout_accuracy", after, self.cfg.train.max_steps)
            result = {"heldout_accuracy_before": before, "heldout_accuracy_after": after,
                      "pairs": len(self.heldout_set), "draws": self.cfg.eval.draws,
                      "steps": self.cfg.train.max_steps, "nan_skipped": self.nan_skipped}  # fmt: skip
            if D.is_main():
                write_final_report(self.out, result, self.cfg.eval.plot)
        self.logger.close()
        D.barrier()
        return result
