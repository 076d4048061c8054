"""Every setting of the workflow, declared once: its type, default, allowed values and a one-line description.

The config file is :class:`Config`; each of its sections is one of the dataclasses below, and the package's
functions take those dataclasses. Everything else derives from these declarations: the JSON schema that
validates a config and fills its defaults (``vecset.config``, written to workflow/schemas/config.schema.yaml
for editors), the enum lists code checks against (``get_args`` of the ``Literal`` types), and the typed
objects built from a validated config. A default says why it is what it is where that is not obvious.

Torch-free and numpy-free: parsing the Snakefile imports this module.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

T = TypeVar("T")


def setting(default: Any, description: str, reruns: tuple[str, ...] = (), **schema: Any) -> Any:
    """A dataclass field: its default, a one-line description, the rules whose jobs rerun when it changes (they get
    it as a param: :func:`rule_params`) and extra JSON-schema keywords (bounds...)."""
    metadata = {"description": description, "schema": schema, "reruns": reruns}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: type, description: str) -> Any:
    """A nested section: a dataclass whose own fields carry the defaults."""
    return field(default_factory=cls, metadata={"description": description, "schema": {}})


_BOUNDS = {
    "minimum": (lambda v, b: v >= b, "≥"),
    "exclusiveMinimum": (lambda v, b: v > b, ">"),
    "maximum": (lambda v, b: v <= b, "≤"),
    "exclusiveMaximum": (lambda v, b: v < b, "<"),
    "multipleOf": (lambda v, b: v % b == 0, "a multiple of"),
}


def _breach(value: Any, schema: Mapping[str, Any], choices: tuple[Any, ...]) -> str | None:
    """What ``value`` breaks of a field's declared choices (a Literal type) and bounds, or None."""
    if choices and value not in choices:
        return f"one of {choices}"
    if isinstance(value, tuple):
        if len(value) < schema.get("minItems", 0):
            return f"at least {schema['minItems']} item(s)"
        inner = [_breach(item, schema.get("items", {}), ()) for item in value]
        return next((f"items {problem}" for problem in inner if problem), None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    for key, (holds, words) in _BOUNDS.items():
        if key in schema and not holds(value, schema[key]):
            return f"{words} {schema[key]}"
    if "const" in schema.get("not", {}) and value == schema["not"]["const"]:
        return f"other than {schema['not']['const']}"
    return None


def check_declared(settings: Any) -> None:
    """Raise ValueError naming the first field of a settings dataclass whose value breaks what its declaration
    allows: its Literal choices and the bounds in its metadata (the same the config schema is made from)."""
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value, hint = getattr(settings, f.name), hints[f.name]
        choices = get_args(hint) if typing.get_origin(hint) is Literal else ()
        problem = _breach(value, f.metadata.get("schema", {}), choices)
        if problem:
            raise ValueError(f"{f.name} must be {problem}, got {value!r}")


class Declared:
    """Settings checked against their declarations when made (:func:`check_declared`)."""

    def __post_init__(self) -> None:
        check_declared(self)


NOT_ONE: dict[str, Any] = {"not": {"const": 1}}  # a JSON-schema keyword that is no Python name

DemoSize = Literal["demo", "real"]
SignMethod = Literal["pseudonormal", "winding_number"]
Preset = Literal["tiny", "small", "base", "upstream"]
Bottleneck = Literal["none", "kl", "normalized"]
LatentQueries = Literal["learnable", "fps"]
FourierBasis = Literal["axes", "rotated"]
InputSampling = Literal["fps", "uniform"]
FpsBackend = Literal["auto", "fpsample", "torch", "torch_cluster"]
Device = Literal["auto", "cpu", "cuda"]
EvalPrecision = Literal["bf16", "fp32"]
WandbMode = Literal["offline", "online", "disabled"]

SIGN_METHODS: tuple[str, ...] = get_args(SignMethod)
BOTTLENECKS: tuple[str, ...] = get_args(Bottleneck)
LATENT_QUERIES: tuple[str, ...] = get_args(LatentQueries)
FOURIER_BASES: tuple[str, ...] = get_args(FourierBasis)
FPS_BACKENDS: tuple[str, ...] = get_args(FpsBackend)

NAME_PATTERN = "^[A-Za-z][A-Za-z0-9_]*$"  # structure names: they become file names and model channel labels
RUN_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*$"
IMAGECAS_LABELS = {
    "myocardium": 1,
    "left_atrium": 2,
    "left_ventricle": 3,
    "right_atrium": 4,
    "right_ventricle": 5,
    "aorta": 6,
    "pulmonary_artery": 7,
    "left_atrial_appendage": 8,
    "coronary_arteries": 9,
    "pulmonary_veins": 10,
}


# --- the model ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig(Declared):
    """Everything needed to rebuild the autoencoder; stored in every checkpoint. ``train.model`` in the config
    overrides these fields of the chosen preset; ``n_classes`` comes from the label map."""

    n_classes: int
    width: int = setting(128, "Channels of every token.", minimum=8)
    depth: int = setting(2, "Self-attention blocks between the encoder and the decoder.", minimum=0)
    dim_head: int = setting(
        32, "Attention head size (<= 128 so fused attention kernels apply).", minimum=8, maximum=128
    )
    n_latents: int = setting(64, "Latents per shape (M).", minimum=1)
    latent_dim: int = setting(16, "Bottleneck channels per latent (kl and normalized).", minimum=1)
    bottleneck: Bottleneck = setting("normalized", "none, kl (diagonal Gaussian) or normalized (LaGeM-style).")
    latent_queries: LatentQueries = setting("learnable", "Latent queries: learned vectors, or FPS input points.")
    fourier_features: int = setting(48, "sin/cos features of xyz (a multiple of 6).", minimum=6, multipleOf=6)
    fourier_basis: FourierBasis = setting(
        "axes",
        "Directions of the Fourier frequencies: axes (x, y, z at every octave, as 3DShape2VecSet) or rotated (a "
        "fixed pseudo-random orthonormal frame per octave, so the features are not separable by axis).",
    )
    ff_mult: int = setting(4, "Feed-forward hidden size as a multiple of width.", minimum=1)
    # Upstream VecSet has none. It lifts the demo's IoU at equal steps, not at equal wall time
    # (docs/decisions.md, "No decoder feed-forward, 4000 steps").
    decoder_ff: bool = setting(False, "Feed-forward after the decoder cross-attention.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {self.n_classes}")
        if self.width % self.dim_head:  # across two fields: no schema keyword says it
            raise ValueError(f"width {self.width} is not a multiple of dim_head {self.dim_head}")

    @property
    def fps_latents(self) -> int:
        """FPS points an item must carry as latent queries (0 with learnable queries)."""
        return self.n_latents if self.latent_queries == "fps" else 0


# Named sizes; a preset overrides only the fields that differ from ModelConfig's defaults.
# "upstream" is VecSetX's learnable_vec1024x16_dim1024_depth24_nb (≈425 M parameters).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "small": {"width": 256, "depth": 6, "dim_head": 64, "n_latents": 256},
    "base": {"width": 512, "depth": 12, "dim_head": 64, "n_latents": 512},
    "upstream": {"width": 1024, "depth": 24, "dim_head": 64, "n_latents": 1024},
}


