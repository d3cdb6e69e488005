"""VGGTConfig: the architecture knobs of VGGT (defaults build VGGT-1B) and their JSON forms."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields

POSITIVE_FIELDS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")
POSITIVE_FIELDS += ("patch_embed_num_heads", "camera_num_heads", "dpt_features", "aa_block_size")


@dataclass(frozen=True)
class VGGTConfig:
    """Sizes of every VGGT submodule; the defaults are the public VGGT-1B."""

    img_size: int = 518  # side of the square the learned patch-embed position table was trained for
    patch_size: int = 14
    embed_dim: int = 1024  # aggregator width (= patch-embed ViT width); heads read 2·embed_dim
    depth: int = 24  # frame-attention blocks (as many global blocks follow, alternating)
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    qk_norm: bool = True
    rope_freq: float = 100.0
    init_values: float = 0.01  # LayerScale init of aggregator and camera-trunk blocks
    aa_order: tuple[str, ...] = ("frame", "global")  # which attention runs first in each alternation
    aa_block_size: int = 1  # blocks of one kind run back to back before switching
    patch_embed_depth: int = 24  # DINOv2-style ViT-L/14 with registers
    patch_embed_num_heads: int = 16
    patch_embed_init_values: float = 1.0
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    camera_iterations: int = 4  # refinement iterations of the camera head
    dpt_features: int = 256
    dpt_out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, ...] = (4, 11, 17, 23)  # aggregator outputs the DPT heads read

    def __post_init__(self) -> None:
        object.__setattr__(self, "dpt_out_channels", tuple(int(c) for c in self.dpt_out_channels))
        object.__setattr__(self, "dpt_layers", tuple(int(i) for i in self.dpt_layers))
        object.__setattr__(self, "aa_order", tuple(self.aa_order))
        for name in POSITIVE_FIELDS:
            if getattr(self, name) <= 0:
                raise ValueError(f"VGGTConfig: {name} must be positive, got {getattr(self, name)}")
        checks = [
            (self.img_size % self.patch_size == 0, "img_size must be a multiple of patch_size"),
            (self.embed_dim % self.num_heads == 0, "embed_dim must be divisible by num_heads"),
            ((self.embed_dim // self.num_heads) % 4 == 0, "the head width must be a multiple of 4 (2D RoPE)"),
            (
                self.embed_dim % self.patch_embed_num_heads == 0,
                "embed_dim must divide by patch_embed_num_heads",
            ),
            (
                (2 * self.embed_dim) % self.camera_num_heads == 0,
                "2·embed_dim must divide by camera_num_heads",
            ),
            (len(self.dpt_out_channels) == 4, "dpt_out_channels must have 4 entries"),
            (len(self.dpt_layers) == 4, "dpt_layers must have 4 entries"),
            (all(0 <= i < self.depth for i in self.dpt_layers), "dpt_layers must index aggregator outputs"),
            (self.dpt_features % 4 == 0, "dpt_features must be a multiple of 4 (sin-cos position embedding)"),
            (self.camera_iterations >= 1, "camera_iterations must be >= 1"),
            (sorted(self.aa_order) == ["frame", "global"], "aa_order must order 'frame' and 'global'"),
            (self.depth % self.aa_block_size == 0, "depth must divide by aa_block_size"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"VGGTConfig: {message} (got {self})")

    @property
    def head_dim_in(self) -> int:
        """Width of the aggregator outputs: frame and global tokens concatenated."""
        return 2 * self.embed_dim

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> VGGTConfig:
        """Build from a (possibly partial) dict of field values; unknown keys are an error."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a VGGT config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown VGGTConfig keys {unknown}; expected a subset of {sorted(known)}"
            )
        for name, value in data.items():
            if not _fits(value, getattr(cls, name)):
                raise ValueError(
                    f"{source}: VGGTConfig.{name} must look like {getattr(cls, name)!r}, got {value!r}"
                )
        return cls(**data)

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> VGGTConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not valid JSON ({exc})") from exc
        return cls.from_dict(data, source)


