"""Compose a sweep with Hydra and validate it into frozen, typed specs.

A sweep file (``sweeps/NAME.yaml``) is a Hydra primary config: its defaults list picks
a ``gpu`` and a ``cluster`` from the config groups under ``conf/``, and any key can be
overridden from the command line in Hydra syntax (``model=ViT-B-32``, ``gpu=h100``,
``train.lr=5e-4``, ``'samples_seen=[3B,13B]'``). Models and data sets are looked up by
name in the ``models`` and ``datasets`` groups, since one sweep names many of them.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, make_dataclass
from enum import Enum
from importlib.util import find_spec
from pathlib import Path
from typing import Any, get_args, get_type_hints

from scaling.errors import ClipscaleError, first_line
from scaling.modeltypes import COCA_PREFIX, MODEL_TYPES, coca_config
from scaling.units import parse_count

CONFIG_PATH_ENV = "CLIPSCALE_CONFIG_PATH"
PRECISIONS = ("amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "pure_bf16", "pure_fp16", "fp32")
LR_SCHEDULERS = ("cosine", "const", "const-cooldown")
CLUSTER_KINDS = ("local", "slurm")
EVAL_TASKS = ("zeroshot_classification", "zeroshot_retrieval", "linear_probe", "finetune")
# How a samples-seen axis is trained: one run per point; one constant-LR trunk with a
# cooldown branch per point; or the trunk's checkpoints as points (scaling/trajectory.py).
SAMPLES_MODES = ("separate", "branches", "checkpoints")


@dataclass(frozen=True)
class TrainSettings:
    """open_clip_train settings of one run; ``None`` means "derive it" or "model default"."""

    lr: float
    warmup: int
    batch_size: int  # per GPU (process)
    gpus: int  # training processes: the trainer's world size
    accum_freq: int = 1
    workers: int = 4  # data-loader workers per process; part of the trainer's rounding
    epochs: int | None = None
    train_num_samples: int | None = None
    epoch_samples: int | None = None  # target epoch length when epochs are derived
    precision: str = "amp"
    lr_scheduler: str = "cosine"
    wd: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    seed: int = 0
    image_size: int | None = None
    context_length: int | None = None
    patch_dropout: float | None = None
    # What is trained (scaling/modeltypes.py): CLIP, SigLIP's sigmoid loss, or CoCa with its
    # captioning decoder and open_clip's loss weights (which only CoCa reads).
    model_type: str = "clip"
    coca_caption_loss_weight: float = 2.0
    coca_contrastive_loss_weight: float = 1.0
    extra_args: tuple[str, ...] = ()
    # How a run is executed, not what it learns: these never change a point's id.
    dist_timeout_min: float = 10.0  # a collective (or the ranks' rendezvous) waiting longer fails the run
    torchcompile: bool = False  # open_clip's --torchcompile
    grad_checkpointing: bool = False  # only where memory needs it: it recomputes activations
    local_loss: bool = False  # --local-loss --gather-with-grad: the contrastive loss in linear memory
    gather_with_grad: bool = False

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.gpus * self.accum_freq


TRAIN_FIELDS = tuple(f.name for f in fields(TrainSettings))
# Settings that change how a run is executed but not what is trained: not part of a point's id.
EXECUTION_FIELDS = ("epoch_samples", "dist_timeout_min", "torchcompile", "grad_checkpointing",
                    "local_loss", "gather_with_grad")  # fmt: skip
# Keys of a point's coordinates: the three main axes plus any training setting.
AXIS_KEYS = ("model", "data", "samples_seen", *(f for f in TRAIN_FIELDS if f != "extra_args"))


@dataclass(frozen=True)
class CheckpointPolicy:
    """Which checkpoints a run keeps. Always the latest (rewritten atomically every epoch,
    what a requeued run resumes from); with ``keep_every`` N also every N-th epoch's."""

    keep_every: int = 0


@dataclass(frozen=True)
class ModelSpec:
    """A model of the catalogue; ``open_clip_config`` is None for open_clip's built-ins."""

    name: str
    description: str
    open_clip_config: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DataSpec:
    name: str
    description: str
    num_samples: int
    shards: str