# --- per-case stages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoSettings(Declared):
    n_cases: int = setting(40, "Phantom hearts to generate.", minimum=1)
    size: DemoSize = setting("demo", "demo (96×96×80, seconds per case) or real (512×512×256 like ImageCAS).")


@dataclass(frozen=True)
class MeshSettings(Declared):
    padding: int = setting(2, "Zero voxels around each structure's crop so every surface closes.", minimum=1)
    # 1024³; a 512×512×256 CT is 67 M. A header is untrusted: without a bound, one file's claim sets every mesh
    # job's memory request (they share one, for SLURM arrays) and its gzip stream could inflate without end.
    max_voxels: int = setting(
        1 << 30,
        "A label image whose header claims more voxels is refused by name before it is read; its claim raises "
        "no job's memory request.",
        minimum=1,
    )


@dataclass(frozen=True)
class SampleSettings(Declared):
    """Points per case in results/samples/{case}.npz."""

    n_surface: int = setting(100_000, "Area-weighted points on the structure surfaces (encoder input pool).", minimum=1)
    n_volume: int = setting(
        25_000, "Uniform points in the normalised cube [-1, 1]^3 with per-structure SDF.", minimum=1
    )
    n_near: int = setting(
        25_000, "Near-surface points (surface samples plus Gaussian noise), split evenly over near_noise.", minimum=1
    )
    near_noise: tuple[float, ...] = setting(
        (0.005, 0.05),
        "Standard deviations of the near-surface noise, in normalised units.",
        minItems=1,
        items={"exclusiveMinimum": 0},
    )
    sign: SignMethod = setting(
        "pseudonormal",
        "SDF sign (both exact): pseudonormal (fast, needs the closed meshes the mesh rule makes) or "
        "winding_number (any mesh, about 2× slower).",
    )


