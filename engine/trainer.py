"""The Diffusion-DPO trainer: composes a model adapter, preference data, a reference strategy and the fused
loss under DeepSpeed (ZeRO, bf16, accumulation, clipping), with atomic checkpoints and exact resume."""

from __future__ import annotations

import copy
import functools
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from videogpa.engine import checkpoint as ckpt
from videogpa.engine import distributed as D
from videogpa.engine import reference as R
from videogpa.engine.config import Config, OptimConfig, save_config
from videogpa.engine.data.preference import PreferenceDataset, PreferenceSampler, collate_pairs
from videogpa.engine.dpo_step import LossSettings, StepInputs, build_inputs, dpo_forward
from videogpa.engine.logging_utils import (
    MetricsLogger,
    format_line,
    plot_heldout_accuracy,
    plot_training_curves,
    read_metrics,
    run_info,
)
from videogpa.engine.models import get_adapter
from videogpa.engine.models.lora import (
    apply_lora,
    enable_full_finetuning,
    enable_gradient_checkpointing,
    save_lora_weights,
)

EVAL_SEED_OFFSET = 1_000_003  # held-out draws never coincide with training draws
METRIC_NAMES = ("loss", "accuracy", "reward_margin", "logits_mean", "policy_err_w", "policy_err_l")
METRIC_NAMES += ("ref_err_w", "ref_err_l")
SOURCE_DIR = Path(__file__).resolve().parents[1]