@dataclass(frozen=True)
class GpuSpec:
    """The device a plan costs for: a GPU (bf16 peak) or, for CPU grids, one CPU core."""

    name: str
    peak_tflops: float
    mfu: float
    kind: str = "gpu"  # or "cpu"

    @property
    def hours(self) -> str:
        return "CPU-h" if self.kind == "cpu" else "GPU-h"


@dataclass(frozen=True)
class ClusterSpec:
    kind: str
    options: Mapping[str, Any]


@dataclass(frozen=True)
class EvalSet:
    """One evaluation in CLIP_benchmark's webdataset layout at ``path``."""

    name: str
    task: str
    path: str
    shots: tuple[int, ...] = ()  # linear_probe: k-shot probes beside the full one (scaling/probe.py)
    seeds: int = 3  # draws of each k-shot probe, whose mean and spread are stored
    # finetune (scaling/finetune.py): passes over the train split, the peak learning rate, and
    # the sets of the same classes scored after it (a distribution shift each).
    epochs: int = 1
    lr: float = 1e-5
    shifted: tuple[EvalSet, ...] = ()


@dataclass(frozen=True)
class EvalSpec:
    """What every run of the sweep is evaluated on after training."""

    sets: tuple[EvalSet, ...] = ()
    batch_size: int = 256
    # Mean zero-shot top-1 over `robustness_sets`, reported as data set `robustness_name`.
    robustness_name: str | None = None
    robustness_sets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    """Per-point settings: ``train`` applies to every point whose coordinates ``match``."""

    match: Mapping[str, tuple[Any, ...]]
    train: Mapping[str, Any]


@dataclass(frozen=True)
class SweepSpec:
    name: str
    description: str
    path: str
    data_root: str
    axes: tuple[tuple[str, tuple[Any, ...]], ...]
    include: tuple[Mapping[str, tuple[Any, ...]], ...]
    exclude: tuple[Mapping[str, tuple[Any, ...]], ...]
    train: TrainSettings
    rules: tuple[Rule, ...]
    finetune: Mapping[str, Any] | None
    gpu: GpuSpec
    cluster: ClusterSpec
    models: Mapping[str, ModelSpec]
    datasets: Mapping[str, DataSpec]
    runs_root: str = "runs"
    eval: EvalSpec = EvalSpec()
    checkpoints: CheckpointPolicy = CheckpointPolicy()
    samples_mode: str = "separate"
    cooldown: float = 0.2  # branches: the cooldown's share of each point's samples seen


# ---------------------------------------------------------------- where configs live


def builtin_root() -> Path:
    """The directory holding ``conf/`` and ``sweeps/``: in the wheel, else the checkout."""
    package = Path(__file__).resolve().parent
    packaged = package / "_config"
    return packaged if packaged.is_dir() else package.parent


def config_dirs(extra: Sequence[str | Path] = ()) -> tuple[Path, ...]:
    """Config-group roots, first wins: ``extra``, ``$CLIPSCALE_CONFIG_PATH``, built-in."""
    env = [p for p in os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep) if p]
    dirs = [Path(p).expanduser().resolve() for p in (*extra, *env)]
    for d in dirs:
        if not d.is_dir():
            raise ClipscaleError(f"config directory {d} does not exist")
    return (*dirs, builtin_root() / "conf")


def _sweep_dirs(conf_dirs: Sequence[Path]) -> list[Path]:
    # A user's config dir keeps its sweeps in sweeps/; the built-in ones sit beside conf/.
    dirs = [d / "sweeps" for d in conf_dirs[:-1]] + [builtin_root() / "sweeps"]
    return [d for d in dirs if d.is_dir()]


def available_sweeps(conf_dirs: Sequence[Path]) -> list[str]:
    return sorted({p.stem for d in _sweep_dirs(conf_dirs) for p in d.glob("*.yaml")})