@dataclass(frozen=True)
class NormalisationSettings(Declared):
    fit: float = setting(
        0.9,
        "The heart's largest half-extent maps to this value, leaving a margin inside [-1, 1]^3.",
        exclusiveMinimum=0,
        exclusiveMaximum=1,
    )


@dataclass(frozen=True)
class ThreadSettings(Declared):
    mesh: int = setting(1, "Threads of each mesh job.", minimum=1)
    sample: int = setting(2, "Threads of each sample job (they share the exact SDF queries).", minimum=1)


@dataclass(frozen=True)
class SplitSettings(Declared):
    """Train/validation split by a hash of (seed, case id), so adding cases never moves others."""

    val_fraction: float = setting(
        0.2, "Share of cases in validation (used when folds is 0).", minimum=0, exclusiveMaximum=1
    )
    folds: int = setting(
        0,
        "0 = one split by val_fraction; K >= 2 = K hash folds (each run picks its fold).",
        minimum=0,
        **NOT_ONE,
    )


# --- training -------------------------------------------------------------------------------------------


WALL_BAND = 0.03
"""Normalised distance within which a query point is at a shared wall (train.weights.exclusion): about two grid
cells at 129³ (2.4 mm in a 160 mm cube), the width of the slivers and overlaps a wall's two SDFs leave between them."""


@dataclass(frozen=True)
class LossWeights(Declared):
    vol: float = setting(1.0, "L1 on uniform volume points, per present structure.", minimum=0)
    near: float = setting(1.0, "L1 on near-surface points, per present structure.", minimum=0)
    surface: float = setting(1.0, "|f_c| at surface points of structure c.", minimum=0)
    eikonal: float = setting(0.1, "(|∇f_c| - 1)² at near-surface points (finite differences).", minimum=0)
    kl: float = setting(1e-3, "KL term of the kl bottleneck.", minimum=0)
    exclusion: float = setting(
        0.0,
        f"relu(−(f_a + f_b)) at query points within {WALL_BAND} (normalised) of two structures a, b by their exact "
        "SDFs (shared walls), f the predicted SDFs: zero for the truth, positive where the model puts a wall's point "
        "inside both structures (overlapping walls).",
        minimum=0,
    )
    thin: float = setting(
        1.0,
        "Weight of train.thin_structures against the others in the vol, near and surface terms (1: equal).",
        exclusiveMinimum=0,
    )
    truncation: float = setting(
        0.0,
        "Truncation distance of the vol and near terms (normalised units; 0: none): targets clamped to ± this, a "
        "prediction beyond it on the target's side costs nothing (DeepSDF's clamp, with the wrong side's gradient).",
        minimum=0,
    )