def lr_lambda(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to min_ratio (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, optim: OptimConfig, total_steps: int, cpu_offload: bool = False):
    """AdamW over the trainable parameters (torch's; DeepSpeed's CPU Adam when the optimizer state is
    offloaded to the CPU, where DeepSpeed requires it) and its warm-up + cosine LambdaLR."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (check lora.targets)")
    kwargs = dict(lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps, weight_decay=optim.weight_decay)
    if cpu_offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        opt = DeepSpeedCPUAdam(params, adamw_mode=True, **kwargs)
    else:
        opt = torch.optim.AdamW(params, **kwargs)
    schedule = functools.partial(
        lr_lambda,
        warmup=optim.warmup_steps,
        total=total_steps,
        schedule=optim.schedule,
        min_ratio=optim.min_lr_ratio,
    )
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Build everything from a Config; `run()` trains, checkpoints, evaluates and exports."""

    def __init__(self, cfg: Config, resume: bool = False):
        self.cfg, self.resume = cfg, resume
        self.out = Path(cfg.output_dir)
        D.init_distributed()
        self.device = D.device()
        self.world = D.world_size()
        self.dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float32
        self.loss = LossSettings(cfg.dpo.beta, cfg.dpo.loss_type, cfg.dpo.label_smoothing)
        self.gas = D.accumulation_steps(cfg, self.world)
        seed_everything(cfg.seed)
        self.adapter = self._adapter()
        self._prepare_output_dir()
        self.train_set, self.heldout_set = self._datasets()
        self.sampler = PreferenceSampler(
            len(self.train_set), cfg.train.global_batch_size, D.rank(), self.world, cfg.seed
        )
        self.engine, self.ref_model = self._build_engine()
        self.start_step, self.nan_skipped = 0, 0
        if resume:
            self._resume()
        self.reference = self._reference(train=True)
        self.heldout_reference = self._reference(train=False) if self.heldout_set is not None else None
        self.logger = MetricsLogger(self.out, D.is_main(), resume_step=self.start_step)

    # ----------------------------------------------------------------------------------------- set-up
    def _prepare_output_dir(self) -> None:
        if D.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            if not self.resume:
                ckpt.clear_run_files(self.out)
            save_config(self.cfg, self.out / "config.yaml")
            info = run_info(self.cfg.seed, self.world, SOURCE_DIR)
            (self.out / "run_info.json").write_text(json.dumps(info, indent=1))
        D.barrier()

    def _datasets(self) -> tuple[PreferenceDataset, PreferenceDataset | None]:
        data = self.cfg.data
        train, heldout = data.train, data.heldout
        if data.synthetic is not None:
            from videogpa.engine.data.synthetic_pairs import write_synthetic_pairs

            spec = getattr(self.adapter, "spec", None)
            if spec is None:
                raise ValueError(
                    f"config section 'data.synthetic': model {self.cfg.model.name!r} has no built-in sample "
                    "shapes; synthetic pairs are for the tiny model (set data.train to preference shards)"
                )
            root = self.out / "data"
            if D.is_main():
                from videogpa.engine.data.encode import PipelineEncoder
                from videogpa.engine.generation.tiny import build_tiny_pipeline

                encoder = PipelineEncoder(build_tiny_pipeline(), spec.text_shape[0])  # the tiny model's own
                write_synthetic_pairs(root, data.synthetic, encoder, spec.latent_shape, self.adapter.latent_layout,
                                      spec.text_shape, progress=self.cfg.train.progress_bar)  # fmt: skip
            D.barrier()
            train, heldout = root / "train", root / "heldout"
        train_set = PreferenceDataset(train)
        if len(train_set) == 0:
            raise ValueError(f"training preference set {str(train)!r} is empty")
        heldout_set = PreferenceDataset(heldout) if heldout is not None else None
        if heldout_set is not None and len(heldout_set) == 0:
            raise ValueError(f"held-out preference set {str(heldout)!r} is empty")
        return train_set, heldout_set

    def _adapter(self):
        path = self.cfg.model.path
        if path is not None and not Path(path).is_dir():
            raise ValueError(
                f"config key 'model.path': checkpoint folder {path!r} does not exist (set it to a local "
                f"diffusers folder for model {self.cfg.model.name!r})"
            )
        return get_adapter(self.cfg.model.name, path=path)

    def _build_engine(self):
        import deepspeed

        cfg = self.cfg
        model = self.adapter.load_transformer(cfg.model.path, self.dtype)
        ref_model = None
        if cfg.dpo.reference == "separate":
            ref_model = copy.deepcopy(model).requires_grad_(False).eval()
        if cfg.lora.enabled:
            targets = cfg.lora.targets or list(self.adapter.default_lora_targets)
            model = apply_lora(model, cfg.lora.rank, cfg.lora.alpha, targets, cfg.lora.dropout)
        else:
            model = enable_full_finetuning(model)
        if cfg.model.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        optimizer, scheduler = build_optimizer(
            model, cfg.optim, cfg.train.max_steps, cpu_offload=cfg.distributed.offload_optimizer
        )
        engine, *_ = deepspeed.initialize(
            model=model,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=D.deepspeed_config(cfg, self.world),
        )
        if ref_model is not None:
            ref_model, *_ = deepspeed.initialize(
                model=ref_model, config=D.inference_config(cfg, self.world, cfg.dpo.reference_offload)
            )
            ref_model.eval()
        return engine, ref_model

    def _online_reference(self):
        """The reference as a forward pass: adapters off, the frozen copy, or (before any update) the
        policy itself."""
        if self.cfg.lora.enabled and self.cfg.dpo.reference != "separate":
            return R.AdaptersOff(self.adapter, self.engine.module)
        if self.ref_model is not None:
            return R.Frozen(self.adapter, self.ref_model)
        return R.Frozen(self.adapter, self.engine)

    def _reference(self, train: bool):
        if self.cfg.dpo.reference != "precomputed":
            return self._online_reference()
        dataset = self.train_set if train else self.heldout_set
        seed = self.cfg.seed if train else self.cfg.seed + EVAL_SEED_OFFSET
        draws = self._train_draws() if train else self.cfg.eval.draws
        name = "reference_errors.safetensors" if train else "reference_errors_heldout.safetensors"
        meta = {
            "seed": str(seed),
            "pairs": str(len(dataset)),
            "draws": str(draws),
            "model": self.cfg.model.name,
        }
        table = R.load_table(self.out / name, meta)
        if table is None:
            if self.start_step > 0:
                raise ValueError(
                    f"resuming a precomputed-reference run needs {self.out / name} (missing or stale)"
                )
            self.engine.eval()
            table = R.compute_table(
                len(dataset),
                draws,
                self.cfg.eval.batch_size,
                lambda idx, draw: self._inputs(dataset, idx, [draw] * len(idx), seed),
                self._online_reference(),
                self.device,
            )
            self.engine.train()
            if D.is_main():
                R.save_table(table, self.out / name, meta)
            D.barrier()
        return R.Precomputed(table)

    def _train_draws(self) -> int:
        """How many distinct per-pair draws training uses: one per epoch, or the noise cycle."""
        epochs = math.ceil(self.cfg.train.max_steps / self.sampler.batches_per_epoch)
        cycle = self.cfg.dpo.noise_cycle
        return epochs if cycle is None else min(epochs, cycle)

    def _resume(self) -> None:
        path = ckpt.latest_checkpoint(self.out)
        if path is None:
            raise ValueError(f"--resume: no checkpoint folder under {ckpt.checkpoint_root(self.out)}")
        state = ckpt.load_checkpoint(self.engine, path)
        self.start_step, self.nan_skipped = state["step"], state["nan_skipped"]
        if D.is_main():
            print(f"resumed from {path} at step {self.start_step}", flush=True)

    # ------------------------------------------------------------------------------------------- steps
    def _inputs(self, dataset: PreferenceDataset, idx: list[int], draws: list[int], seed: int) -> StepInputs:
        batch = collate_pairs([dataset[i] for i in idx])
        return build_inputs(
            self.adapter,
            batch.latents_w,
            batch.latents_l,
            batch.cond,
            torch.as_tensor(idx),
            torch.as_tensor(draws),
            seed,
            self.device,
            self.dtype,
        )

    def _draw(self, epoch: int) -> int:
        cycle = self.cfg.dpo.noise_cycle
        return epoch if cycle is None else epoch % cycle

    def _micro_step(self, step: int, k: int) -> dict[str, float]:
        cfg = self.cfg
        epoch, batch = divmod(step, self.sampler.batches_per_epoch)
        micro = D.micro_batch_size(cfg, self.world)
        pairs = self.sampler.rank_batch(epoch, batch)[k * micro : (k + 1) * micro]
        inputs = self._inputs(self.train_set, pairs, [self._draw(epoch)] * len(pairs), cfg.seed)
        out = dpo_forward(self.adapter, self.engine, self.reference, inputs, self.loss)
        bad = D.all_reduce_max(torch.tensor(float(not torch.isfinite(out.loss)), device=self.device))
        if bad.item() > 0 and cfg.dpo.nan_policy == "stop":
            raise FloatingPointError(
                f"non-finite DPO loss at step {step + 1} (pairs {pairs}); "
                "set dpo.nan_policy: skip to skip such steps"
            )
        # A non-finite loss gives non-finite gradients; DeepSpeed then discards the whole optimizer step.
        self.engine.backward(out.loss)
        self.engine.step()
        stats = torch.stack([getattr(out, name).float() for name in METRIC_NAMES])
        return {"stats": stats, "bad": bool(bad.item() > 0)}

    def train_step(self, step: int) -> dict:
        """One optimizer step (all accumulation micro-steps); returns its metrics record."""
        t0 = time.perf_counter()
        lr = self.engine.get_lr()[0]
        stats, bad = [], False
        for k in range(self.gas):
            res = self._micro_step(step, k)
            stats.append(res["stats"])
            bad |= res["bad"]
        mean = D.all_reduce_mean(torch.stack(stats).mean(0))
        elapsed = time.perf_counter() - t0
        record = {"step": step + 1, **dict(zip(METRIC_NAMES, mean.tolist()))}
        if bad:
            self.nan_skipped += 1
            record.update(loss=None, skipped=True)
        grad_norm = self.engine.get_global_grad_norm()
        record.update(
            lr=lr,
            grad_norm=None if grad_norm is None else float(grad_norm),
            samples_per_s=self.cfg.train.global_batch_size / elapsed,
            nan_skipped=self.nan_skipped,
        )
        return record

    # ------------------------------------------------------------------------------------------ eval
    @torch.no_grad()
    def heldout_accuracy(self) -> float:
        """Implicit-reward accuracy on held-out pairs: per pair the DPO logit averaged over fixed draws;
        a pair counts 1 if it is > 0, ½ if exactly 0 (policy = reference), 0 otherwise."""
        if self.heldout_set is None:
            raise ValueError("no held-out set: set data.heldout or data.synthetic")
        n, seed = len(self.heldout_set), self.cfg.seed + EVAL_SEED_OFFSET
        reference = self.heldout_reference
        logits = torch.zeros(n, dtype=torch.float64, device=self.device)
        self.engine.eval()
        for draw in range(self.cfg.eval.draws):
            for idx, real in R.rank_shard(n, self.cfg.eval.batch_size):
                inputs = self._inputs(self.heldout_set, idx, [draw] * len(idx), seed)
                out = dpo_forward(self.adapter, self.engine, reference, inputs, self.loss)
                logits[idx[:real]] += out.logits[:real].double()
        self.engine.train()
        if self.world > 1:
            torch.distributed.all_reduce(logits)
        return float(((logits > 0).double() + 0.5 * (logits == 0).double()).mean())

    # ------------------------------------------------------------------------------------------- run
    def run(self, stop_after: int | None = None) -> dict | None:
        """Train to train.max_steps (or stop after `stop_after` steps, as a kill would); returns eval.json."""
        cfg = self.cfg
        before = self._accuracy_before()
        bar = None
        if D.is_main() and cfg.train.progress_bar:
            from tqdm import tqdm

            bar = tqdm(total=cfg.train.max_steps, initial=self.start_step, desc="dpo", dynamic_ncols=True)
        for step in range(self.start_step, cfg.train.max_steps):
            record = self.train_step(step)
            self.logger.log(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=record["loss"], acc=record["accuracy"])
            if D.is_main() and (record["step"] % cfg.train.log_every == 0 or record["step"] == 1):
                (bar.write if bar is not None else print)(format_line(record))
            every = cfg.train.checkpoint_every
            if every and record["step"] % every == 0 and record["step"] < cfg.train.max_steps:
                self._save(record["step"])
            if stop_after is not None and record["step"] >= stop_after:
                if bar is not None:
                    bar.close()
                self.logger.close()
                return None
        if bar is not None:
            bar.close()
        self._save(cfg.train.max_steps)
        self._export()
        return self._finish(before)

    def _save(self, step: int) -> None:
        ckpt.save_checkpoint(
            self.engine, self.out, step, {"nan_skipped": self.nan_skipped}, self.cfg.train.keep_checkpoints
        )

    def _accuracy_before(self) -> float | None:
        """Held-out accuracy of the initial model (computed once, kept across resumes)."""
        path = self.out / "eval_before.json"
        if self.heldout_set is None:
            return None
        if self.start_step > 0 and path.is_file():
            return json.loads(path.read_text())["heldout_accuracy_before"]
        before = self.heldout_accuracy()
        self.logger.scalar("eval/heldout_accuracy", before, 0)
        if D.is_main():
            path.write_text(json.dumps({"heldout_accuracy_before": before}))
            print(f"held-out preference accuracy before training: {100 * before:.1f}%", flush=True)
        return before

    def _export(self) -> None:
        """Final weights: the LoRA in diffusers format, or the full transformer (gathered from ZeRO-3)."""
        import deepspeed

        module = self.engine.module
        lora = self.cfg.lora.enabled
        params = [p for p in module.parameters() if p.requires_grad or not lora]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            if D.is_main():
                if lora:
                    save_lora_weights(module, self.out)
                else:
                    module.save_pretrained(self.out / "transformer")
        D.barrier()

    def _finish(self, before: float | None) -> dict | None:
        if self.heldout_set is None:
            self.logger.close()
            return None
        after = self.heldout_accuracy()
        self.logger.scalar("eval/heldout_accuracy", after, self.cfg.train.max_steps)
        self.logger.close()
        result = {
            "heldout_accuracy_before": before,
            "heldout_accuracy_after": after,
            "pairs": len(self.heldout_set),
            "draws": self.cfg.eval.draws,
            "steps": self.cfg.train.max_steps,
            "nan_skipped": self.nan_skipped,
        }
        if D.is_main():
            (self.out / "eval.json").write_text(json.dumps(result, indent=1))
            print(
                f"held-out preference accuracy ({result['pairs']} pairs never trained on): "
                f"{100 * before:.1f}% before -> {100 * after:.1f}% after training",
                flush=True,
            )
            if self.cfg.eval.plot:
                plot_heldout_accuracy(before, after, result["pairs"], self.out / "heldout_accuracy.png")
                plot_training_curves(read_metrics(self.out), self.out / "training_curves.png")
            print(
                f"outputs in {self.out}/: eval.json, metrics.jsonl, plots, checkpoints, final weights",
                flush=True,
            )
        D.barrier()
        return result