def find_sweep(name: str, conf_dirs: Sequence[Path]) -> Path:
    """A sweep by name (searched in the sweeps dirs) or by path to its YAML file."""
    if name.endswith((".yaml", ".yml")) or os.sep in name:
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise ClipscaleError(f"sweep file {name} does not exist")
        return path
    for d in _sweep_dirs(conf_dirs):
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    valid = ", ".join(available_sweeps(conf_dirs))
    raise ClipscaleError(f"unknown sweep {name!r} (valid: {valid})")


# ---------------------------------------------------------------- the catalogue


def _builtin_configs() -> Path | None:
    spec = find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model_configs"


def open_clip_builtin_models() -> frozenset[str]:
    """Names of open_clip's own model configs, read from its package without importing it."""
    configs = _builtin_configs()
    return frozenset(p.stem for p in configs.glob("*.json")) if configs is not None else frozenset()


def builtin_config(name: str) -> dict[str, Any] | None:
    """open_clip's own config of a built-in model, read from its package without importing it."""
    configs = _builtin_configs()
    path = configs / f"{name}.json" if configs is not None and name else None
    if path is None or not path.is_file():
        return None
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, dict) else None


def coca_model(model: ModelSpec) -> ModelSpec:
    """The CoCa form of a catalogue model (``model_type: coca``): open_clip's own
    ``coca_<name>`` where it has one, else derived from the model's config."""
    name = COCA_PREFIX + model.name
    config = model.open_clip_config
    if config is None:
        if name in open_clip_builtin_models():
            return ModelSpec(name, "open_clip built-in model")
        config = builtin_config(model.name)
        if config is None:
            raise ClipscaleError(f"model_type coca: model {model.name!r} has no open_clip config to derive "
                                 "a CoCa model from")  # fmt: skip
    return ModelSpec(name, f"CoCa form of {model.name}: {model.description}", coca_config(config))


# Directories of the catalogue groups. Not named like the `model` and `data` axes: Hydra
# would take `model=X` for a choice of config group instead of a value of the axis.
_GROUP_DIRS = {"model": "models", "data": "datasets", "gpu": "gpu", "cluster": "cluster"}


class Catalog:
    """Models, data sets, GPUs and clusters defined in the config groups."""

    def __init__(self, conf_dirs: Sequence[Path]):
        self.conf_dirs = tuple(conf_dirs)

    def options(self, group: str) -> list[str]:
        return sorted({p.stem for d in self.conf_dirs for p in (d / _GROUP_DIRS[group]).glob("*.yaml")})

    def _load(self, group: str, name: str) -> dict[str, Any] | None:
        for d in self.conf_dirs:
            path = d / _GROUP_DIRS[group] / f"{name}.yaml"
            if path.is_file():
                return load_yaml_mapping(path)
        return None

    def _unknown(self, group: str, name: object, more: str = "") -> ClipscaleError:
        valid = ", ".join(self.options(group))
        return ClipscaleError(f"unknown {group} {name!r} (valid: {valid}{more})")

    def model(self, name: str) -> ModelSpec:
        raw = self._load("model", name)
        if raw is None:
            builtins = open_clip_builtin_models()
            if name in builtins:
                return ModelSpec(name, "open_clip built-in model")
            if name.startswith(COCA_PREFIX) and len(name) > len(COCA_PREFIX):
                return coca_model(self.model(name.removeprefix(COCA_PREFIX)))
            more = f"; or any of open_clip's {len(builtins)} built-in models" if builtins else ""
            raise self._unknown("model", name, more)
        typed = _typed(_MODEL, raw, f"model {name}")
        config = typed.get("open_clip_config")
        needed = {"embed_dim", "vision_cfg", "text_cfg"}
        if config is not None and (not isinstance(config, dict) or not needed <= set(config)):
            raise ClipscaleError(f"model {name}: open_clip_config needs embed_dim, vision_cfg and text_cfg")
        return ModelSpec(name, typed.get("description") or "", config)

    def dataset(self, name: str) -> DataSpec:
        raw = self._load("data", name)
        if raw is None:
            raise self._unknown("data", name)
        typed = _typed(_DATA, raw, f"data {name}")
        if "shards" not in typed or "num_samples" not in typed:
            raise ClipscaleError(f"data {name}: needs both shards and num_samples")
        count = parse_count(typed["num_samples"], f"data {name}: num_samples")
        return DataSpec(name, typed.get("description") or "", count, typed["shards"])


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping; parse errors become one line."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (YAMLError, OmegaConfBaseException) as e:
        raise ClipscaleError(f"malformed YAML in {path}: {_yaml_problem(e)}") from None
    except UnicodeDecodeError as e:
        raise ClipscaleError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(loaded, dict):
        raise ClipscaleError(f"{path} must hold a mapping of keys to values")
    return {str(k): v for k, v in loaded.items()}