@dataclass(frozen=True)
class ItemSettings(Declared):
    """How many points of each kind one training item (one case) holds, and how they are drawn."""

    n_input: int = setting(1024, "Surface points fed to the encoder.", minimum=1)
    # Uniform is what VecSetX feeds its learnable queries, and a worker builds 10x more items/s; fps runs
    # batched on the training device over a random pool of FPS_POOL × n_input points.
    input_sampling: InputSampling = setting(
        "uniform", "How the encoder input is drawn from a case's surface points: uniform, or fps (on the device)."
    )
    # 512 + 640 instead of 768 + 384, the same 1152 queries: on the demo budget the left atrial appendage's Dice
    # 0.41 → 0.52, the large structures' mean 0.765 → 0.770, none lower by more than 0.02 (docs/decisions.md, "Queries
    # per item").
    n_vol: int = setting(512, "Volume query points, vol_inside of them inside some structure.", minimum=2)
    n_near: int = setting(640, "Near-surface query points.", minimum=1)
    n_surface_loss: int = setting(128, "Surface points in the |f| = 0 term.", minimum=1)
    vol_inside: float = setting(
        0.5,
        "Share of the volume queries drawn inside some structure, split evenly over the present structures (the "
        "rest outside all).",
        minimum=0,
        maximum=1,
    )
    input_floor: float = setting(
        0.0,
        "Each present structure's least share of the encoder input, as a fraction of an equal share (0: points "
        "by surface area, 1: equal counts); the rest by area.",
        minimum=0,
        maximum=1,
    )
    near_floor: float = setting(
        0.0,
        "The same floor for the near-surface queries and the surface-term points (a near point belongs to the "
        "structure whose surface is nearest).",
        minimum=0,
        maximum=1,
    )
    n_val_vol: int = setting(4096, "Uniform volume points per validation case (IoU).", minimum=1)
    fps_backend: FpsBackend = setting(
        "auto",
        "Farthest point sampling (fps input, fps latent queries) on the training device; auto: torch_cluster "
        "when installed, else fpsample on CPU and batched torch on GPU (never a random fallback).",
    )
    # On the demo's 32 training cases the validation error stops falling after ~4000 steps while the training error
    # keeps falling (docs/decisions.md, "Augmentation and AdamW beta2 0.95"): augmentation, not steps, is what the
    # demo lacks. ±12° is the phantoms' own pose spread; with beta2 0.95 the large structures' mean Dice 0.789 →
    # 0.840, LAA 0.57 → 0.65.
    rotate_deg: float = setting(12.0, "Random rotation augmentation in degrees (never a mirror).", minimum=0)
    scale_jitter: float = setting(0.1, "Random isotropic scale augmentation 1 ± this.", minimum=0, exclusiveMaximum=1)


@dataclass(frozen=True)
class WandbSettings(Declared):
    """Weights & Biases logging. The API key is read from WANDB_API_KEY only, never from config."""

    mode: WandbMode = setting("offline", "offline (files in the run's state folder), online or disabled.")
    project: str = setting("vecset-heart", "wandb project.")
    entity: str | None = setting(None, "wandb entity (team or user); null for the default.")


@dataclass(frozen=True)
class TrainResources(Declared):
    """What one training job asks for; all per node."""

    gpus: int = setting(0, "GPUs per node; > 0 runs one rank per GPU (nccl, bf16).", minimum=0)
    cpu_ranks: int = setting(1, "Ranks per node when gpus is 0 (gloo).", minimum=1)
    cpus_per_rank: int = setting(
        2,
        "CPUs per rank: its torch threads plus its DataLoader workers (the job asks ranks × this).",
        minimum=1,
    )
    mem_mb: int = setting(8000, "Memory per node (MB).", minimum=1)
    runtime: int = setting(60, "Time limit of the job in minutes.", minimum=1)
    nodes: int = setting(
        1, "Nodes; > 1 runs one torchrun agent per node under srun (SLURM only), a c10d rendezvous.", minimum=1
    )
    signal_margin_s: int = setting(
        300,
        "SLURM sends SIGUSR1 this many seconds before the time limit: save, exit, retry, resume (0: no signal).",
        minimum=0,
    )

    @property
    def ranks_per_node(self) -> int:
        """One rank per GPU, or the configured CPU ranks."""
        return self.gpus or self.cpu_ranks

    @property
    def world_size(self) -> int:
        return self.ranks_per_node * self.nodes

    def inference(self) -> InferenceResources:
        """What an evaluation or encoding job of this run asks for: one of its GPUs with that GPU's CPUs and
        share of the node's memory, or, for a CPU run, one rank's CPUs; at least INFERENCE_MEM_FLOOR_MB."""
        share = self.mem_mb // self.gpus if self.gpus else self.mem_mb
        return InferenceResources(min(self.gpus, 1), self.cpus_per_rank, max(INFERENCE_MEM_FLOOR_MB, share))


# A real-size case in evaluation: the label image and its class copies (67 M voxels), the decoded grid (ten
# classes at 0.5 mm: about 1 GB) and the label map written back.
INFERENCE_MEM_FLOOR_MB = 16000


