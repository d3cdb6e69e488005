"""DA3Config: the architecture knobs of Depth Anything 3, the six released sizes, and the official configs."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace

HEADS = ("dualdpt", "dpt")  # depth + rays (any-view models) | depth + sky (mono, metric)
FFNS = ("mlp", "swiglu")


@dataclass(frozen=True)
class DA3Config:
    """Sizes of every DA3 submodule; the defaults are DA3-Large. A negative start index means "never"."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    ffn: str = "mlp"  # "mlp": GELU MLP of 4C; "swiglu": Giant's SwiGLU
    patch_size: int = 14
    img_size: int = 518  # side of the square the learned position table was trained for
    out_layers: tuple[int, ...] = (11, 15, 19, 23)
    alt_start: int = 8  # camera token written and frame/global alternation starting at this block
    qknorm_start: int = 8
    rope_start: int = 8
    rope_freq: float = 100.0
    cat_token: bool = True  # head features = [last local output ‖ normed block output]
    head: str = "dualdpt"
    head_features: int = 256
    head_out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    head_output_dim: int = 2
    cameras: bool = True  # camera encoder (known cameras in) and decoder (cameras out)
    cam_enc_depth: int = 4
    cam_enc_heads: int = 16
    gs_head: bool = False  # Giant's Gaussian-splat head (weights only)
    gs_output_dim: int = 38

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_layers", tuple(int(i) for i in self.out_layers))
        object.__setattr__(self, "head_out_channels", tuple(int(c) for c in self.head_out_channels))
        head_dim = self.embed_dim // max(self.num_heads, 1)
        checks = [
            (min(self.embed_dim, self.depth, self.num_heads, self.patch_size) > 0, "sizes must be positive"),
            (self.embed_dim % self.num_heads == 0, "embed_dim must be divisible by num_heads"),
            (self.img_size % self.patch_size == 0, "img_size must be a multiple of patch_size"),
            (self.rope_start < 0 or head_dim % 4 == 0, "the head width must be a multiple of 4 (2D RoPE)"),
            (self.ffn in FFNS, f"ffn must be one of {FFNS}"),
            (self.head in HEADS, f"head must be one of {HEADS}"),
            (len(self.out_layers) == 4, "out_layers must have 4 entries"),
            (all(0 <= i < self.depth for i in self.out_layers), "out_layers must index blocks"),
            (len(self.head_out_channels) == 4, "head_out_channels must have 4 entries"),
            (self.head_features % 8 == 0, "head_features must be a multiple of 8"),
            (self.alt_start < self.depth, "alt_start must index a block"),
            (not self.cameras or self.alt_start >= 0, "cameras need a camera token (alt_start >= 0)"),
            (not self.cameras or self.head == "dualdpt", "cameras come with the dualdpt head"),
            (self.embed_dim % self.cam_enc_heads == 0, "embed_dim must be divisible by cam_enc_heads"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"DA3Config: {message} (got {self})")

    @property
    def head_dim_in(self) -> int:
        """Width of the features the heads read: 2C with cat_token, else C."""
        return 2 * self.embed_dim if self.cat_token else self.embed_dim

    def is_global(self, block: int) -> bool:
        """Whether block `block` attends across all views (odd blocks from alt_start on)."""
        return 0 <= self.alt_start <= block and block % 2 == 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "config") -> DA3Config:
        """Inverse of to_json; unknown or missing-typed fields are a ValueError naming `source`."""
        try:
            return cls(**json.loads(text))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ValueError(f"{source}: not a DA3Config in JSON ({exc})") from exc


# The ViTs the official `net.name` selects: (embed_dim, depth, num_heads, ffn).
VARIANTS = {
    "vits": (384, 12, 6, "mlp"),
    "vitb": (768, 12, 12, "mlp"),
    "vitl": (1024, 24, 16, "mlp"),
    "vitg": (1536, 40, 24, "swiglu"),
}


def _any_view(variant: str, out_layers: tuple, alt_start: int, features: int, channels: tuple) -> DA3Config:
    embed_dim, depth, num_heads, ffn = VARIANTS[variant]
    return DA3Config(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        ffn=ffn,
        out_layers=out_layers,
        alt_start=alt_start,
        qknorm_start=alt_start,
        rope_start=alt_start,
        head_features=features,
        head_out_channels=channels,
    )


_MONO = DA3Config(
    out_layers=(4, 11, 17, 23),
    alt_start=-1,
    qknorm_start=-1,
    rope_start=-1,
    cat_token=False,
    head="dpt",
    head_output_dim=1,
    cameras=False,
)
SIZES = {
    "da3-small": _any_view("vits", (5, 7, 9, 11), 4, 64, (48, 96, 192, 384)),
    "da3-base": _any_view("vitb", (5, 7, 9, 11), 4, 128, (96, 192, 384, 768)),
    "da3-large": _any_view("vitl", (11, 15, 19, 23), 8, 256, (256, 512, 1024, 1024)),
    "da3-giant": replace(_any_view("vitg", (19, 27, 33, 39), 13, 256, (256, 512, 1024, 1024)), gs_head=True),
    "da3mono-large": _MONO,
    "da3metric-large": _MONO,  # the same network as mono; only the weights (and the API's scaling) differ
}