def _yaml_problem(error: BaseException) -> str:
    """What is wrong in a YAML text and where; PyYAML's first line only says what it was doing
    ("while constructing a mapping"), its problem line what it found ("found duplicate key")."""
    problem, mark = getattr(error, "problem", None), getattr(error, "problem_mark", None)
    if not problem:
        return first_line(error)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark else str(problem)


# ---------------------------------------------------------------- composing a sweep


def compose_sweep(path: Path, overrides: Sequence[str], conf_dirs: Sequence[Path]) -> dict[str, Any]:
    """Run Hydra's composition of the sweep file with the user's overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    search = ",".join(f"'file://{d}'" for d in conf_dirs)
    try:
        with initialize_config_dir(config_dir=str(path.parent), version_base="1.3"):
            cfg = compose(path.stem, overrides=[*overrides, f"hydra.searchpath=[{search}]"])
        composed = OmegaConf.to_container(cfg, resolve=True)
    except MissingConfigException as e:
        missing = (e.missing_cfg_file or "").split("/")
        if len(missing) == 2 and e.options is not None:
            group, option = missing
            raise ClipscaleError(f"unknown {group} {option!r} (valid: {', '.join(e.options)})") from None
        raise ClipscaleError(f"in sweep {path.stem}: {first_line(e)}") from None
    except OverrideParseException as e:
        raise ClipscaleError(f"malformed override: {first_line(e)}") from None
    except YAMLError as e:
        raise ClipscaleError(f"malformed YAML in sweep {path.stem}: {_yaml_problem(e)}") from None
    except UnicodeDecodeError as e:  # the sweep file or a config it composes
        raise ClipscaleError(f"in sweep {path.stem}: a config file is not UTF-8 text ({e.reason} at byte "
                             f"{e.start}); save {path.name} and its configs as UTF-8") from None  # fmt: skip
    except (HydraException, OmegaConfBaseException) as e:
        cause = e.__cause__
        detail = _yaml_problem(cause) if isinstance(cause, YAMLError) else " ".join(str(e).split())
        raise ClipscaleError(f"in sweep {path.stem}: {detail}") from None
    assert isinstance(composed, dict)
    return {str(k): v for k, v in composed.items()}


def load_sweep(
    sweep: str = "toy", overrides: Sequence[str] = (), config_dir: Sequence[str | Path] = ()
) -> SweepSpec:
    """Compose sweep ``sweep`` with Hydra overrides and validate it whole."""
    dirs = config_dirs(config_dir)
    path = find_sweep(sweep, dirs)
    return parse_sweep(compose_sweep(path, overrides, dirs), path, Catalog(dirs))


# ---------------------------------------------------------------- validation
# A schema maps each key a mapping may have to its type: ``Any`` leaves a value to its own check,
# ``[T]`` takes one T or a list of them. OmegaConf checks types and choices: a value assigned to
# a structured config of one field of its type (made once per type) is converted or raises
# ValidationError, in microseconds. (Dataclass schemas would cost every command 4 ms at import, and
# an OmegaConf.merge of a whole sweep into them ~20 ms, a quarter of planning the paper grid.)
# Ranges, counts such as 64k and catalogue names, which OmegaConf cannot express, are checked after.


def _choices(*values: str) -> Any:
    """An Enum of ``values``: a field of it accepts exactly these strings."""
    return Enum("choice", [(v, v) for v in values])


# Training settings whose YAML form is not their type: choices, counts and a list of arguments.
_TRAIN = {**get_type_hints(TrainSettings), "precision": _choices(*PRECISIONS),
          "lr_scheduler": _choices(*LR_SCHEDULERS), "model_type": _choices(*MODEL_TYPES),
          "train_num_samples": Any, "epoch_samples": Any, "extra_args": [str]}  # fmt: skip
# An axis takes one value or a list of them; so does a point's coordinate.
_COORDS = {"model": [str], "data": [str], "samples_seen": [Any],
           **{k: [t] for k, t in _TRAIN.items() if k in AXIS_KEYS}}  # fmt: skip
# The axes and sections (Any) are checked by their own schemas.
_SWEEP = dict(name=str | None, description=str | None, data_root=str | None, runs_root=str | None,
              cooldown=float | None, samples_mode=_choices(*SAMPLES_MODES) | None, train=Any, points=Any,
              include=Any, exclude=Any, finetune=Any, eval=Any, checkpoints=Any, gpu=Any, cluster=Any,
              clusters=Any, **dict.fromkeys(AXIS_KEYS, Any))  # fmt: skip
_RULE = dict(match=Any, train=Any)
_FINETUNE = dict(samples_seen=Any, data=str, **_TRAIN)
_GPU = dict(name=str, peak_tflops=float, mfu=float, kind=_choices("gpu", "cpu"))
_CLUSTER = dict(kind=_choices(*CLUSTER_KINDS))
_CHECKPOINTS = dict(keep_every=int)
_EVAL = dict(root=str | None, batch_size=int, sets=Any, robustness=Any)
_EVAL_SET = dict(name=str, task=_choices(*EVAL_TASKS), path=str | None, shots=[int], seeds=int, epochs=int,
                 lr=float, shifted=[str])  # fmt: skip
_ROBUSTNESS = dict(name=str | None, sets=[str])
_MODEL = dict(description=str | None, open_clip_config=Any)
_DATA = dict(description=str | None, num_samples=Any, shards=str)

# Ranges of training settings, as _within's (lo, hi, lo included). The trainer seeds numpy
# with seed + rank, which must not be negative.
_RANGES: dict[str, tuple[Any, ...]] = {
    "warmup": (0,), "workers": (0,), "seed": (0,), "batch_size": (1,), "gpus": (1,), "accum_freq": (1,),
    "epochs": (1,), "image_size": (1,), "context_length": (1,), "lr": (0.0, math.inf, False),
    "eps": (0.0, math.inf, False), "dist_timeout_min": (0.0, math.inf, False), "wd": (0.0,),
    "coca_caption_loss_weight": (0.0,), "coca_contrastive_loss_weight": (0.0,), "beta1": (0.0, 1.0),
    "beta2": (0.0, 1.0), "patch_dropout": (0.0, 1.0)}  # fmt: skip
_EXPECTED = {int: "an integer", float: "a number", bool: "true or false"}


@functools.cache
def _holder(kind: Any) -> Any:
    """A structured config of one field of type ``kind``: assigning to it is OmegaConf's check
    and conversion (one per type: each costs ~0.4 ms to make)."""
    from omegaconf import OmegaConf

    return OmegaConf.structured(make_dataclass("value", [("value", kind, field(default="???"))]))


def _base(kind: Any) -> Any:
    """The type of ``kind`` without its None (``float | None``: float)."""
    args = [a for a in get_args(kind) if a is not type(None)]
    return args[0] if args else kind


def _typed(schema: Mapping[str, Any], raw: Any, where: str) -> dict[str, Any]:
    """``raw`` checked against ``schema``: each key one of its keys, each value of its type."""
    if not isinstance(raw, dict):
        raise ClipscaleError(f"{where}: must be a mapping of keys to values, got {raw!r}")
    for key in raw:
        if key not in schema:
            raise ClipscaleError(f"{where}: unknown key {key!r} (valid: {', '.join(sorted(schema))})")
    return {k: _value(schema[k], k, v, where) for k, v in raw.items()}


def _value(kind: Any, key: str, value: Any, where: str) -> Any:
    """``value`` converted to type ``kind`` by OmegaConf (``[T]``: one T or a list of them)."""
    if isinstance(kind, list):
        return tuple(_value(kind[0], key, v, where) for v in _as_tuple(value))
    if kind is Any:
        return value  # a section or a count: checked on its own
    from omegaconf.errors import ValidationError

    holder, base = _holder(kind), _base(kind)
    if base is int and isinstance(value, float) and value.is_integer():
        value = int(value)  # Hydra reads warmup=1e4 as a float, OmegaConf takes no float for an int
    try:
        holder.value = value
        typed = holder.value
    except ValidationError:
        if value is None:
            raise ClipscaleError(f"{where}: {key} must be set") from None
        if isinstance(base, type) and issubclass(base, Enum):
            valid = ", ".join(base.__members__)
            raise ClipscaleError(f"{where}: unknown {key} {value!r} (valid: {valid})") from None
        expected = _EXPECTED.get(base, "a string")
        raise ClipscaleError(f"{where}: {key} must be {expected}, got {value!r}") from None
    return typed.value if isinstance(typed, Enum) else typed


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _within(name: str, value: Any, where: str, lo: float, hi: float = math.inf, closed: bool = True) -> Any:
    """``value``, typed, inside [lo, hi) (or (lo, hi) unless ``closed``)."""
    if value is None:
        raise ClipscaleError(f"{where}: {name} must be set")
    if (lo <= value if closed else lo < value) and value < hi:
        return value
    if isinstance(value, int) and hi == math.inf:
        raise ClipscaleError(f"{where}: {name} must be at least {lo}, got {value!r}")
    bounds = f"{'[' if closed else '('}{lo}, {hi})"
    raise ClipscaleError(f"{where}: {name} must lie in {bounds}, got {value!r}")


def _checked(key: str, value: Any, where: str) -> Any:
    """A typed training setting or axis value checked for what OmegaConf cannot express."""
    if value is None:
        return None
    if key in ("samples_seen", "train_num_samples", "epoch_samples"):
        return parse_count(value, f"{where}: {key}")
    return _within(key, value, where, *_RANGES[key]) if key in _RANGES else value


def _train_values(raw: Any, where: str) -> dict[str, Any]:
    """A mapping of training settings, each checked and typed."""
    return {k: _checked(k, v, where) for k, v in _typed(_TRAIN, raw, where).items()}


def _coords(raw: Any, where: str) -> dict[str, tuple[Any, ...]]:
    """Axis names to one value or a list of them, each checked and typed."""
    if not raw or not isinstance(raw, dict):
        raise ClipscaleError(f"{where}: must be a mapping of axis names to values")
    return {k: tuple(_checked(k, v, where) for v in vs) for k, vs in _typed(_COORDS, raw, where).items()}


def _default_train(raw: Any, where: str) -> TrainSettings:
    typed = _train_values(raw, where)
    for required in ("lr", "warmup", "batch_size", "gpus"):
        if typed.get(required) is None:
            raise ClipscaleError(f"{where}: train.{required} must be set")
    return TrainSettings(**typed)


def _gpu(raw: Any, where: str) -> GpuSpec:
    if not isinstance(raw, dict):
        raise ClipscaleError(f"{where}: selects no gpu (add '- gpu: a100' to its defaults)")
    gpu = _typed(_GPU, raw, f"{where}: gpu")
    peak = _within("gpu.peak_tflops", gpu.get("peak_tflops"), where, 0.0, math.inf, False)
    mfu = _within("gpu.mfu", gpu.get("mfu"), where, 0.0, 1.0 + 1e-12, False)
    return GpuSpec(gpu.get("name", ""), peak, mfu, gpu.get("kind", "gpu"))


def _cluster(raw: Any, overrides: Any, where: str) -> ClusterSpec:
    """The chosen cluster group, with the sweep's own settings for that kind of cluster
    (``clusters: {slurm: {...}}``) on top: e.g. the toy sweep's CPU-only Slurm jobs."""
    if not isinstance(raw, dict):
        raise ClipscaleError(f"{where}: selects no cluster (add '- cluster: local' to its defaults)")
    kind = _typed(_CLUSTER, {"kind": raw.get("kind")}, f"{where}: cluster")["kind"]
    extra = _typed(dict.fromkeys(CLUSTER_KINDS, Any), overrides or {}, f"{where}: clusters")
    for name, settings in extra.items():
        if not isinstance(settings, dict):
            raise ClipscaleError(f"{where}: clusters.{name} must map settings to values")
    options = {k: v for k, v in raw.items() if k != "kind"}
    options.update(extra.get(kind) or {})
    return ClusterSpec(kind, options)