@dataclass(frozen=True)
class InferenceResources(Declared):
    """One evaluation or encoding job's request (derived from the run's TrainResources, never configured)."""

    gpus: int
    threads: int
    mem_mb: int


@dataclass(frozen=True)
class TrainSettings(Declared):
    """Training settings shared by every run; each entry of ``runs`` may override any of them."""

    preset: Preset = setting("tiny", "Model size: tiny (≈1 M parameters, CPU) … upstream (≈425 M, VecSetX's size).")
    # Its own key so that runs differing only in it measure run-to-run noise on the same cases and split.
    seed: int | None = setting(
        None,
        "Seed of the run's draws (initial weights, batch order, item points, augmentation); null: the top-level seed.",
        minimum=0,
    )
    # No bottleneck (docs/decisions.md, "The demo's batch, learning rate and bottleneck"). No decoder feed-forward:
    # it is half of a demo step's work, and 4000 steps without it beat 2000 with it in less wall time
    # (docs/decisions.md, "No decoder feed-forward, 4000 steps").
    model: dict[str, Any] = setting(
        {"bottleneck": "none", "decoder_ff": False}, "Overrides of the preset's model fields.", overrides=ModelConfig
    )
    epochs: int = setting(500, "Passes over the training cases; the run's length unless max_steps is set.", minimum=1)
    max_steps: int | None = setting(
        None, "Total optimizer steps; wins over epochs when set (size it to the time limit × retries).", minimum=1
    )
    batch_size: int = setting(4, "Cases per batch per rank.", minimum=1)
    accum_steps: int = setting(1, "Gradient accumulation: micro-batches per optimizer step.", minimum=1)
    # 3e-3 at batch 4 reaches the demo's IoU in its budget (docs/decisions.md, "The demo's batch, learning rate and
    # bottleneck"); large presets need far less (VecSetX: 5e-5 at effective batch 256; config/imagecas.yaml).
    lr: float = setting(3e-3, "Peak AdamW learning rate.", exclusiveMinimum=0)
    min_lr: float = setting(1e-5, "Learning rate at the end of the cosine decay.", minimum=0)
    weight_decay: float = setting(0.01, "AdamW weight decay.", minimum=0)
    # With 0.999 a gradient spike collapsed a demo run to a constant field at step 1480; with 0.95 the same run
    # trained through (one run each, docs/decisions.md, "Augmentation and AdamW beta2 0.95").
    adam_beta2: float = setting(
        0.95,
        "AdamW's second-moment decay; 0.95 (GPT-style) bounds a rarely-updated weight's step after a gradient spike.",
        exclusiveMinimum=0,
        exclusiveMaximum=1,
    )
    warmup_steps: int = setting(50, "Linear warmup in optimizer steps.", minimum=1)
    clip_grad: float = setting(1.0, "Gradient-norm clipping.", exclusiveMinimum=0)
    ema_decay: float = setting(
        0.995,
        "Per-step decay of the weight average that is validated and saved as best; at update n it is "
        "min(ema_decay, (1 + n) / (10 + n)), so the average forgets the initial weights.",
        minimum=0,
        exclusiveMaximum=1,
    )
    val_every_steps: int = setting(200, "Validate every N optimizer steps (and after the last).", minimum=1)
    # 7 GB at the upstream size: a save per 13-step epoch would cost more than the steps themselves.
    checkpoint_minutes: float = setting(
        20.0, "Save state/last.pt every N minutes of training (also on a stop request and at the end).", minimum=0
    )
    # 8.8 GB each at the upstream size: two keep a change and its undo without filling a project quota.
    keep_states: int = setting(
        2,
        "States of other settings or data kept in the run's state/previous/ (the oldest removed beyond this); "
        "changing a setting back resumes its kept state.",
        minimum=0,
    )
    eikonal_step: float = setting(
        0.01, "Finite-difference step of the eikonal gradient (normalised units).", exclusiveMinimum=0
    )
    n_eikonal: int = setting(32, "Near-surface points per item in the eikonal term.", minimum=0)
    weights: LossWeights = section(LossWeights, "Loss weights.")
    items: ItemSettings = section(ItemSettings, "Points per training item (one case).")
    num_workers: int | None = setting(
        None,
        "DataLoader workers per rank (persistent for the whole run); null: from resources.cpus_per_rank "
        "(all but two on a GPU rank, none on a CPU rank, whose threads compute).",
        minimum=0,
    )
    compile: bool = setting(False, "torch.compile the training objective (minutes of compiling, faster steps).")
    activation_checkpointing: bool = setting(
        False, "Recompute each latent self-attention block in the backward pass: less memory, ~30 % more compute."
    )
    device: Device = setting("auto", "auto: the rank's GPU when there is one, else the CPU.")
    wandb: WandbSettings = section(WandbSettings, "Weights & Biases logging (key from WANDB_API_KEY only).")
    tensorboard: bool = setting(True, "TensorBoard event files in the run's state folder.")
    progress: bool = setting(True, "tqdm progress bar in the job's log.")
    thin_structures: tuple[str, ...] = setting(
        ("left_atrial_appendage", "coronary_arteries", "pulmonary_veins"),
        "Structures whose validation IoU is also reported apart from the large ones.",
    )
    resources: TrainResources = section(TrainResources, "What one training job asks for.")

    @property
    def gpu_ranks(self) -> bool:
        """Whether the planned ranks compute on GPUs: device cuda, or auto with GPUs asked for (resources.gpus)."""
        return self.device == "cuda" or (self.device == "auto" and self.resources.gpus > 0)

    def loader_workers(self, gpu: bool) -> int:
        """DataLoader workers per rank: ``num_workers``, or from the rank's CPUs: all but two on a GPU rank
        (one for the training process, one for its pin-memory thread; at least one worker), none on a CPU rank."""
        if self.num_workers is not None:
            return self.num_workers
        cpus = self.resources.cpus_per_rank
        return max(cpus - 2, min(cpus - 1, 1)) if gpu else 0

    def torch_threads(self, gpu: bool) -> int:
        """Intra-op threads of a rank: its CPUs less its DataLoader workers (at least one)."""
        return max(1, self.resources.cpus_per_rank - self.loader_workers(gpu))

    def model_config(self, n_classes: int) -> ModelConfig:
        """The preset for ``n_classes`` structures with this run's model overrides."""
        return preset_config(self.preset, n_classes, **self.model)


