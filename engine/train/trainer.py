"""The Diffusion-DPO trainer: composes a model adapter, preference data, a reference strategy and the fused
loss under DeepSpeed (ZeRO, bf16, accumulation, clipping), with atomic checkpoints and exact resume."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch

from videogpa.engine.core.config import Config
from videogpa.engine.core.config_loading import require_real_paths
from videogpa.engine.core.report import write_report
from videogpa.engine.data.preference import PreferenceSampler
from videogpa.engine.models.lora import export_trained_weights
from videogpa.engine.runtime import distributed as D
from videogpa.engine.train import checkpoint as ckpt
from videogpa.engine.train import reference as R
from videogpa.engine.train.dpo_step import LossSettings, dpo_forward, inputs_for_pairs
from videogpa.engine.train.exports import export_after_training
from videogpa.engine.train.heldout import Evaluations, heldout_accuracy
from videogpa.engine.train.policy import build_policy, model_adapter
from videogpa.engine.train.run_folder import claim_output_dir, record_resume, resume_point
from videogpa.engine.train.run_logs import (
    MetricsLogger,
    StepReporter,
    wandb_login_problem,
    write_final_report,
    write_run_records,
)
from videogpa.engine.train.training_data import load_training_sets
from videogpa.engine.train.validation import ValidationVideos

METRIC_NAMES = (
    "loss",
    "accuracy",
    "reward_margin",
    "logits_mean",
    "policy_err_w",
    "policy_err_l",
    "ref_err_w",
    "ref_err_l",
)
SOURCE_DIR = Path(__file__).resolve().parents[1]


class Trainer:
    """Build everything from a Config; `run()` trains, checkpoints, evaluates and exports."""

    def __init__(
        self, cfg: Config, resume: bool = False, overwrite: bool = False, allow_config_change: bool = False
    ):
        """Validate everything (model folder, data, weights, the checkpoint to resume) before the output
        folder is written; one trainer per folder (a lock); a fresh run never mixes with another run's
        files."""
        require_real_paths(cfg)
        self.cfg, self.out = cfg, Path(cfg.output_dir)
        D.init_distributed()
        D.init_sequence_parallel(cfg.distributed.sequence_parallel)
        problem = wandb_login_problem(cfg) if D.is_main() else None  # rank 0 logs; checked before any work
        D.raise_together(ValueError(problem) if problem else None)
        self.device, self.world = D.device(), D.data_parallel_size()  # world: data-parallel ranks
        self.dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32
        self.loss = LossSettings(cfg.dpo.beta, cfg.dpo.loss_type, cfg.dpo.label_smoothing)
        self.gas = D.accumulation_steps(cfg, self.world)
        D.seed_everything(cfg.seed)
        # read-only checks first: the model folder, shard data, validation inputs
        self.adapter = model_adapter(cfg)
        self.videos = cfg.eval.validation and ValidationVideos(
            cfg, self.adapter, self.out, self.device, self.dtype
        )
        sets = None if cfg.data.synthetic is not None else load_training_sets(cfg, self.adapter, self.out)
        self._lock = contextlib.ExitStack()
        try:
            claim_output_dir(self._lock, self.out, resume, overwrite)
            self._set_up(sets, resume, overwrite, allow_config_change)
        except BaseException:
            self.close()
            raise

    def _set_up(self, sets, resume: bool, overwrite: bool, allow_config_change: bool) -> None:
        cfg = self.cfg
        resumed = self._read_resume_point(allow_config_change) if resume else None  # before any work
        # synthetic sets are written into the (claimed) output folder
        self.train_set, self.heldout_set = sets or load_training_sets(cfg, self.adapter, self.out)
        self.sampler = PreferenceSampler(
            len(self.train_set), cfg.train.global_batch_size, D.data_parallel_rank(), self.world, cfg.seed
        )
        self.engine, self.ref_model = build_policy(cfg, self.adapter, self.dtype, self.world)
        self.start_step, self.nan_skipped, self.skips_in_row, self.recorded_tables = 0, 0, 0, {}
        if resumed is not None:
            self._resume(*resumed)
        elif overwrite and D.is_main():
            ckpt.clear_run_files(self.out)
        if D.is_main():
            write_run_records(self.out, cfg, D.world_size(), SOURCE_DIR, self.adapter.ships_pipeline)
        D.barrier()
        self.reference = self._reference(train=True)
        self.heldout_reference = self._reference(train=False) if self.heldout_set is not None else None
        self.logger = MetricsLogger(self.out, D.is_main(), resume_step=self.start_step, cfg=cfg)
        measure = self.heldout_accuracy if self.heldout_set is not None else None
        self.evals = Evaluations(
            cfg, self.out, self.start_step, self.logger, measure, self.videos, self.engine.module
        )

    def close(self) -> None:
        """Release the output folder's lock (run() does at its end)."""
        self._lock.close()

    def _reference(self, train: bool):
        """This split's reference strategy (engine.train.reference.build_reference)."""
        site = R.ReferenceSite(
            self.cfg,
            self.adapter,
            self.engine,
            self.ref_model,
            self.out,
            self.start_step > 0,
            self.recorded_tables,
            self.device,
            self.dtype,
        )
        dataset = self.train_set if train else self.heldout_set
        return R.build_reference(site, R.Split(dataset, train, self.sampler.batches_per_epoch))

    def _read_resume_point(self, allow_config_change: bool) -> tuple[ckpt.ReadCheckpoint, dict]:
        """The checkpoint to resume from, verified and read (data only) before any model is built."""
        path, changes = resume_point(self.out, self.cfg.to_dict(), allow_config_change)
        return ckpt.read_checkpoint(path, verified=True), changes

    def _resume(self, read: ckpt.ReadCheckpoint, changes: dict) -> None:
        state = ckpt.restore(self.engine, read)
        self.start_step, self.nan_skipped = state["step"], state["nan_skipped"]
        self.skips_in_row = state.get("skips_in_row", 0)
        self.recorded_tables = state.get("reference_tables", {})  # precomputed references' SHA-256
        record_resume(self.out, read.path, self.start_step, changes)

    def train_step(self, step: int) -> dict:
        """One optimizer step (all accumulation micro-steps); returns its metrics record."""
        cfg, t0, lr = self.cfg, time.perf_counter(), self.engine.get_lr()[0]
        epoch, batch = divmod(step, self.sampler.batches_per_epoch)
        draw = epoch if cfg.dpo.noise_cycle is None else epoch % cfg.dpo.noise_cycle
        micro = D.micro_batch_size(cfg, self.world)
        stats, culprits = [], []
        for k in range(self.gas):
            pairs = self.sampler.rank_batch(epoch, batch)[k * micro : (k + 1) * micro]
            inputs = self._inputs(pairs, draw)
            out = dpo_forward(self.adapter, self.engine, self.reference, inputs, self.loss)
            nonfinite = D.all_reduce_max(
                torch.tensor(float(not torch.isfinite(out.loss)), device=self.device)
            )
            if nonfinite.item() > 0:
                culprits += self._non_finite_pairs(out, pairs)
                if cfg.dpo.nan_policy == "stop":
                    raise FloatingPointError(
                        f"non-finite DPO loss at step {step + 1}, from {'; '.join(culprits)}; set "
                        "dpo.nan_policy: skip to skip such steps"
                    )
            # A non-finite loss gives non-finite gradients; DeepSpeed then discards the whole optimizer step.
            self.engine.backward(out.loss)
            self.engine.step()
            stats.append(torch.stack([getattr(out, name).float() for name in METRIC_NAMES]))
        mean = D.all_reduce_mean(torch.stack(stats).mean(0))
        record = {"step": step + 1, **dict(zip(METRIC_NAMES, mean.tolist()))}
        self.skips_in_row = self.skips_in_row + 1 if culprits else 0
        if culprits:
            self.nan_skipped += 1
            record.update(loss=None, skipped=True, non_finite_pairs=culprits)
            if D.is_main():
                print(f"step {step + 1} skipped: non-finite loss from {'; '.join(culprits)}", flush=True)
        grad_norm = self.engine.get_global_grad_norm()
        record.update(
            lr=lr,
            grad_norm=None if grad_norm is None else float(grad_norm),
            samples_per_s=cfg.train.global_batch_size / (time.perf_counter() - t0),
            nan_skipped=self.nan_skipped,
        )
        return record

    def _inputs(self, pairs: list[int], draw: int):
        """Collective: the step inputs of this rank's pairs; a pair that cannot be read (non-finite or damaged
        data) is the same ValueError, naming its shard and pair, on every rank (none waits in a forward)."""
        inputs, error = None, None
        try:
            draws = [draw] * len(pairs)
            inputs = inputs_for_pairs(
                self.adapter, self.train_set, pairs, draws, self.cfg.seed, self.device, self.dtype
            )
        except ValueError as err:
            error = err
        if D.all_reduce_max(torch.tensor(float(error is not None), device=self.device)).item() > 0:
            D.raise_together(error)
        return inputs

    def _non_finite_pairs(self, out, pairs: list[int]) -> list[str]:
        """Collective: every rank's pairs whose DPO logits are not finite (all of a rank's pairs when its loss
        is non-finite with finite logits), each named by its shard and pair_id, and which side went bad."""
        mine = []
        if not torch.isfinite(out.loss):
            logits = out.logits.detach().float().cpu()
            bad = [b for b in range(len(pairs)) if not torch.isfinite(logits[b])] or list(range(len(pairs)))
            n = len(pairs)
            errs = {"policy": out.policy_err.detach().cpu(), "reference": out.ref_err.detach().cpu()}
            for b in bad:
                sides = [
                    f"{who} error of the {side}"
                    for who, e in errs.items()
                    for side, j in (("winner", b), ("loser", n + b))
                    if not torch.isfinite(e[j])
                ]
                mine.append(
                    self.train_set.describe_pair(pairs[b]) + (f" ({', '.join(sides)})" if sides else "")
                )
        return [name for part in D.gather_dicts({str(D.rank()): mine}).values() for name in part]

    def heldout_accuracy(self) -> float:
        """Implicit-reward accuracy on the held-out pairs (engine.heldout)."""
        if self.heldout_set is None:
            raise ValueError("no held-out set: set data.heldout or data.synthetic")
        self.engine.eval()
        acc = heldout_accuracy(
            self.adapter,
            self.engine,
            self.heldout_reference,
            self.heldout_set,
            draws=self.cfg.eval.draws,
            batch_size=self.cfg.eval.batch_size,
            seed=self.cfg.seed,
            loss=self.loss,
            device=self.device,
            dtype=self.dtype,
        )
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
        before = self.evals.before()
        report, stopped = (
            StepReporter(
                cfg.train.max_steps, self.start_step, cfg.train.log_every, D.is_main(), cfg.train.progress_bar
            ),
            False,
        )
        self.saved_step = self.start_step
        for step in range(self.start_step, cfg.train.max_steps):
            try:
                record = self.train_step(step)
            except (ValueError, FloatingPointError) as err:  # bad data or a non-finite loss: nothing lost
                raise self._stop(step, err) from None
            self.logger.log(record)
            report.step(record)
            if self.skips_in_row > cfg.dpo.max_consecutive_skips:
                limit, last = cfg.dpo.max_consecutive_skips, "; ".join(record["non_finite_pairs"])
                message = (
                    f"stopped at step {step + 1}: {self.skips_in_row} steps in a row had a non-finite loss "
                    f"or gradients (dpo.max_consecutive_skips {limit}), the last from {last}"
                )
                raise self._stop(record["step"], FloatingPointError(message))
            self.evals.after_step(record["step"])
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
        export_after_training(self.out, cfg.train.export_formats)
        if D.is_main():  # the run's last line: where to look
            print(f"report (open it in a browser): {write_report(self.out)}", flush=True)
        return result

    def _stop(self, done: int, err: Exception) -> Exception:
        """Collective: a run stopped by bad data or non-finite values keeps its last good state: the state
        after `done` steps is saved as a checkpoint (unless one holds it already); the error says so. Skipped
        steps changed no weight, so the state is the last finite one."""
        self.logger.close()
        if done > self.saved_step:
            try:
                kept = f"the last good state (step {done}) is saved as checkpoint {self._save(done)}"
            except ValueError as save_err:
                kept = f"saving the last good state (step {done}) failed too: {save_err}"
        elif done:
            kept = f"the last good state (step {done}) is checkpoint {ckpt.latest_checkpoint(self.out)}"
        else:
            kept = "no step had finished"
        message = f"{err}; {kept}" + ("; continue with --resume once fixed" if done else "")
        return type(err)(message)

    def _save(self, step: int) -> Path:
        splits = ((True, self.reference), (False, self.heldout_reference))
        tables = {R.table_name(train): ref.sha256 for train, ref in splits if isinstance(ref, R.Precomputed)}
        state = {
            "nan_skipped": self.nan_skipped,
            "skips_in_row": self.skips_in_row,
            "reference_tables": tables,
        }
        keep = self.cfg.train.keep_checkpoints
        path = ckpt.save_checkpoint(self.engine, self.out, step, state, self.cfg.to_dict(), keep)
        self.saved_step = step
        return path

    def _finish(self, before: float | None) -> dict | None:
        result, after = None, self.evals.final()
        if self.heldout_set is not None:
            result = {
                "heldout_accuracy_before": before,
                "heldout_accuracy_after": after,
                "pairs": len(self.heldout_set),
                "draws": self.cfg.eval.draws,
                "steps": self.cfg.train.max_steps,
                "nan_skipped": self.nan_skipped,
                "heldout_history": self.evals.history,
            }
            if D.is_main():
                write_final_report(self.out, result, self.cfg.eval.plot)
        self.logger.close()
        D.barrier()
        return result