def parse_sweep(raw: Mapping[str, Any], path: Path, catalog: Catalog) -> SweepSpec:
    """Validate a composed sweep whole: every key, value and catalogue name."""
    where = f"sweep {path.stem}"
    top = _typed(_SWEEP, raw, where)
    for axis in ("model", "data", "samples_seen"):
        if top.get(axis) in (None, [], ()):
            raise ClipscaleError(f"{where}: axis {axis} needs at least one value")
    axes = tuple(_coords({k: top[k] for k in AXIS_KEYS if top.get(k) is not None}, where).items())
    include = tuple(_coords(e, f"{where}: include") for e in top.get("include") or ())
    exclude = tuple(_coords(e, f"{where}: exclude") for e in top.get("exclude") or ())
    train = _default_train(top.get("train") or {}, f"{where}: train")
    rules = tuple(_rule(r, f"{where}: points") for r in top.get("points") or ())
    finetune = _finetune(top.get("finetune"), f"{where}: finetune")
    samples_mode = top.get("samples_mode") or "separate"
    if samples_mode != "separate" and finetune is not None:
        raise ClipscaleError(f"{where}: samples_mode={samples_mode} does not combine with finetune (a second "
                             "stage); use samples_mode=separate")  # fmt: skip
    # A cooldown of the whole run, or of none of it, leaves no trunk to branch from.
    cooldown = _within("cooldown", top.get("cooldown", 0.2), where, 0.0, 1.0, False)

    named: dict[str, set[str]] = {"model": set(), "data": set()}
    for coords in (dict(axes), *include, *exclude, *(r.match for r in rules), finetune or {}):
        for key in named:
            named[key].update(_as_tuple(coords.get(key, ())))
    models = {n: catalog.model(n) for n in sorted(named["model"])}
    if "coca" in _model_types(train, axes, include, exclude, rules):
        # A CoCa point trains its model's CoCa form, looked up by that name like any model.
        models.update((c.name, c) for c in map(coca_model, list(models.values())))
    datasets = {n: catalog.dataset(n) for n in sorted(named["data"])}
    return SweepSpec(
        name=top.get("name") or path.stem,
        description=top.get("description") or "",
        path=str(path),
        data_root=top.get("data_root") or ".",
        axes=axes,
        include=include,
        exclude=exclude,
        train=train,
        rules=rules,
        finetune=finetune,
        gpu=_gpu(top.get("gpu"), where),
        cluster=_cluster(top.get("cluster"), top.get("clusters"), where),
        models=models,
        datasets=datasets,
        runs_root=top.get("runs_root") or "runs",
        eval=_eval(top.get("eval"), f"{where}: eval"),
        checkpoints=_checkpoints(top.get("checkpoints"), f"{where}: checkpoints"),
        samples_mode=samples_mode,
        cooldown=cooldown,
    )