def preset_config(name: str, n_classes: int, **overrides: Any) -> ModelConfig:
    """The named preset for ``n_classes`` structures, with any field overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig(n_classes=n_classes, **(PRESETS[name] | overrides))


# --- evaluation and the whole file ----------------------------------------------------------------------


# 1024³ grid points take about 110 GB for ten structures (vecset.eval.decode.grid_memory_mb): a large node's
# memory. Beyond it the evaluate job's request exceeds any node.
MAX_GRID = 1024
# 100 steps take 1.6 s per demo case on 2 CPU cores; 10 000 take minutes per case and are far past where the
# fit stops improving (docs/decisions.md, "Latent fitting: 100 steps").
MAX_FIT_STEPS = 10_000


# Which rules an eval setting reruns: every reconstruction is evaluated and the oracle goes through the same grid;
# encoding and latent fitting also change what encode stores; render_cases only draws the report.
RECONSTRUCTION = ("evaluate", "oracle")
ENCODING = ("encode", *RECONSTRUCTION)
REPORT = ("plots",)


@dataclass(frozen=True)
class EvalSettings(Declared):
    """Reconstruction of every validation case after training."""

    # 129³ on the demo: about 4.7 s per case on 2 CPU cores coarse-to-fine (13 s dense; bench/decode.py).
    resolution: int = setting(
        128,
        "Grid points per axis over the normalised cube for decoding and marching cubes (when spacing_mm is null).",
        minimum=8,
        maximum=MAX_GRID,
        reruns=RECONSTRUCTION,
    )
    spacing_mm: float | None = setting(
        None,
        "Decode at this grid spacing in mm (0.5 for CT): grid points per axis derived per case from its cube "
        "(2 × scale mm across), at most max_resolution; null: resolution.",
        exclusiveMinimum=0,
        reruns=RECONSTRUCTION,
    )
    max_resolution: int = setting(
        384,
        "Most grid points per axis spacing_mm may derive (the grid takes classes × R³ × 4 bytes).",
        minimum=8,
        maximum=MAX_GRID,
        reruns=RECONSTRUCTION,
    )
    coarse_to_fine: bool = setting(
        True,
        "Decode a coarse grid, then refine only cells near some structure's zero level (false: every grid "
        "point, for checks).",
        reruns=RECONSTRUCTION,
    )
    # An exact SDF's slope is 1. The demo model's gradient reaches 1.54 within two cells of its surfaces (2.4 far
    # from them, where nothing is refined); on its 10 validation cases at 129³ coarse-to-fine equals dense decoding
    # from 1.5 up and first differs at 1.25 (docs/decisions.md, "Coarse-to-fine decoding, refine_slope 1.75"). 1.75:
    # 4.2× fewer points.
    refine_slope: float = setting(
        1.75,
        "Coarse-to-fine: the steepest slope assumed of the model's SDF; a cell is left undecoded only where some "
        "corner's |SDF| proves that no structure can cross zero inside it at that slope.",
        minimum=1.0,
        reruns=RECONSTRUCTION,
    )
    batch_size: int = setting(16, "Cases encoded at once (evaluate, encode).", minimum=1, reruns=ENCODING)
    # The encoder alone places thin structures 1-2 mm off (coronaries: Dice 0.18 on the demo); 100 steps fitting the
    # latent set to the case's own surface bring them to 0.50 and every other structure up, for 1.6 s per demo case
    # on 2 CPU cores (docs/decisions.md, "Latent fitting: 100 steps"). The fitted set is what evaluate decodes and
    # encode stores.
    fit_steps: int = setting(
        100,
        "Adam steps fitting each case's latent set to its own surface points and normals before it is decoded or "
        "stored (evaluate, encode); 0: the encoder's latent set as it is.",
        minimum=0,
        maximum=MAX_FIT_STEPS,
        reruns=ENCODING,
    )
    fit_lr: float = setting(
        4.0e-2,
        "Peak learning rate of the latent fitting (cosine decay to 0 over fit_steps).",
        exclusiveMinimum=0,
        reruns=ENCODING,
    )
    fit_points: int = setting(
        1024,
        "Surface points per fitting step and case, split evenly over its present structures.",
        minimum=1,
        reruns=ENCODING,
    )
    # The largest weight that keeps every structure's fitted Dice within 0.02 of the free fit's (3 seeds, the demo's
    # validation cases): the median drift 0.385 → 0.310; 0.5 would reach 0.205 for pulmonary veins −0.056
    # (docs/decisions.md, "The proximal weight 0.1").
    fit_proximal: float = setting(
        0.1,
        "Weight of the fitted latent set's mean squared difference from the encoder's, per element: holds the fit near "
        "the encoder's latent sets (which a generative model learns); 0: free.",
        minimum=0,
        reruns=ENCODING,
    )
    # bf16 against fp32 on the demo model at 129³ (CPU autocast): Dice of the thinnest structures' grids 0.988
    # (0.966 before the SDF head ran in fp32); an fp32 decoder on a GPU still decodes a 0.5 mm case in seconds.
    precision: EvalPrecision = setting(
        "bf16",
        "On a GPU: bf16 autocast (the SDF head in fp32), or fp32 throughout; the CPU always uses fp32.",
        reruns=ENCODING,
    )
    # Demo, three seeds (docs/decisions.md, "Shared walls from one partition, sliver 1.5 cells"): worst pair's mean
    # overlap 25 % → 0, gap 11 % → 0.8–1.2 %; touching pairs' meshes share vertices; each structure's Dice within 0.01
    # (coronaries −0.002, the appendage +0.011).
    partition: bool = setting(
        True,
        "Extract every structure's mesh and the label map from one partition of space: each grid point belongs to "
        "at most one structure, overlaps split at their bisector, and a sliver of background narrower than "
        "partition_sliver_cells between two structures split between them; touching structures then share "
        "their wall's vertices. false: each structure from its own SDF.",
        reruns=RECONSTRUCTION,
    )
    # 2 cells closed every gap but gave the coronaries the epicardial fat beside them (Dice −0.04); 1.5 keeps them.
    partition_sliver_cells: float = setting(
        1.5,
        "eval.partition: a background point is given to its nearest structure when its distances to the two "
        "nearest structures' surfaces add up to less than this many grid cells.",
        minimum=0,
        reruns=RECONSTRUCTION,
    )
    render_cases: int = setting(
        3,
        "Validation cases drawn as slices in the report, worst to best mean Dice.",
        minimum=1,
        reruns=REPORT,
    )
    tubular: tuple[str, ...] = setting(
        ("coronary_arteries", "pulmonary_veins"),
        "Tubular structures: their metrics add centreline Dice (clDice), which a broken or sprouting tube loses "
        "at any thickness. Names not in labels are ignored, with a warning.",
        uniqueItems=True,
        reruns=RECONSTRUCTION,
    )


def rule_params(settings: Any, rule: str) -> dict[str, Any]:
    """The fields of a settings section whose declaration says they rerun ``rule`` (``setting(reruns=...)``): that
    rule's params, so a change to any of them, and only those, reruns its jobs."""
    values = as_dict(settings)
    return {f.name: values[f.name] for f in dataclasses.fields(settings) if rule in f.metadata.get("reruns", ())}


