"""The one config tree: nested dataclasses, each section checking its own fields (`check`).

The trainer's sections (model, lora, dpo, data, optim, train, distributed, eval) and the loop's (`loop:`, one
section per stage: generation, score, pairs, encode, evaluate) live in one `Config`, whose `check` runs every
section's and then the checks across sections; each stage module (engine.stages) takes its section. Every
default is written here once. Reading YAML and overrides into these classes: engine.core.config_loading.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

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


def _choice(value: object, choices: tuple, key: str) -> None:
    if value not in choices:
        raise ValueError(f"config key {key!r}: expected one of {choices}, got {value!r}")


def _positive(value: float, key: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(
            f"config key {key!r}: expected a {'non-negative' if allow_zero else 'positive'} value"
        )


def _check_attention_backend(value: str, key: str) -> None:
    """An SDPA kernel (SDPA_KERNELS) or a diffusers backend `diffusers:<name>`."""
    if not value.startswith("diffusers:"):
        _choice(value, SDPA_KERNELS, key)


def _installed(package: str) -> bool:
    """Whether `package` can be imported (a package that cannot even be looked up counts as missing)."""
    import importlib.util

    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


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

    def check(self, where: str = "model") -> None:
        from videogpa.engine.models import adapter_names

        _choice(self.name, tuple(adapter_names()), f"{where}.name")
        if not 0 < self.checkpoint_fraction <= 1:
            raise ValueError(f"config key '{where}.checkpoint_fraction': expected a fraction in (0, 1]")
        _check_attention_backend(self.attention_backend, f"{where}.attention_backend")


@dataclass
class LoraConfig:
    enabled: bool = True  # False: full fine-tuning (needs reference: separate or precomputed)
    rank: int = 64  # LoRA rank r (the paper: 64)
    alpha: float = 128.0  # LoRA scale α (the paper: 128; the update is α/r·BA)
    dropout: float = 0.0  # LoRA dropout on the adapter input
    targets: list[str] | None = None  # module-name suffixes; None: the adapter's defaults
    # the pipeline components that get LoRA (Wan 2.2 A14B: transformer, transformer_2); None: every one
    experts: list[str] | None = None

    def check(self, where: str = "lora") -> None:
        if self.enabled:
            _positive(self.rank, f"{where}.rank")
            _positive(self.alpha, f"{where}.alpha")
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"config key '{where}.dropout': expected a value in [0, 1)")

    def check_experts(self, model: str) -> None:
        """lora.experts names distinct components of `model` that can take LoRA."""
        from videogpa.engine.models import adapter_class

        components = adapter_class(model).lora_components
        experts = self.experts
        if experts is not None and (
            not experts or len(set(experts)) != len(experts) or set(experts) - set(components)
        ):
            raise ValueError(
                f"config key 'lora.experts': expected distinct names among {list(components)} (the "
                f"components of model {model!r} that can take LoRA), got {experts!r}"
            )


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

    def check(self, where: str = "dpo") -> None:
        _choice(self.reference, REFERENCE_STRATEGIES, f"{where}.reference")
        _choice(self.loss_type, LOSS_TYPES, f"{where}.loss_type")
        _choice(self.nan_policy, NAN_POLICIES, f"{where}.nan_policy")
        _positive(self.beta, f"{where}.beta")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"config key '{where}.label_smoothing': expected a value in [0, 0.5)")
        if self.label_smoothing and self.loss_type != "sigmoid":
            raise ValueError(f"config key '{where}.label_smoothing': applies only to dpo.loss_type 'sigmoid'")
        if self.noise_cycle is not None:
            _positive(self.noise_cycle, f"{where}.noise_cycle")
        _positive(self.max_consecutive_skips, f"{where}.max_consecutive_skips")


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

    def check(self, where: str = "data.synthetic") -> None:
        _positive(self.train_pairs, f"{where}.train_pairs")
        _positive(self.heldout_pairs, f"{where}.heldout_pairs")
        _positive(self.strength, f"{where}.strength")
        if not self.corruptions:
            raise ValueError(f"config key '{where}.corruptions': expected at least one corruption")
        for kind in self.corruptions:
            _choice(kind, CORRUPTIONS, f"{where}.corruptions")


@dataclass
class DataConfig:
    train: str | None = None  # preference-shard folder
    heldout: str | None = None  # preference-shard folder never trained on (evaluation)
    synthetic: SyntheticDataConfig | None = None  # generate the sets into <output_dir>/data instead

    def check(self, where: str = "data") -> None:
        if self.synthetic is None and self.train is None:
            raise ValueError(
                f"config section '{where}': set 'train' (a preference-shard folder) or 'synthetic'"
            )
        if self.synthetic is not None:
            self.synthetic.check(f"{where}.synthetic")


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

    def check(self, where: str = "optim") -> None:
        _choice(self.schedule, LR_SCHEDULES, f"{where}.schedule")
        _positive(self.lr, f"{where}.lr")
        _positive(self.warmup_steps, f"{where}.warmup_steps", allow_zero=True)
        _positive(self.grad_clip, f"{where}.grad_clip", allow_zero=True)
        if len(self.betas) != 2:
            raise ValueError(f"config key '{where}.betas': expected two values, got {self.betas}")


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

    def check(self, where: str = "train") -> None:
        _choice(self.precision, PRECISIONS, f"{where}.precision")
        for key in ("max_steps", "global_batch_size", "log_every"):
            _positive(getattr(self, key), f"{where}.{key}")
        if self.micro_batch_size is not None:
            _positive(self.micro_batch_size, f"{where}.micro_batch_size")
        _positive(self.checkpoint_every, f"{where}.checkpoint_every", allow_zero=True)
        _positive(self.keep_checkpoints, f"{where}.keep_checkpoints")
        formats = self.export_formats
        if [f for f in formats if f not in EXPORT_FORMATS] or len(set(formats)) != len(formats):
            raise ValueError(
                f"config key '{where}.export_formats': expected distinct values among "
                f"{list(EXPORT_FORMATS)}, got {formats}"
            )
        if "diffusers" not in formats:
            raise ValueError(
                f"config key '{where}.export_formats': must include 'diffusers' (the other formats are made "
                f"from it), got {formats}"
            )


@dataclass
class DistributedConfig:
    zero_stage: int = 3  # DeepSpeed ZeRO stage (3: parameters partitioned, loaded partitioned)
    offload_optimizer: bool = False  # optimizer states on the CPU
    offload_params: bool = False  # ZeRO-3 parameters on the CPU
    # Ulysses sequence parallelism: each sample's video tokens are split over groups of this many consecutive
    # ranks (engine/runtime/sequence_parallel.py); the data-parallel size is world / sequence_parallel.
    sequence_parallel: int = 1
    deepspeed_config: str | None = None  # a user's DeepSpeed JSON, merged over the generated one

    def check(self, where: str = "distributed") -> None:
        # Stages 1-3 discard a step whose gradients are non-finite (dpo.nan_policy: skip relies on it).
        _choice(self.zero_stage, (1, 2, 3), f"{where}.zero_stage")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError(f"config key '{where}.offload_params': parameter offload needs zero_stage 3")
        _positive(self.sequence_parallel, f"{where}.sequence_parallel")


@dataclass
class EvalConfig:
    draws: int = 4  # fixed (noise, t) draws per held-out pair
    batch_size: int = 8  # held-out pairs per evaluation forward
    plot: bool = True  # write heldout_accuracy.png and training_curves.png
    every: int = 0  # also evaluate (held-out accuracy, validation videos) every N steps; 0: before/after only
    validation: ValidationConfig | None = None  # videos sampled with the current weights (None: off)

    def check(self, where: str = "eval") -> None:
        _positive(self.draws, f"{where}.draws")
        _positive(self.batch_size, f"{where}.batch_size")
        _positive(self.every, f"{where}.every", allow_zero=True)
        if self.validation is not None:
            self.validation.check(f"{where}.validation")


WANDB_MODES = ("offline", "online")


@dataclass
class WandbConfig:
    """Weights & Biases beside TensorBoard (engine.train.run_logs): the same scalars, figures, videos,
    config."""

    project: str = "videogpa"  # the W&B project
    mode: str = "offline"  # offline: files under <output_dir>/wandb (`wandb sync` them later); online
    name: str | None = None  # the run's name (None: the output folder's name)
    entity: str | None = None  # the W&B entity (None: your default)

    def check(self, where: str = "logging.wandb") -> None:
        _choice(self.mode, WANDB_MODES, f"{where}.mode")
        if not _installed("wandb"):
            raise ValueError(
                f"config key '{where}': needs the wandb package (pip install wandb), not installed"
            )


@dataclass
class LoggingConfig:
    tensorboard: bool = True  # TensorBoard events under <output_dir>/tensorboard
    wandb: WandbConfig | None = None  # None: off (the wandb package is needed only when it is on)

    def check(self, where: str = "logging") -> None:
        if self.wandb is not None:
            self.wandb.check(f"{where}.wandb")


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

    def check(self, where: str = "loop.generation") -> None:
        for key in ("num_candidates", "batch_size"):
            _positive(getattr(self, key), f"{where}.{key}")
        if self.dtype is not None:
            _choice(self.dtype, DTYPE_CHOICES, f"{where}.dtype")
        _check_attention_backend(self.attention_backend, f"{where}.attention_backend")
        if self.step_cache is not None:
            _choice(self.step_cache, STEP_CACHES, f"{where}.step_cache")
            _positive(self.step_cache_threshold, f"{where}.step_cache_threshold")


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

    def check(self, where: str = "loop.score.epipolar") -> None:
        # imported here: importing the config does not import the geometry package (the trainer needs none)
        from videogpa.engine.geometry.epipolar import ROBUST_FITS, SAMPLE
        from videogpa.engine.geometry.matching import MATCHERS

        _choice(self.matcher, tuple(MATCHERS), f"{where}.matcher")
        _choice(self.robust, ROBUST_FITS, f"{where}.robust")
        for key in ("size", "stride", "max_keypoints"):
            if getattr(self, key) is not None:
                _positive(getattr(self, key), f"{where}.{key}")
        if self.keypoint_threshold is not None and not 0 < self.keypoint_threshold < 1:
            raise ValueError(f"config key '{where}.keypoint_threshold': expected a score in (0, 1) or null")
        if self.min_matches < SAMPLE:
            raise ValueError(
                f"config key '{where}.min_matches': expected at least {SAMPLE} (the 8-point sample), "
                f"got {self.min_matches}"
            )
        if not 0 < self.inlier_threshold < 1:
            raise ValueError(
                f"config key '{where}.inlier_threshold': expected a fraction of max(H, W) in (0, 1)"
            )


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

    def check(self, where: str = "loop.score") -> None:
        _choice(self.geometry, GEOMETRY_BACKENDS, f"{where}.geometry")
        _choice(self.points, POINT_SOURCES, f"{where}.points")
        _choice(self.kernel_backend, KERNEL_BACKENDS, f"{where}.kernel_backend")
        _positive(self.num_frames, f"{where}.num_frames")
        for key in ("size", "batch_size"):
            if getattr(self, key) is not None:
                _positive(getattr(self, key), f"{where}.{key}")
        if not 0 <= self.conf_thres < 100:
            raise ValueError(f"config key '{where}.conf_thres': expected a percentile in [0, 100)")
        if bool(self.vgg_weights) != bool(self.lpips_weights):
            raise ValueError(
                f"config section '{where}': give both vgg_weights and lpips_weights for LPIPS, or neither"
            )
        if self.mse_only and self.vgg_weights:
            raise ValueError(
                f"config key '{where}.mse_only': scores without LPIPS; drop vgg_weights/lpips_weights"
            )
        if not self.metrics or not set(self.metrics) <= set(SCORE_METRICS):
            raise ValueError(
                f"config key '{where}.metrics': expected a non-empty list of {list(SCORE_METRICS)}, "
                f"got {self.metrics}"
            )
        self.epipolar.check(f"{where}.epipolar")
        if "epipolar" in self.metrics and not _installed("kornia"):
            raise ValueError(
                f"config key '{where}.metrics': 'epipolar' needs the kornia package (pip install kornia), "
                "not installed"
            )
        _positive(self.figures, f"{where}.figures", allow_zero=True)
        if (self.figures or self.figure_videos) and "reprojection" not in self.metrics:
            raise ValueError(f"config key '{where}.figures': the pictures need the 'reprojection' metric")


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

    def check(self, where: str = "eval.validation") -> None:
        if not self.prompts:
            raise ValueError(f"config key '{where}.prompts': expected at least one prompt")
        if self.images is not None and len(self.images) != len(self.prompts):
            raise ValueError(
                f"config key '{where}.images': expected one image per prompt ({len(self.prompts)}), "
                f"got {len(self.images)}"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"config key '{where}.seeds': expected distinct seeds, got {self.seeds}")
        for key in ("num_frames", "height", "width", "steps"):
            if getattr(self, key) is not None:
                _positive(getattr(self, key), f"{where}.{key}")
        _positive(self.batch_size, f"{where}.batch_size")
        _positive(self.grid_frames, f"{where}.grid_frames")
        if self.score is not None:
            self.score.check(f"{where}.score")


@dataclass
class PairsConfig:
    """The pairs stage (engine.stages.pairs): best vs worst per prompt (the paper's thresholds)."""

    min_gap: float = 0.05  # keep a pair when worst − best ≥ this
    min_motion: float = 0.001  # drop videos whose camera-motion score is below this
    overwrite: bool = False  # replace an existing, different pair index
    plots: bool = True  # write the score and gap histograms

    def check(self, where: str = "loop.pairs") -> None:
        _positive(self.min_gap, f"{where}.min_gap", allow_zero=True)
        _positive(self.min_motion, f"{where}.min_motion", allow_zero=True)


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

    def check(self, where: str = "loop.encode") -> None:
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"config key '{where}.heldout_fraction': expected a value in [0, 1)")
        _positive(self.shard_size, f"{where}.shard_size")


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

    def check(self, where: str = "loop.evaluate") -> None:
        _positive(self.num_candidates, f"{where}.num_candidates")
        if self.score is not None:
            self.score.check(f"{where}.score")