def _model_types(train: TrainSettings, axes: Sequence[tuple[str, tuple[Any, ...]]],
                 include: Sequence[Mapping[str, Any]], exclude: Sequence[Mapping[str, Any]],
                 rules: Sequence[Rule]) -> set[str]:  # fmt: skip
    """Every model type a sweep names: its default, its axis, and any include, exclusion or
    per-point rule that names one."""
    types = {train.model_type}
    for mapping in (dict(axes), *include, *exclude, *(r.match for r in rules), *(r.train for r in rules)):
        types.update(_as_tuple(mapping.get("model_type", ())))
    return types


def _checkpoints(raw: Any, where: str) -> CheckpointPolicy:
    if raw is None:
        return CheckpointPolicy()
    keep_every = _typed(_CHECKPOINTS, raw, where).get("keep_every", 0)
    return CheckpointPolicy(keep_every=_within("keep_every", keep_every, where, 0))


def _eval(raw: Any, where: str) -> EvalSpec:
    if raw is None:
        return EvalSpec()
    typed = _typed(_EVAL, raw, where)
    root = typed.get("root") or "."
    sets = tuple(_eval_set(entry, root, where) for entry in typed.get("sets") or ())
    robust = _typed(_ROBUSTNESS, _given(typed.get("robustness") or {}), f"{where}: robustness")
    classified = {s.name for s in sets if s.task == "zeroshot_classification"}
    for member in robust.get("sets", ()):
        if member not in classified:
            raise ClipscaleError(f"{where}: robustness set {member!r} has no zeroshot_classification entry")
    return EvalSpec(
        sets=sets,
        batch_size=_within("batch_size", typed.get("batch_size", 256), where, 1),
        robustness_name=robust.get("name") or None,
        robustness_sets=robust.get("sets", ()),
    )