@dataclass(frozen=True)
class Config(Declared):
    """The workflow configuration (config/config.yaml)."""

    input_dir: str = setting("", "Folder of multi-label NIfTI label maps; empty to generate the demo phantoms.")
    input_pattern: str = setting(
        "{case}.nii.gz", "File name pattern inside input_dir; {case} is the case id.", pattern=r"\{case\}"
    )
    labels: dict[str, int] = setting(
        IMAGECAS_LABELS,
        "Structure name → raw integer value in the label maps; the order is the class order everywhere.",
        minProperties=1,
        additionalProperties={"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
        propertyNames={"pattern": NAME_PATTERN},
    )
    ignore_unknown_labels: bool = setting(
        False, "Treat raw values absent from labels as background instead of refusing the case."
    )
    exclude: tuple[str, ...] = setting((), "Case ids to leave out of every stage.", uniqueItems=True)
    seed: int = setting(0, "One seed for phantoms, sampling, the split and (unless train.seed) training.", minimum=0)
    demo: DemoSettings = section(DemoSettings, "Embedded demo data, used when input_dir is empty.")
    mesh: MeshSettings = section(MeshSettings, "Per-structure marching cubes.")
    samples: SampleSettings = section(SampleSettings, "Points per case in the sample files.")
    normalisation: NormalisationSettings = section(NormalisationSettings, "World mm → the normalised cube.")
    threads: ThreadSettings = section(ThreadSettings, "Threads of the per-case jobs.")
    split: SplitSettings = section(SplitSettings, "Train/validation split by a hash of (seed, case id).")
    train: TrainSettings = section(TrainSettings, "Training settings shared by every run.")
    eval: EvalSettings = section(EvalSettings, "Reconstruction of every validation case.")
    runs: dict[str, dict[str, Any] | None] = setting(
        {"demo": {}},
        "Runs to train: name → overrides of any train key, plus fold (with split.folds >= 2); null drops a run.",
        runs=TrainSettings,
    )

    @property
    def demo_data(self) -> bool:
        """Whether the workflow generates its own phantoms (no input_dir)."""
        return self.input_dir == ""


@dataclass(frozen=True)
class RunSettings(Declared):
    """One entry of ``runs``: the train section with the run's overrides applied, and its fold."""

    name: str
    train: TrainSettings
    fold: int | None = None


# --- settings ↔ plain values ----------------------------------------------------------------------------


def _convert(hint: Any, value: Any) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return build(hint, value)  # type: ignore[arg-type]
    if typing.get_origin(hint) is tuple and isinstance(value, list | tuple):
        return tuple(value)
    return value


def build(cls: type[T], values: Mapping[str, Any]) -> T:
    """An instance of the settings dataclass ``cls`` from plain values (a validated config section, a
    checkpoint's or a plan's dict); unknown keys are refused by name."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; known: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _convert(hints[k], v) for k, v in values.items()})


def as_dict(settings: Any) -> dict[str, Any]:
    """A settings dataclass as plain JSON-ready values (tuples as lists)."""
    return _plain(dataclasses.asdict(settings))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