@dataclass
class SyntheticCandidatesConfig:
    """loop.candidates synthetic: each "prompt" is one procedural scene (engine.scenes): its clean clip and
    corrupted versions, with exact geometry, so the oracle scores them meaningfully."""

    scenes: int = 8  # procedural scenes (each gives clean and corrupted candidates)
    kinds: list[str] | None = None  # corruption kinds (None: all)
    seed: int = 0  # the scenes' seed

    def check(self, where: str = "loop.synthetic") -> None:
        for kind in self.kinds or []:
            _choice(kind, CORRUPTIONS, f"{where}.kinds")
        _positive(self.scenes, f"{where}.scenes")


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

    def check(self, where: str = "loop") -> None:
        _choice(self.candidates, CANDIDATE_SOURCES, f"{where}.candidates")
        for name in ("synthetic", "generation", "score", "pairs", "encode", "evaluate"):
            getattr(self, name).check(f"{where}.{name}")


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

    def check(self) -> Config:
        """Each section's checks, then those across sections; returns the config, its loop's stages set to the
        trainer's model."""
        for section in dataclasses.fields(self):
            value = getattr(self, section.name)
            if dataclasses.is_dataclass(value):
                value.check()
        if self.dpo.reference == "adapters_off" and not self.lora.enabled:
            raise ValueError(
                "config key 'dpo.reference': 'adapters_off' needs LoRA (lora.enabled: true); "
                "full fine-tuning needs 'separate' or 'precomputed'"
            )
        if self.lora.enabled:
            self.lora.check_experts(self.model.name)
        if not self.lora.enabled and len(self.train.export_formats) > 1:
            raise ValueError(
                f"config key 'train.export_formats': {self.train.export_formats} need LoRA (lora.enabled: "
                "true); full fine-tuning exports 'diffusers'"
            )
        backend = self.model.attention_backend.removeprefix("diffusers:")
        if (
            self.distributed.sequence_parallel > 1
            and backend != self.model.attention_backend
            and "native" not in backend
        ):
            raise ValueError(
                f"config key 'model.attention_backend': sequence parallelism exchanges PyTorch SDPA's "
                f"inputs; use an SDPA kernel or a diffusers native backend, not {backend!r}"
            )
        if self.loop is not None:
            self.loop.generation.model = self.loop.encode.model = self.model.name
        return self