def _eval_set(raw: Any, root: str, where: str) -> EvalSet:
    given = _given(raw)
    if not isinstance(given, dict) or "name" not in given or "task" not in given:
        raise ClipscaleError(f"{where}: each set needs a name and a task")
    where = f"{where}: {given['name']}"
    entry = _typed(_EVAL_SET, given, where)
    name, task = entry["name"], entry["task"]
    path = entry.get("path") or os.path.join(root, name)
    shots, seeds = _shots(entry, task, where)
    return EvalSet(name, task, path, shots, seeds, *_tuning(entry, task, root, where))


def _given(raw: Any) -> Any:
    """An evaluation's settings without those set to null, which leaves them to their defaults."""
    return {k: v for k, v in raw.items() if v is not None} if isinstance(raw, dict) else raw


def _shots(entry: dict[str, Any], task: str, where: str) -> tuple[tuple[int, ...], int]:
    """A linear probe's k-shot sizes (each k ≥ 1, no repeats) and its draws of each."""
    if task != "linear_probe" and ("shots" in entry or "seeds" in entry):
        raise ClipscaleError(f"{where}: shots and seeds are for task linear_probe, not {task}")
    shots = tuple(_within("shots", k, where, 1) for k in entry.get("shots", ()))
    if len(set(shots)) != len(shots):
        raise ClipscaleError(f"{where}: shots {list(shots)} repeat a k")
    return tuple(sorted(shots)), _within("seeds", entry.get("seeds", EvalSet.seeds), where, 1)