# A few-hundred-thousand-parameter DA3 with every code path of the real one (the fixture da3_tiny_a's
# architecture): CPU tests, `--small` benchmarks, the built-in loop.
TINY_CONFIG = DA3Config(
    embed_dim=32,
    depth=8,
    num_heads=2,
    out_layers=(3, 5, 6, 7),
    alt_start=4,
    qknorm_start=4,
    rope_start=4,
    head_features=16,
    head_out_channels=(8, 16, 32, 32),
    cam_enc_depth=2,
    cam_enc_heads=4,
)

# Its mono/metric counterpart: a plain ViT (no alternation, camera token, RoPE, qk-norm) and the DPT head.
TINY_MONO_CONFIG = replace(
    TINY_CONFIG,
    alt_start=-1,
    qknorm_start=-1,
    rope_start=-1,
    cat_token=False,
    head="dpt",
    head_output_dim=1,
    cameras=False,
)

_FFN_NAMES = {"mlp": "mlp", "swiglu": "swiglu", "Mlp": "mlp", "SwiGLUFFNFused": "swiglu"}
_HEAD_NAMES = {"DualDPT": "dualdpt", "DPT": "dpt"}


def _head_class(section: dict) -> str | None:
    """The official head class named in a config section (`class`, or the YAML's `__object__.name`)."""
    return section.get("class") or (section.get("__object__") or {}).get("name")


def config_from_official(data: dict, source: str = "config") -> DA3Config:
    """DA3Config from the official YAML (`net`, `head`, `cam_enc`, `cam_dec`, `gs_head`) or from a fixture's
    `derived` section (the same plus `backbone`, whose sizes override the ViT named by `net.name`)."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: a DA3 config must be a dict, got {type(data).__name__}")
    yaml = data.get("yaml", data)
    try:
        net, head = yaml["net"], yaml["head"]
        embed_dim, depth, num_heads, ffn = VARIANTS[net["name"]]
        vit = data.get("backbone", {})
        if vit:
            embed_dim, depth, num_heads, ffn = vit["embed_dim"], vit["depth"], vit["num_heads"], vit["ffn"]
        cam_enc, cam_dec = data.get("cam_enc", yaml.get("cam_enc")), data.get("cam_dec", yaml.get("cam_dec"))
        head_class = _head_class(data.get("head", {})) or _head_class(head)
        has_gs = bool(data.get("gs_head", "gs_head" in yaml))
        config = DA3Config(
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            ffn=_FFN_NAMES[ffn],
            patch_size=vit.get("patch_size", 14),
            img_size=vit.get("img_size_for_pos_embed", 518),
            out_layers=tuple(net["out_layers"]),
            alt_start=net["alt_start"],
            qknorm_start=net["qknorm_start"],
            rope_start=net["rope_start"],
            rope_freq=vit.get("rope_frequency") or 100.0,
            cat_token=net["cat_token"],
            head=_HEAD_NAMES[head_class] if head_class else ("dualdpt" if cam_dec else "dpt"),
            head_features=head["features"],
            head_out_channels=tuple(head["out_channels"]),
            head_output_dim=head["output_dim"],
            cameras=cam_dec is not None,
            cam_enc_depth=(cam_enc or {}).get("trunk_depth", 4),
            cam_enc_heads=(cam_enc or {}).get("num_heads", 16),
            gs_head=has_gs,
            gs_output_dim=yaml["gs_head"]["output_dim"] if has_gs else 38,
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{source}: missing or malformed DA3 config entry {exc}") from exc
    _check_widths(config, head, cam_enc, cam_dec, source)
    return config


def _check_widths(
    config: DA3Config, head: dict, cam_enc: dict | None, cam_dec: dict | None, source: str
) -> None:
    """ValueError when the official widths disagree with what DA3Config derives from the ViT width."""
    expected = {"head.dim_in": (head.get("dim_in"), config.head_dim_in)}
    if (cam_enc is None) != (cam_dec is None):
        raise ValueError(f"{source}: cam_enc and cam_dec come together; got only one of them")
    if cam_enc is not None:
        expected["cam_enc.dim_out"] = (cam_enc.get("dim_out"), config.embed_dim)
        expected["cam_dec.dim_in"] = (cam_dec.get("dim_in"), config.head_dim_in)
    for name, (got, want) in expected.items():
        if got != want:
            raise ValueError(f"{source}: {name} = {got!r} cannot be built; DA3 derives {want!r} from the ViT")


def describe(config: DA3Config) -> str:
    """The size name of a released config, else its ViT width and depth (for messages)."""
    name = next((name for name, size in SIZES.items() if size == config), None)
    return name or f"a DA3 with a ViT of width {config.embed_dim} and {config.depth} blocks"


def resolve_config(config: str | dict | DA3Config) -> DA3Config:
    """A size name (SIZES), an official/derived config dict, or a DA3Config → DA3Config."""
    if isinstance(config, DA3Config):
        return config
    if isinstance(config, str):
        if config not in SIZES:
            raise ValueError(f"unknown DA3 size {config!r}; expected one of {sorted(SIZES)}")
        return SIZES[config]
    return config_from_official(config)
