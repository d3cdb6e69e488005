"""The one config tree: a YAML file validated into nested dataclasses (unknown keys are errors).

The trainer's sections (model, lora, dpo, data, optim, train, distributed, eval) and the loop's (`loop:`, one
section per stage: generation, score, pairs, encode, evaluate) live in one `Config`; each stage module
(engine.stages) takes its section. Every default is written here once.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from videogpa.engine.io.atomic import write_atomic
from videogpa.engine.scenes.procedural import CORRUPTIONS
from videogpa.engine.types import DTYPE_CHOICES
from videogpa.kernels.dpo_loss import LOSS_TYPES

REFERENCE_STRATEGIES = ("adapters_off", "separate", "precomputed")
SDPA_KERNELS = ("auto", "cudnn", "flash", "efficient", "math")
PRECISIONS = ("bf16", "fp32")
# the final weights' formats (engine.exports): the diffusers LoRA, ComfyUI's key format, the merged
# transformer
EXPORT_FORMATS = ("diffusers", "comfyui", "merged")
NAN_POLICIES = ("skip", "stop")
STEP_CACHES = ("first_block",)  # diffusers' FirstBlockCacheConfig
LR_SCHEDULES = ("cosine", "constant")


@dataclass
class ModelConfig:
    name: str = "tiny"  # adapter registry name (videogpa.engine.models.adapter_names())
    # local diffusers pipeline folder (or its transformer/); None: the built-in tiny model
    path: str | None = None
    gradient_checkpointing: bool = True  # torch's non-reentrant activation checkpointing of the blocks
    checkpoint_fraction: float = 1.0  # selective checkpointing: the first round(f·L) blocks are checkpointed
    # PyTorch SDPA's kernel (auto: PyTorch's choice; cudnn, flash, efficient, math), or a diffusers attention
    # backend "diffusers:<name>" (e.g. diffusers:flash for flash-attn) for families that dispatch through it
    attention_backend: str = "auto"
    # regional torch.compile of the transformer's repeated blocks with this backend (e.g. inductor); None:
    # eager
    compile: str | None = None


@dataclass
class LoraConfig:
    enabled: bool = True  # False: full fine-tuning (needs reference: separate or precomputed)
    rank: int = 64  # LoRA rank r (the paper: 64)
    alpha: float = 128.0  # LoRA scale α (the paper: 128; the update is α/r·BA)
    dropout: float = 0.0  # LoRA dropout on the adapter input
    targets: list[str] | None = None  # module-name suffixes; None: the adapter's defaults
    # the pipeline components that get LoRA (Wan 2.2 A14B: transformer, transformer_2); None: every one
    experts: list[str] | None = None


@dataclass
class DPOConfig:
    beta: float = 1.0  # β of the Diffusion-DPO loss (the authors: 1; image Diffusion-DPO: 2500-5000)
    loss_type: str = "sigmoid"  # sigmoid (Diffusion-DPO), hinge or ipo
    label_smoothing: float = 0.0  # ε of conservative DPO (sigmoid only)
    # adapters_off (LoRA), separate (a frozen copy) or precomputed (a stored table)
    reference: str = "adapters_off"
    reference_offload: bool = False  # separate: keep the frozen copy's parameters on the CPU
    noise_cycle: int | None = None  # per-pair (noise, t) draws repeat every N epochs (None: never)
    nan_policy: str = "skip"  # a non-finite loss or gradient: skip the step (skip) or stop the run (stop)
    max_consecutive_skips: int = 3  # skip: a run stops after this many non-finite steps in a row


@dataclass
class SyntheticDataConfig:
    """The embedded default's scene pairs (engine.scenes.preference_pairs): clean clip vs corrupted clip. A
    set is made once and copied from a cache after that (engine.scenes.pair_cache: $VIDEOGPA_CACHE_DIR, else
    ~/.cache/videogpa; `VIDEOGPA_CACHE_DIR=off` turns it off)."""

    train_pairs: int = 160  # training pairs of procedural scenes
    heldout_pairs: int = 48  # held-out pairs (scenes never trained on)
    seed: int = 1234  # the synthetic set's seed
    corruptions: list[str] = field(default_factory=lambda: ["jitter", "scale"])  # used in turn
    strength: float = 4.0  # engine.scenes.procedural.corrupt's strength


@dataclass
class DataConfig:
    train: str | None = None  # preference-shard folder
    heldout: str | None = None  # preference-shard folder never trained on (evaluation)
    synthetic: SyntheticDataConfig | None = None  # generate the sets into <output_dir>/data instead


@dataclass
class OptimConfig:
    lr: float = 5e-6  # AdamW learning rate (the paper: 5e-6)
    weight_decay: float = 1e-2  # AdamW weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas
    eps: float = 1e-8  # AdamW epsilon
    schedule: str = "cosine"  # cosine or constant, after the warm-up
    warmup_steps: int = 500  # linear warm-up steps
    min_lr_ratio: float = 0.0  # the cosine ends at lr × this
    grad_clip: float = 1.0  # gradient-norm clip (0: off)


@dataclass
class TrainConfig:
    max_steps: int = 10_000  # optimizer steps
    # pairs per rank per forward (None: the global batch split over the ranks, no accumulation)
    micro_batch_size: int | None = 1
    global_batch_size: int = 16  # pairs per optimizer step (micro × accumulation × ranks)
    precision: str = "bf16"  # bf16 or fp32 (every weight is loaded in this dtype)
    log_every: int = 10  # steps between metrics lines and progress updates
    checkpoint_every: int = 500  # 0: only at the end
    keep_checkpoints: int = 2  # the newest N checkpoints are kept
    progress_bar: bool = True  # a tqdm bar on rank 0
    # the final export's formats (EXPORT_FORMATS); "diffusers" is always among them (the other formats, the
    # evaluate stage and recipes/export.py read it); comfyui and merged need LoRA
    export_formats: list[str] = field(default_factory=lambda: ["diffusers"])


@dataclass
class DistributedConfig:
    zero_stage: int = 3  # DeepSpeed ZeRO stage (3: parameters partitioned, loaded partitioned)
    offload_optimizer: bool = False  # optimizer states on the CPU
    offload_params: bool = False  # ZeRO-3 parameters on the CPU
    # Ulysses sequence parallelism: each sample's video tokens are split over groups of this many consecutive
    # ranks (engine/runtime/sequence_parallel.py); the data-parallel size is world / sequence_parallel.
    sequence_parallel: int = 1
    deepspeed_config: str | None = None  # a user's DeepSpeed JSON, merged over the generated one


@dataclass
class EvalConfig:
    draws: int = 4  # fixed (noise, t) draws per held-out pair
    batch_size: int = 8  # held-out pairs per evaluation forward
    plot: bool = True  # write heldout_accuracy.png and training_curves.png
    every: int = 0  # also evaluate (held-out accuracy, validation videos) every N steps; 0: before/after only
    validation: ValidationConfig | None = None  # videos sampled with the current weights (None: off)


WANDB_MODES = ("offline", "online")


@dataclass
class WandbConfig:
    """Weights & Biases beside TensorBoard (engine.train.run_logs): the same scalars, figures, videos,
    config."""

    project: str = "videogpa"  # the W&B project
    mode: str = "offline"  # offline: files under <output_dir>/wandb (`wandb sync` them later); online
    name: str | None = None  # the run's name (None: the output folder's name)
    entity: str | None = None  # the W&B entity (None: your default)


@dataclass
class LoggingConfig:
    tensorboard: bool = True  # TensorBoard events under <output_dir>/tensorboard
    wandb: WandbConfig | None = None  # None: off (the wandb package is needed only when it is on)


@dataclass
class GenerationConfig:
    """The generate stage (engine.stages.generate). Sampler fields left None take the model family's
    published defaults (its adapter's sampler_defaults)."""

    model: str = "tiny"  # the loop sets it to model.name
    pipeline: str | None = None  # local diffusers pipeline folder
    prompts: str | None = None  # prompt file (plain text or JSONL)
    num_candidates: int = 4  # videos per prompt (seeds seed .. seed + N - 1)
    seed: int = 0  # candidate k of every prompt uses seed + k
    camera_motion: bool = False  # rewrite prompts with the camera-motion builder (seeded by `seed`)
    batch_size: int = 2  # videos per pipeline call
    device: str | None = None  # None: cuda when available, else cpu
    dtype: str | None = None  # fp32 / bf16 / fp16; None: bf16 on cuda, fp32 on cpu
    num_frames: int | None = None  # sampler fields left None take the family's defaults
    height: int | None = None  # frame height in pixels
    width: int | None = None  # frame width in pixels
    steps: int | None = None  # sampler steps
    guidance_scale: float | None = None  # classifier-free guidance scale
    max_sequence_length: int | None = None  # text tokens
    negative_prompt: str | None = None  # None: the family default
    fps: int | None = None  # frames per second of the saved mp4
    lora: str | None = None  # a trained LoRA (folder with pytorch_lora_weights.safetensors, or the file)
    lora_scale: float = 1.0  # the LoRA strength (the authors use 0.2 for Wan and CogVideoX 1.5)
    # fast sampling (engine.stages.fast_sampling), each off or neutral by default:
    # SDPA kernel (SDPA_KERNELS) or diffusers:<backend> (e.g. diffusers:flash)
    attention_backend: str = "auto"
    compile: str | None = None  # torch.compile backend of the transformer's repeated blocks (e.g. inductor)
    vae_tiling: bool = False  # decode in tiles (less memory at large sizes)
    vae_slicing: bool = False  # decode the batch one video at a time
    cpu_offload: bool = False  # diffusers' model CPU offload (a CUDA device; for small GPUs)
    # an opt-in step cache (STEP_CACHES; changes the sampled videos, so every manifest row records it)
    step_cache: str | None = None
    step_cache_threshold: float = 0.05  # first_block: reuse the rest of the blocks below this change


GEOMETRY_BACKENDS = ("auto", "oracle", "vggt", "da3")
POINT_SOURCES = ("auto", "depth", "pointmap")
KERNEL_BACKENDS = ("auto", "triton", "torch")
SCORE_METRICS = ("reprojection", "epipolar")


@dataclass
class EpipolarConfig:
    """The score stage's epipolar metric (engine.geometry.epipolar): keypoint matches between consecutive
    sampled frames. `epi` is the authors' Epi (kornia's 8-point F on all of a pair's matches, the mean Sampson
    distance in pixels); `epi_robust` is ours (a robust fit, the mean Sampson distance of its inliers
    divided by max(H, W)). The defaults are the authors' settings (engine.geometry.lightglue and .epipolar
    say which)."""

    matcher: str = "lightglue"  # SuperPoint + LightGlue (local folders); "oracle": the stored geometry
    lightglue_weights: str | None = None  # local LightGlueForKeypointMatching folder (transformers)
    superpoint_weights: str | None = None  # local SuperPoint folder (if the LightGlue one lacks it)
    size: int | None = 1024  # longer side the frames are matched at (the authors': 1024; None: as scored)
    max_keypoints: int | None = 2048  # SuperPoint keypoints per frame (the authors'; None: the folder's)
    keypoint_threshold: float | None = 0.0005  # SuperPoint detection threshold (the authors'; None: folder's)
    stride: int | None = None  # also pair frames (i, i + stride) besides consecutive ones (the authors: none)
    min_matches: int = 20  # a pair with fewer matches has no error (skipped, never 0); the authors': 20
    inlier_threshold: float = 0.004  # epi_robust: Sampson inlier threshold, a fraction of max(H, W)
    robust: str = "batched"  # epi_robust: "batched" MSAC over all pairs at once, or "kornia" RANSAC per pair
    seed: int = 0  # epi_robust's sampling seed (fixed: not the synthetic set's)


@dataclass
class ScoreConfig:
    """The score stage (engine.stages.score): 3DCS = reprojection MSE + λ·LPIPS, plus PSNR/SSIM/MVCS/motion,
    and/or the epipolar error Epi."""

    # "vggt" or "da3" (weights needed), "oracle" (videos with geometry sidecars); auto: the model the weights
    # file holds (vggt or da3), the oracle without weights
    geometry: str = "auto"
    weights: str | None = None  # local VGGT weights file
    random_weights: bool = False  # the weights are random (tiny loop): rows and summaries say so
    num_frames: int = 10  # frames sampled uniformly per video (the paper: 10)
    size: int | None = None  # square crop size (None: the model's input size; epipolar alone: 518)
    batch_size: int | None = None  # videos per reconstruction call (None: 4 on cuda, 1 on cpu)
    device: str | None = None  # None: cuda when available, else cpu
    dtype: str | None = None  # geometry model compute dtype (None: bf16 on cuda, fp32 on cpu)
    conf_thres: float = 0.0  # confidence percentile filter (0 keeps every valid point)
    points: str = "auto"  # cloud source: world points + depth confidence (auto, the paper), depth, pointmap
    mse_only: bool = False  # only the reprojection MSE (fused kernel): no PSNR/SSIM/LPIPS, fastest
    vgg_weights: str | None = None  # LPIPS-VGG from local files (both or neither)
    lpips_weights: str | None = None  # LPIPS v0.1 linear layers (vgg.pth), with vgg_weights
    lpips_weight: float = 1.0  # λ in 3DCS = MSE + λ·LPIPS
    kernel_backend: str = "auto"  # auto (Triton on CUDA), triton or torch
    scores_file: str = "scores.jsonl"  # the stage's output, in its output folder
    metrics: list[str] = field(default_factory=lambda: ["reprojection"])  # and/or "epipolar" (SCORE_METRICS)
    epipolar: EpipolarConfig = field(default_factory=EpipolarConfig)
    # pictures of 3D consistency (engine.figures) into <output folder>/figures/<video>.png: frames, renders,
    # error maps, hit masks; for the first `figures` videos (sorted) and the videos named in figure_videos
    figures: int = 0
    figure_videos: list[str] = field(default_factory=list)  # file names or stems


@dataclass
class ValidationConfig:
    """eval.validation (engine.validation): fixed prompts × seeds sampled with the current weights at step 0,
    every eval.every steps and at the end, saved as mp4 under <output_dir>/validation/step_<n>/ and scored."""

    prompts: list[str] = field(default_factory=list)  # the fixed validation prompts
    images: list[str] | None = None  # image-to-video: one first frame per prompt
    seeds: list[int] = field(default_factory=lambda: [0])  # one video per prompt and seed
    pipeline: str | None = None  # local pipeline folder (None: the built-in one, else model.path's folder)
    num_frames: int | None = None  # sampler fields left None take the model family's defaults
    height: int | None = None  # frame height in pixels
    width: int | None = None  # frame width in pixels
    steps: int | None = None  # sampler steps
    guidance_scale: float | None = None  # classifier-free guidance scale
    batch_size: int = 1  # videos per sampling call
    grid_frames: int = 6  # frames per video in the logged frame grid
    lora_scale: float = 1.0  # the trained LoRA's strength in the validation videos (the authors infer at 0.2)
    offload: bool = True  # between validations: the sampling pipeline on the CPU, the scorer not kept
    score: ScoreConfig | None = None  # the geometry scorer of the videos (None: not scored)


@dataclass
class PairsConfig:
    """The pairs stage (engine.stages.pairs): best vs worst per prompt (the paper's thresholds)."""

    min_gap: float = 0.05  # keep a pair when worst − best ≥ this
    min_motion: float = 0.001  # drop videos whose camera-motion score is below this
    overwrite: bool = False  # replace an existing, different pair index
    plots: bool = True  # write the score and gap histograms


@dataclass
class EncodeConfig:
    """The encode stage (engine.stages.encode): pair index → training shards."""

    model: str = "tiny"  # the loop sets it to model.name
    # local diffusers pipeline folder (VAE + text encoder); the loop: generation's
    pipeline: str | None = None
    max_sequence_length: int | None = None  # text tokens (None: the generation's, else the family's default)
    heldout_fraction: float = 0.0  # pairs kept out of training (the trainer reports their accuracy)
    seed: int = 0  # seed of the held-out draw
    shard_size: int = 64  # pairs per safetensors shard
    device: str | None = None  # None: cuda when available, else cpu


@dataclass
class EvaluateConfig:
    """The evaluate stage (engine.stages.evaluate): held-out prompts with and without the LoRA."""

    prompts: str | None = None  # held-out prompt file (never used for training)
    num_candidates: int = 2  # seeds per prompt, the same with and without the LoRA
    seed: int = 1000  # first seed of the held-out candidates
    lora_scale: float = 1.0  # the LoRA strength when generating with it
    # the evaluation's geometry scorer (None: loop.score's, the model that made the pairs); the authors score
    # their pairs with VGGT-1B and evaluate with Depth Anything 3 (geometry da3, or auto with DA3 weights)
    score: ScoreConfig | None = None


@dataclass
class SyntheticCandidatesConfig:
    """loop.candidates synthetic: each "prompt" is one procedural scene (engine.scenes): its clean clip and
    corrupted versions, with exact geometry, so the oracle scores them meaningfully."""

    scenes: int = 8  # procedural scenes (each gives clean and corrupted candidates)
    kinds: list[str] | None = None  # corruption kinds (None: all)
    seed: int = 0  # the scenes' seed


CANDIDATE_SOURCES = ("generate", "synthetic")


@dataclass
class LoopConfig:
    """The loop (engine.loop.loop): generate → score → pairs → encode → train → evaluate."""

    candidates: str = "generate"  # "generate": N videos per prompt from the model; "synthetic": scenes
    synthetic: SyntheticCandidatesConfig = field(default_factory=SyntheticCandidatesConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    train_overrides: list[str] = field(default_factory=list)  # trainer `key=value` overrides
    train_launcher: list[str] = field(default_factory=list)  # e.g. [deepspeed, --num_gpus, "8"]; [] = python
    # generate, score, encode and evaluate as this launcher's ranks, each its share (engine.stages.sharding),
    # e.g. [torchrun, --nproc-per-node, "8"]; [] = in the loop's own process
    launcher: list[str] = field(default_factory=list)
    # iterative rounds (engine.loop.rounds): round k generates with round k-1's LoRA and trains on top of it;
    # 1 = the single loop in the output folder itself
    rounds: int = 1
    # prompts per round: round k takes the k-th slice of that many prompts of loop.generation.prompts (their
    # ids kept; with rounds ≥ 2); None: every round generates from all of them
    round_prompts: int | None = None


@dataclass
class Config:
    seed: int = 0  # seeds data order, LoRA init, noise draws and synthetic data: the same seed, the same run
    output_dir: str = "runs/dpo"  # the run folder (recipes: --output-dir)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    loop: LoopConfig | None = None  # the loop's stages (recipes/pipeline.py); the trainer ignores it

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _dataclass_type(tp: object) -> type | None:
    """The dataclass in `tp` (also inside `X | None`), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def _check_scalar(value: object, tp: object, where: str) -> object:
    """Validate a leaf value against its annotation (ints accepted for floats)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        return _check_scalar(value, tp, where)
    if typing.get_origin(tp) is list:
        if not isinstance(value, list):
            raise ValueError(f"config key {where!r}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_check_scalar(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML reads 5e-6 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config key {where!r}: expected a finite number, got {value!r}")
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ValueError(f"config key {where!r}: expected {tp.__name__}, got {value!r}")
    return value


def build_dataclass(cls: type, data: object, where: str) -> object:
    """Instantiate the (nested) config dataclass cls from a mapping, checking keys and types; errors name
    `where`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config section {where or '<root>'!r}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ValueError(
            f"unknown config key(s) {[prefix + k for k in unknown]}; expected one of {sorted(known)}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        sub = _dataclass_type(hints[name])
        if sub is not None and not (value is None and sub is not hints[name]):
            kwargs[name] = build_dataclass(sub, value, key)
        else:
            kwargs[name] = _check_scalar(value, hints[name], key)
    return cls(**kwargs)


def _choice(value: object, choices: tuple, key: str) -> None:
    if value not in choices:
        raise ValueError(f"config key {key!r}: expected one of {choices}, got {value!r}")


def _positive(value: float, key: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"config key {key!r}: expected a {'non-negative' if allow_zero else 'positive'} value"
        )


def _check_lora_experts(experts: list[str] | None, model: str) -> None:
    from videogpa.engine.models import adapter_class

    components = adapter_class(model).lora_components
    if experts is not None and (
        not experts or len(set(experts)) != len(experts) or set(experts) - set(components)
    ):
        raise ValueError(
            f"config key 'lora.experts': expected distinct names among {list(components)} (the "
            f"components of model {model!r} that can take LoRA), got {experts!r}"
        )


def _check_synthetic(syn: SyntheticDataConfig) -> None:

    _positive(syn.train_pairs, "data.synthetic.train_pairs")
    _positive(syn.heldout_pairs, "data.synthetic.heldout_pairs")
    _positive(syn.strength, "data.synthetic.strength")
    if not syn.corruptions:
        raise ValueError("config key 'data.synthetic.corruptions': expected at least one corruption")
    for kind in syn.corruptions:
        _choice(kind, CORRUPTIONS, "data.synthetic.corruptions")


def _check_export_formats(formats: list[str], lora: bool) -> None:
    key = "config key 'train.export_formats'"
    bad = [f for f in formats if f not in EXPORT_FORMATS]
    if bad or len(set(formats)) != len(formats):
        raise ValueError(f"{key}: expected distinct values among {list(EXPORT_FORMATS)}, got {formats}")
    if "diffusers" not in formats:
        raise ValueError(
            f"{key}: must include 'diffusers' (the other formats are made from it), got {formats}"
        )
    if not lora and len(formats) > 1:
        raise ValueError(
            f"{key}: {formats} need LoRA (lora.enabled: true); full fine-tuning exports 'diffusers'"
        )


def _check_validation(val: ValidationConfig) -> None:
    where = "eval.validation"
    if not val.prompts:
        raise ValueError(f"config key '{where}.prompts': expected at least one prompt")
    if val.images is not None and len(val.images) != len(val.prompts):
        raise ValueError(
            f"config key '{where}.images': expected one image per prompt ({len(val.prompts)}), "
            f"got {len(val.images)}"
        )
    if not val.seeds or len(set(val.seeds)) != len(val.seeds):
        raise ValueError(f"config key '{where}.seeds': expected distinct seeds, got {val.seeds}")
    for key in ("num_frames", "height", "width", "steps"):
        if getattr(val, key) is not None:
            _positive(getattr(val, key), f"{where}.{key}")
    _positive(val.batch_size, f"{where}.batch_size")
    _positive(val.grid_frames, f"{where}.grid_frames")
    if val.score is not None:
        validate_stage(val.score, f"{where}.score")


def validate(cfg: Config) -> Config:
    """Cross-field checks that the types alone cannot express."""
    from videogpa.engine.models import adapter_names

    _choice(cfg.model.name, tuple(adapter_names()), "model.name")
    if not 0 < cfg.model.checkpoint_fraction <= 1:
        raise ValueError("config key 'model.checkpoint_fraction': expected a fraction in (0, 1]")
    if not cfg.model.attention_backend.startswith("diffusers:"):
        _choice(cfg.model.attention_backend, SDPA_KERNELS, "model.attention_backend")
    _choice(cfg.dpo.reference, REFERENCE_STRATEGIES, "dpo.reference")
    _choice(cfg.dpo.loss_type, LOSS_TYPES, "dpo.loss_type")
    _choice(cfg.dpo.nan_policy, NAN_POLICIES, "dpo.nan_policy")
    _choice(cfg.train.precision, PRECISIONS, "train.precision")
    _choice(cfg.optim.schedule, LR_SCHEDULES, "optim.schedule")
    # Stages 1-3 discard a step whose gradients are non-finite (dpo.nan_policy: skip relies on it).
    _choice(cfg.distributed.zero_stage, (1, 2, 3), "distributed.zero_stage")
    _positive(cfg.dpo.beta, "dpo.beta")
    if not 0.0 <= cfg.dpo.label_smoothing < 0.5:
        raise ValueError("config key 'dpo.label_smoothing': expected a value in [0, 0.5)")
    if cfg.dpo.label_smoothing and cfg.dpo.loss_type != "sigmoid":
        raise ValueError("config key 'dpo.label_smoothing': applies only to dpo.loss_type 'sigmoid'")
    if cfg.dpo.noise_cycle is not None:
        _positive(cfg.dpo.noise_cycle, "dpo.noise_cycle")
    _positive(cfg.dpo.max_consecutive_skips, "dpo.max_consecutive_skips")
    if cfg.dpo.reference == "adapters_off" and not cfg.lora.enabled:
        raise ValueError(
            "config key 'dpo.reference': 'adapters_off' needs LoRA (lora.enabled: true); "
            "full fine-tuning needs 'separate' or 'precomputed'"
        )
    if cfg.lora.enabled:
        _positive(cfg.lora.rank, "lora.rank")
        _positive(cfg.lora.alpha, "lora.alpha")
        if not 0.0 <= cfg.lora.dropout < 1.0:
            raise ValueError("config key 'lora.dropout': expected a value in [0, 1)")
        _check_lora_experts(cfg.lora.experts, cfg.model.name)
    for key in ("max_steps", "global_batch_size", "log_every"):
        _positive(getattr(cfg.train, key), f"train.{key}")
    if cfg.train.micro_batch_size is not None:
        _positive(cfg.train.micro_batch_size, "train.micro_batch_size")
    _positive(cfg.train.checkpoint_every, "train.checkpoint_every", allow_zero=True)
    _positive(cfg.train.keep_checkpoints, "train.keep_checkpoints")
    _check_export_formats(cfg.train.export_formats, cfg.lora.enabled)
    _positive(cfg.optim.lr, "optim.lr")
    _positive(cfg.optim.warmup_steps, "optim.warmup_steps", allow_zero=True)
    _positive(cfg.optim.grad_clip, "optim.grad_clip", allow_zero=True)
    if len(cfg.optim.betas) != 2:
        raise ValueError(f"config key 'optim.betas': expected two values, got {cfg.optim.betas}")
    if cfg.data.synthetic is None and cfg.data.train is None:
        raise ValueError("config section 'data': set 'train' (a preference-shard folder) or 'synthetic'")
    if cfg.data.synthetic is not None:
        _check_synthetic(cfg.data.synthetic)
    if cfg.distributed.offload_params and cfg.distributed.zero_stage != 3:
        raise ValueError("config key 'distributed.offload_params': parameter offload needs zero_stage 3")
    _positive(cfg.distributed.sequence_parallel, "distributed.sequence_parallel")
    backend = cfg.model.attention_backend.removeprefix("diffusers:")
    if (
        cfg.distributed.sequence_parallel > 1
        and backend != cfg.model.attention_backend
        and "native" not in backend
    ):
        raise ValueError(
            f"config key 'model.attention_backend': sequence parallelism exchanges PyTorch SDPA's "
            f"inputs; use an SDPA kernel or a diffusers native backend, not {backend!r}"
        )
    _positive(cfg.eval.draws, "eval.draws")
    _positive(cfg.eval.batch_size, "eval.batch_size")
    _positive(cfg.eval.every, "eval.every", allow_zero=True)
    if cfg.eval.validation is not None:
        _check_validation(cfg.eval.validation)
    if cfg.logging.wandb is not None:
        _choice(cfg.logging.wandb.mode, WANDB_MODES, "logging.wandb.mode")
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ValueError(
                "config key 'logging.wandb': needs the wandb package (pip install wandb), not installed"
            )
    if cfg.loop is not None:
        validate_loop(cfg.loop, cfg.model.name)
    return cfg


def _installed(package: str) -> bool:
    """Whether `package` can be imported (a package that cannot even be looked up counts as missing)."""
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _check_epipolar(epi: EpipolarConfig, where: str) -> None:
    # imported here: importing the config does not import the geometry package (the trainer needs none of it)
    from videogpa.engine.geometry.epipolar import ROBUST_FITS, SAMPLE
    from videogpa.engine.geometry.matching import MATCHERS

    _choice(epi.matcher, tuple(MATCHERS), f"{where}.matcher")
    _choice(epi.robust, ROBUST_FITS, f"{where}.robust")
    for key in ("size", "stride", "max_keypoints"):
        if getattr(epi, key) is not None:
            _positive(getattr(epi, key), f"{where}.{key}")
    if epi.keypoint_threshold is not None and not 0 < epi.keypoint_threshold < 1:
        raise ValueError(f"config key '{where}.keypoint_threshold': expected a score in (0, 1) or null")
    if epi.min_matches < SAMPLE:
        raise ValueError(
            f"config key '{where}.min_matches': expected at least {SAMPLE} (the 8-point sample), "
            f"got {epi.min_matches}"
        )
    if not 0 < epi.inlier_threshold < 1:
        raise ValueError(f"config key '{where}.inlier_threshold': expected a fraction of max(H, W) in (0, 1)")


def validate_stage(section: object, where: str) -> None:
    """Checks of one stage section that the types alone cannot express."""
    if isinstance(section, GenerationConfig):
        for key in ("num_candidates", "batch_size"):
            _positive(getattr(section, key), f"{where}.{key}")
        if section.dtype is not None:
            _choice(section.dtype, DTYPE_CHOICES, f"{where}.dtype")
        if not section.attention_backend.startswith("diffusers:"):
            _choice(section.attention_backend, SDPA_KERNELS, f"{where}.attention_backend")
        if section.step_cache is not None:
            _choice(section.step_cache, STEP_CACHES, f"{where}.step_cache")
            _positive(section.step_cache_threshold, f"{where}.step_cache_threshold")
    elif isinstance(section, ScoreConfig):
        _choice(section.geometry, GEOMETRY_BACKENDS, f"{where}.geometry")
        _choice(section.points, POINT_SOURCES, f"{where}.points")
        _choice(section.kernel_backend, KERNEL_BACKENDS, f"{where}.kernel_backend")
        _positive(section.num_frames, f"{where}.num_frames")
        for key in ("size", "batch_size"):
            if getattr(section, key) is not None:
                _positive(getattr(section, key), f"{where}.{key}")
        if not 0 <= section.conf_thres < 100:
            raise ValueError(f"config key '{where}.conf_thres': expected a percentile in [0, 100)")
        if bool(section.vgg_weights) != bool(section.lpips_weights):
            raise ValueError(
                f"config section '{where}': give both vgg_weights and lpips_weights for LPIPS, or neither"
            )
        if section.mse_only and section.vgg_weights:
            raise ValueError(
                f"config key '{where}.mse_only': scores without LPIPS; drop vgg_weights/lpips_weights"
            )
        if not section.metrics or not set(section.metrics) <= set(SCORE_METRICS):
            raise ValueError(
                f"config key '{where}.metrics': expected a non-empty list of {list(SCORE_METRICS)}, "
                f"got {section.metrics}"
            )
        _check_epipolar(section.epipolar, f"{where}.epipolar")
        if "epipolar" in section.metrics and not _installed("kornia"):
            raise ValueError(
                f"config key '{where}.metrics': 'epipolar' needs the kornia package (pip install kornia), "
                "not installed"
            )
        _positive(section.figures, f"{where}.figures", allow_zero=True)
        if (section.figures or section.figure_videos) and "reprojection" not in section.metrics:
            raise ValueError(f"config key '{where}.figures': the pictures need the 'reprojection' metric")
    elif isinstance(section, PairsConfig):
        _positive(section.min_gap, f"{where}.min_gap", allow_zero=True)
        _positive(section.min_motion, f"{where}.min_motion", allow_zero=True)
    elif isinstance(section, EncodeConfig):
        if not 0 <= section.heldout_fraction < 1:
            raise ValueError(f"config key '{where}.heldout_fraction': expected a value in [0, 1)")
        _positive(section.shard_size, f"{where}.shard_size")
    elif isinstance(section, EvaluateConfig):
        _positive(section.num_candidates, f"{where}.num_candidates")


def validate_loop(loop: LoopConfig, model: str) -> None:
    """The loop section: each stage's checks, and the stages' model is the trainer's."""
    _choice(loop.candidates, CANDIDATE_SOURCES, "loop.candidates")
    for name in ("generation", "score", "pairs", "encode", "evaluate"):
        validate_stage(getattr(loop, name), f"loop.{name}")
    if loop.evaluate.score is not None:
        validate_stage(loop.evaluate.score, "loop.evaluate.score")
    for kind in loop.synthetic.kinds or []:
        _choice(kind, CORRUPTIONS, "loop.synthetic.kinds")
    _positive(loop.synthetic.scenes, "loop.synthetic.scenes")
    loop.generation.model = loop.encode.model = model


def merge_dicts(base: dict, override: dict) -> dict:
    """A deep copy of base with override's keys laid over it, mappings merged recursively."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merge_dicts(out[key], value) if nested else copy.deepcopy(value)
    return out


def config_from_dict(data: dict) -> Config:
    return validate(build_dataclass(Config, data, ""))


def _yaml_problem(err: yaml.YAMLError) -> str:
    """One line saying where (1-based line and column) and what is wrong in a YAML text."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "reason", None) or type(err).__name__
    context = getattr(err, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "an unknown place"
    if mark is None and getattr(err, "position", None) is not None:  # a ReaderError: bad character
        where = f"character {err.position}"
    return f"{where}: {problem}" + (f" ({context})" if context else "")


def read_config_dict(path: str | Path, overrides: list[str] | None = None) -> dict:
    """The YAML mapping at `path` with `key.sub=value` overrides applied (values parsed as YAML); invalid
    YAML is a one-line ValueError naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {str(path)!r} is not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ValueError(f"config file {str(path)!r}: invalid YAML at {_yaml_problem(err)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(path)!r}: expected a mapping at the top level")
    for item in overrides or []:
        apply_override(data, item)
    return data


def parse_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config and apply overrides: keys and types checked, nothing else (no heavy import: a bad
    --set is reported before torch's model stack is loaded); validate() does the cross-field checks."""
    data = read_config_dict(path, overrides)
    try:
        return build_dataclass(Config, data, "")
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply overrides, validate it."""
    cfg = parse_config(path, overrides)
    try:
        return validate(cfg)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def check_input_paths(cfg: Config) -> None:
    """A ValueError naming the first input folder of the run (model.path, data.train, data.heldout) that does
    not exist: cheap checks a recipe makes before it loads anything."""
    for key, path, what in (
        (
            "model.path",
            cfg.model.path,
            f"checkpoint folder (a local diffusers folder for model {cfg.model.name!r})",
        ),
        ("data.train", cfg.data.train, "preference-shard folder (recipes/encode.py writes it)"),
        ("data.heldout", cfg.data.heldout, "preference-shard folder (recipes/encode.py writes it)"),
    ):
        if path is not None and not Path(path).is_dir():
            raise ValueError(f"config key {key!r}: {what} {path!r} does not exist")


def apply_override(data: dict, item: str) -> None:
    """Set `a.b.c=value` in a nested dict (value parsed as YAML; invalid YAML is a one-line ValueError naming
    the override and the line)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"override {item!r}: expected key.sub=value")
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {part!r} is not a section")
    try:
        node[leaf] = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ValueError(f"override {item!r}: invalid YAML value at {_yaml_problem(err)}") from None


# Keys a resumed run may change freely: where and how often it reports, not what it computes.
BOOKKEEPING_KEYS = (
    "output_dir",
    "loop",
    "logging",
    "train.log_every",
    "train.progress_bar",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.export_formats",
    "eval.plot",
    "eval.every",
    "eval.validation",
)


# Keys no resume may change, even with --allow-config-change: the checkpoint's tensors would not fit (their
# shapes, which parameters train, the optimizer's state layout), and DeepSpeed's load would fail half-way.
STRUCTURAL_KEYS = {
    "model.name": "another model family's weights",
    "lora.enabled": "LoRA or full fine-tuning trains other parameters",
    "lora.rank": "the LoRA matrices' shapes",
    "lora.targets": "which modules carry LoRA",
    "lora.experts": "which experts carry LoRA",
    "train.precision": "the optimizer states' precision and files",
    "distributed.zero_stage": "how the optimizer states are partitioned",
    "distributed.offload_optimizer": "the optimizer (DeepSpeed's CPU Adam or torch's AdamW) and its states",
    "distributed.sequence_parallel": "the data-parallel ranks the states are partitioned over",
}


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_changes(old: dict, new: dict) -> dict[str, tuple]:
    """{dotted key: (old value, new value)} for what differs between two config dicts, bookkeeping aside."""
    a, b = _flatten(old), _flatten(new)
    keep = lambda k: not any(k == p or k.startswith(p + ".") for p in BOOKKEEPING_KEYS)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if keep(k) and a.get(k) != b.get(k)}


def save_config(cfg: Config, path: str | Path) -> None:
    write_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# The shipped model configs leave local paths as placeholders under this prefix.
PLACEHOLDER_PREFIX = "/path/to/"


def require_real_paths(cfg: Config, set_later: tuple[str, ...] = ()) -> None:
    """A ValueError naming every key that still holds a /path/to/... placeholder, all in one message; keys
    under the `set_later` sections (e.g. "data", which the loop fills from its encode stage) are passed
    over."""
    found = [
        f"{key} ({value})"
        for key, value in _flatten(cfg.to_dict()).items()
        if isinstance(value, str)
        and value.startswith(PLACEHOLDER_PREFIX)
        and not key.startswith(tuple(f"{section}." for section in set_later))
    ]
    if found:
        raise ValueError(
            f"the config still holds {len(found)} placeholder path(s); set each to a local folder or file "
            f"(--set KEY=PATH or in the YAML): {', '.join(found)}"
        )