def _tuning(
    entry: dict[str, Any], task: str, root: str, where: str
) -> tuple[int, float, tuple[EvalSet, ...]]:
    """A fine-tuning's passes, peak learning rate and shifted sets (test splits of the same
    classes under ``root``)."""
    if task != "finetune":
        given = sorted(k for k in ("epochs", "lr", "shifted") if k in entry)
        if given:
            raise ClipscaleError(f"{where}: {', '.join(given)} are for task finetune, not {task}")
        return EvalSet.epochs, EvalSet.lr, ()
    lr = _within("lr", entry.get("lr", EvalSet.lr), where, 0.0, 1.0, False)
    shifted = tuple(
        EvalSet(n, "zeroshot_classification", os.path.join(root, n)) for n in entry.get("shifted", ())
    )
    return _within("epochs", entry.get("epochs", EvalSet.epochs), where, 1), lr, shifted


def _rule(raw: Any, where: str) -> Rule:
    rule = _typed(_RULE, raw, where)
    match = _coords(rule.get("match"), f"{where}: match")
    return Rule(match, _train_values(rule.get("train") or {}, f"{where}: train"))


def _finetune(raw: Any, where: str) -> Mapping[str, Any] | None:
    if raw is None:
        return None
    typed = _typed(_FINETUNE, raw, where)
    if typed.get("samples_seen") is None:
        raise ClipscaleError(f"{where}: samples_seen must be set")
    if "model_type" in typed:  # the second stage loads the first one's weights: the same model
        raise ClipscaleError(f"{where}: model_type is the first stage's; set it on the sweep's points")
    return {k: _checked(k, v, where) for k, v in typed.items()}


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