def _fits(value: object, default: object) -> bool:
    """Whether a JSON value can stand for a field whose default is `default` (bool, int, float, int tuple)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, tuple):
        return isinstance(value, (list, tuple)) and all(_fits(v, default[0]) for v in value)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, str):
        return isinstance(value, str)
    return isinstance(value, int)


def config_from_official_args(construction: dict, source: str = "construction") -> VGGTConfig:
    """Map the official submodules' constructor arguments (aggregator, patch-embed ViT, heads) to VGGTConfig.

    `construction` has the layout of a fixture's config.json "construction" entry: "aggregator",
    "patch_embed_vit", "camera_head", "depth_head" and "point_head", each with an "args" dict (and the
    camera head a "forward_num_iterations"). Arguments VGGT cannot express raise ValueError.
    """
    try:
        agg = construction["aggregator"]["args"]
        vit = construction["patch_embed_vit"]["args"]
        cam_entry = construction["camera_head"]
        cam = cam_entry["args"]
        heads = {name: construction[name]["args"] for name in ("depth_head", "point_head")}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{source}: missing official constructor entry {exc}") from exc
    config = VGGTConfig(
        img_size=agg["img_size"],
        patch_size=agg["patch_size"],
        embed_dim=agg["embed_dim"],
        depth=agg["depth"],
        num_heads=agg["num_heads"],
        mlp_ratio=float(agg["mlp_ratio"]),
        num_register_tokens=agg["num_register_tokens"],
        qk_norm=agg["qk_norm"],
        rope_freq=agg["rope_freq"],
        init_values=agg["init_values"],
        aa_order=tuple(agg.get("aa_order", ("frame", "global"))),
        aa_block_size=agg.get("aa_block_size", 1),
        patch_embed_depth=vit["depth"],
        patch_embed_num_heads=vit["num_heads"],
        patch_embed_init_values=vit["init_values"],
        camera_trunk_depth=cam["trunk_depth"],
        camera_num_heads=cam["num_heads"],
        camera_iterations=cam_entry.get("forward_num_iterations", 4),
        dpt_features=heads["depth_head"]["features"],
        dpt_out_channels=tuple(heads["depth_head"]["out_channels"]),
        dpt_layers=tuple(heads["depth_head"]["intermediate_layer_idx"]),
    )
    _check_official_args(config, agg, vit, cam, heads, source)
    return config


BIASES = ("qkv_bias", "proj_bias", "ffn_bias")
POSE_ENCODING = "absT_quaR_FoV"
CAMERA_ACTS = {"trans_act": "linear", "quat_act": "linear", "fl_act": "relu"}
HEAD_OUTPUTS = {"depth_head": (2, "exp", "expp1"), "point_head": (4, "inv_log", "expp1")}


def _check_official_args(
    config: VGGTConfig, agg: dict, vit: dict, cam: dict, heads: dict, source: str
) -> None:
    """Raise ValueError for official arguments that differ from what VGGT(config) builds."""
    expected = {
        "aggregator.patch_embed": (agg.get("patch_embed", "dinov2_vitl14_reg").startswith("dinov2_"), True),
        "aggregator.qkv_bias/proj_bias/ffn_bias": ([agg.get(k, True) for k in BIASES], [True] * 3),
        "patch_embed_vit.qkv_bias/proj_bias/ffn_bias": ([vit.get(k, True) for k in BIASES], [True] * 3),
        "patch_embed_vit.ffn_layer": (vit.get("ffn_layer", "mlp"), "mlp"),
        "patch_embed_vit.block_chunks": (vit.get("block_chunks", 0), 0),
        "patch_embed_vit.interpolate_antialias": (vit.get("interpolate_antialias", True), True),
        "patch_embed_vit.interpolate_offset": (vit.get("interpolate_offset", 0.0), 0.0),
        "patch_embed_vit.qk_norm": (vit.get("qk_norm", False), False),
        "patch_embed_vit.embed_dim": (vit["embed_dim"], config.embed_dim),
        "patch_embed_vit.img_size": (vit.get("img_size", config.img_size), config.img_size),
        "patch_embed_vit.patch_size": (vit.get("patch_size", config.patch_size), config.patch_size),
        "patch_embed_vit.mlp_ratio": (float(vit.get("mlp_ratio", config.mlp_ratio)), config.mlp_ratio),
        "patch_embed_vit.num_register_tokens": (vit["num_register_tokens"], config.num_register_tokens),
        "camera_head.dim_in": (cam["dim_in"], config.head_dim_in),
        "camera_head.mlp_ratio": (float(cam.get("mlp_ratio", config.mlp_ratio)), config.mlp_ratio),
        "camera_head.init_values": (cam.get("init_values", config.init_values), config.init_values),
        "camera_head.pose_encoding_type": (cam.get("pose_encoding_type", POSE_ENCODING), POSE_ENCODING),
        "camera_head activations": (
            [cam.get(k, v) for k, v in CAMERA_ACTS.items()],
            list(CAMERA_ACTS.values()),
        ),
    }
    for name, args in heads.items():
        expected[f"{name}.dim_in"] = (args["dim_in"], config.head_dim_in)
        expected[f"{name}.patch_size"] = (args["patch_size"], config.patch_size)
        expected[f"{name}.features"] = (args["features"], config.dpt_features)
        expected[f"{name}.out_channels"] = (tuple(args["out_channels"]), config.dpt_out_channels)
        expected[f"{name}.intermediate_layer_idx"] = (
            tuple(args["intermediate_layer_idx"]),
            config.dpt_layers,
        )
        expected[f"{name}.down_ratio"] = (args.get("down_ratio", 1), 1)
        expected[f"{name}.pos_embed"] = (args.get("pos_embed", True), True)
        expected[f"{name}.feature_only"] = (args.get("feature_only", False), False)
        expected[f"{name} outputs"] = (
            [args.get(k) for k in ("output_dim", "activation", "conf_activation")],
            list(HEAD_OUTPUTS[name]),
        )
    for name, (got, want) in expected.items():
        if got != want:
            raise ValueError(f"{source}: {name} = {got!r} cannot be built by VGGT(config); expected {want!r}")


# A few-hundred-thousand-parameter VGGT with every code path of the real one: CPU tests, `--small` benchmarks.
TINY_CONFIG = VGGTConfig(
    img_size=56,
    embed_dim=32,
    depth=2,
    num_heads=2,
    patch_embed_depth=1,
    patch_embed_num_heads=2,
    camera_trunk_depth=1,
    camera_num_heads=2,
    dpt_features=16,
    dpt_out_channels=(8, 16, 32, 32),
    dpt_layers=(0, 1, 1, 1),
)
