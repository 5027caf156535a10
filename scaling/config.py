"""Compose a sweep with Hydra and validate it into frozen, typed specs.

A sweep file (``sweeps/NAME.yaml``) is a Hydra primary config: its defaults list picks
a ``gpu`` and a ``cluster`` from the config groups under ``conf/``, and any key can be
overridden from the command line in Hydra syntax (``model=ViT-B-32``, ``gpu=h100``,
``train.lr=5e-4``, ``'samples_seen=[3B,13B]'``). Models and data sets are looked up by
name in the ``models`` and ``datasets`` groups, since one sweep names many of them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from importlib.util import find_spec
from pathlib import Path
from typing import Any

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
        _check_keys(raw, {"description", "open_clip_config"}, f"model {name}")
        config = raw.get("open_clip_config")
        needed = {"embed_dim", "vision_cfg", "text_cfg"}
        if config is not None and (not isinstance(config, dict) or not needed <= set(config)):
            raise ClipscaleError(f"model {name}: open_clip_config needs embed_dim, vision_cfg and text_cfg")
        return ModelSpec(name, str(raw.get("description", "")), config)

    def dataset(self, name: str) -> DataSpec:
        raw = self._load("data", name)
        if raw is None:
            raise self._unknown("data", name)
        _check_keys(raw, {"description", "num_samples", "shards"}, f"data {name}")
        if "shards" not in raw or "num_samples" not in raw:
            raise ClipscaleError(f"data {name}: needs both shards and num_samples")
        return DataSpec(
            name,
            str(raw.get("description", "")),
            parse_count(raw["num_samples"], f"data {name}: num_samples"),
            str(raw["shards"]),
        )


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

_TOP_KEYS = {
    "name", "description", "data_root", "runs_root", "eval", "include", "exclude", "train", "points",
    "finetune", "gpu", "cluster", "clusters", "checkpoints", "samples_mode", "cooldown", *AXIS_KEYS,
}  # fmt: skip


def _check_keys(raw: Mapping[str, Any], allowed: set[str] | Sequence[str], where: str) -> None:
    for key in raw:
        if key not in allowed:
            raise ClipscaleError(f"{where}: unknown key {key!r} (valid: {', '.join(sorted(allowed))})")


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _int(name: str, value: Any, where: str, minimum: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ClipscaleError(f"{where}: {name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ClipscaleError(f"{where}: {name} must be at least {minimum}, got {value!r}")
    return int(value)


def _float(name: str, value: Any, where: str, low: float, high: float, closed: bool) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ClipscaleError(f"{where}: {name} must be a number, got {value!r}")
    inside = (low <= value if closed else low < value) and value < high
    if not inside:
        bounds = f"{'[' if closed else '('}{low}, {high})"
        raise ClipscaleError(f"{where}: {name} must lie in {bounds}, got {value!r}")
    return float(value)


def _choice(name: str, value: Any, where: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ClipscaleError(f"{where}: unknown {name} {value!r} (valid: {', '.join(choices)})")
    return str(value)


# The trainer seeds numpy with seed + rank, which must not be negative.
_MIN_INT = {"warmup": 0, "batch_size": 1, "gpus": 1, "accum_freq": 1, "workers": 0,
            "epochs": 1, "seed": 0, "image_size": 1, "context_length": 1}  # fmt: skip
_BOOL = {"torchcompile", "grad_checkpointing", "local_loss", "gather_with_grad"}
_FLOAT_RANGE = {"dist_timeout_min": (0.0, math.inf, False), "lr": (0.0, math.inf, False),
                "wd": (0.0, math.inf, True),
                "beta1": (0.0, 1.0, True), "beta2": (0.0, 1.0, True),
                "eps": (0.0, math.inf, False), "patch_dropout": (0.0, 1.0, True),
                "coca_caption_loss_weight": (0.0, math.inf, True),
                "coca_contrastive_loss_weight": (0.0, math.inf, True)}  # fmt: skip
_OPTIONAL = {"epochs", "train_num_samples", "epoch_samples", "image_size", "context_length",
             "patch_dropout"}  # fmt: skip


def coerce_train_value(name: str, value: Any, where: str) -> Any:
    """Check one training setting and return it in its proper type."""
    if value is None:
        if name in _OPTIONAL:
            return None
        raise ClipscaleError(f"{where}: {name} must be set")
    if name in ("train_num_samples", "epoch_samples"):
        return parse_count(value, f"{where}: {name}")
    if name in _MIN_INT:
        return _int(name, value, where, _MIN_INT[name])
    if name in _BOOL:
        if not isinstance(value, bool):
            raise ClipscaleError(f"{where}: {name} must be true or false, got {value!r}")
        return value
    if name in _FLOAT_RANGE:
        return _float(name, value, where, *_FLOAT_RANGE[name])
    if name == "precision":
        return _choice(name, value, where, PRECISIONS)
    if name == "lr_scheduler":
        return _choice(name, value, where, LR_SCHEDULERS)
    if name == "model_type":
        return _choice(name, value, where, MODEL_TYPES)
    if name == "extra_args":
        if not all(isinstance(a, str) for a in _as_tuple(value)):
            raise ClipscaleError(f"{where}: extra_args must be a list of strings")
        return _as_tuple(value)
    raise ClipscaleError(f"{where}: unknown training setting {name!r} (valid: {', '.join(TRAIN_FIELDS)})")


def _train_values(raw: Any, where: str) -> dict[str, Any]:
    """A mapping of training settings, each checked and typed."""
    if not isinstance(raw, dict):
        raise ClipscaleError(f"{where}: must be a mapping of training settings")
    _check_keys(raw, TRAIN_FIELDS, where)
    return {k: coerce_train_value(k, v, where) for k, v in raw.items()}


def coerce_axis_value(key: str, value: Any, where: str) -> Any:
    if key in ("model", "data"):
        if not isinstance(value, str) or not value:
            raise ClipscaleError(f"{where}: {key} must be a name, got {value!r}")
        return value
    if key == "samples_seen":
        return parse_count(value, f"{where}: samples_seen")
    return coerce_train_value(key, value, where)


def _coords(raw: Any, where: str) -> dict[str, tuple[Any, ...]]:
    """A mapping of axis keys to one value or a list of values, typed."""
    if not isinstance(raw, dict) or not raw:
        raise ClipscaleError(f"{where}: must be a mapping of axis names to values")
    _check_keys(raw, AXIS_KEYS, where)
    return {k: tuple(coerce_axis_value(k, v, where) for v in _as_tuple(raw[k])) for k in raw}


def _default_train(raw: Any, where: str) -> TrainSettings:
    typed = _train_values(raw, where)
    for required in ("lr", "warmup", "batch_size", "gpus"):
        if typed.get(required) is None:
            raise ClipscaleError(f"{where}: train.{required} must be set")
    return TrainSettings(**typed)


def _gpu(raw: Any, where: str) -> GpuSpec:
    if not isinstance(raw, dict):
        raise ClipscaleError(f"{where}: selects no gpu (add '- gpu: a100' to its defaults)")
    _check_keys(raw, {"name", "peak_tflops", "mfu", "kind"}, f"{where}: gpu")
    peak = _float("gpu.peak_tflops", raw.get("peak_tflops"), where, 0.0, math.inf, False)
    mfu = _float("gpu.mfu", raw.get("mfu"), where, 0.0, 1.0 + 1e-12, False)
    kind = _choice("gpu.kind", raw.get("kind", "gpu"), where, ("gpu", "cpu"))
    return GpuSpec(str(raw.get("name", "")), peak, mfu, kind)


def _cluster(raw: Any, overrides: Any, where: str) -> ClusterSpec:
    """The chosen cluster group, with the sweep's own settings for that kind of cluster
    (``clusters: {slurm: {...}}``) on top: e.g. the toy sweep's CPU-only Slurm jobs."""
    if not isinstance(raw, dict):
        raise ClipscaleError(f"{where}: selects no cluster (add '- cluster: local' to its defaults)")
    kind = _choice("cluster kind", raw.get("kind"), where, CLUSTER_KINDS)
    if overrides is not None and not isinstance(overrides, dict):
        raise ClipscaleError(f"{where}: clusters must map cluster kinds to settings")
    for name, extra in (overrides or {}).items():
        _choice("clusters key", name, where, CLUSTER_KINDS)
        if not isinstance(extra, dict):
            raise ClipscaleError(f"{where}: clusters.{name} must map settings to values")
    options = {k: v for k, v in raw.items() if k != "kind"}
    options.update((overrides or {}).get(kind) or {})
    return ClusterSpec(kind, options)


def parse_sweep(raw: Mapping[str, Any], path: Path, catalog: Catalog) -> SweepSpec:
    """Validate a composed sweep whole: every key, value and catalogue name."""
    where = f"sweep {path.stem}"
    _check_keys(raw, _TOP_KEYS, where)
    for axis in ("model", "data", "samples_seen"):
        if raw.get(axis) in (None, [], ()):
            raise ClipscaleError(f"{where}: axis {axis} needs at least one value")
    axes = tuple(
        (k, tuple(coerce_axis_value(k, v, where) for v in _as_tuple(raw[k])))
        for k in AXIS_KEYS
        if raw.get(k) is not None
    )
    include = tuple(_coords(e, f"{where}: include") for e in raw.get("include") or ())
    exclude = tuple(_coords(e, f"{where}: exclude") for e in raw.get("exclude") or ())
    train = _default_train(raw.get("train") or {}, f"{where}: train")
    rules = tuple(_rule(r, f"{where}: points") for r in raw.get("points") or ())
    finetune = _finetune(raw.get("finetune"), f"{where}: finetune")
    samples_mode = _choice("samples_mode", raw.get("samples_mode") or "separate", where, SAMPLES_MODES)
    if samples_mode != "separate" and finetune is not None:
        raise ClipscaleError(f"{where}: samples_mode={samples_mode} does not combine with finetune (a second "
                             "stage); use samples_mode=separate")  # fmt: skip
    # A cooldown of the whole run, or of none of it, leaves no trunk to branch from.
    cooldown = _float("cooldown", raw.get("cooldown", 0.2), where, 0.0, 1.0, False)

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
        name=str(raw.get("name") or path.stem),
        description=str(raw.get("description") or ""),
        path=str(path),
        data_root=str(raw.get("data_root") or "."),
        axes=axes,
        include=include,
        exclude=exclude,
        train=train,
        rules=rules,
        finetune=finetune,
        gpu=_gpu(raw.get("gpu"), where),
        cluster=_cluster(raw.get("cluster"), raw.get("clusters"), where),
        models=models,
        datasets=datasets,
        runs_root=str(raw.get("runs_root") or "runs"),
        eval=_eval(raw.get("eval"), f"{where}: eval"),
        checkpoints=_checkpoints(raw.get("checkpoints"), f"{where}: checkpoints"),
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
    if not isinstance(raw, dict):
        raise ClipscaleError(f"{where}: must be a mapping with keep_every")
    _check_keys(raw, {"keep_every"}, where)
    return CheckpointPolicy(keep_every=_int("keep_every", raw.get("keep_every", 0), where, 0))


def _eval(raw: Any, where: str) -> EvalSpec:
    if raw is None:
        return EvalSpec()
    if not isinstance(raw, dict):
        raise ClipscaleError(f"{where}: must be a mapping with root, sets and robustness")
    _check_keys(raw, {"root", "batch_size", "sets", "robustness"}, where)
    root = str(raw.get("root") or ".")
    sets = []
    for entry in raw.get("sets") or ():
        if not isinstance(entry, dict) or "name" not in entry:
            raise ClipscaleError(f"{where}: each set needs a name and a task")
        _check_keys(entry, {"name", "task", "path", "shots", "seeds", "epochs", "lr", "shifted"}, where)
        task = _choice("task", entry.get("task"), where, EVAL_TASKS)
        path = str(entry.get("path") or os.path.join(root, str(entry["name"])))
        named = f"{where}: {entry['name']}"
        shots, seeds = _shots(entry, task, named)
        epochs, lr, shifted = _tuning(entry, task, root, named)
        sets.append(EvalSet(str(entry["name"]), task, path, shots, seeds, epochs, lr, shifted))
    robust = raw.get("robustness") or {}
    if not isinstance(robust, dict):
        raise ClipscaleError(f"{where}: robustness must be a mapping with name and sets")
    _check_keys(robust, {"name", "sets"}, f"{where}: robustness")
    members = tuple(str(s) for s in _as_tuple(robust.get("sets") or ()))
    classified = {s.name for s in sets if s.task == "zeroshot_classification"}
    for member in members:
        if member not in classified:
            raise ClipscaleError(f"{where}: robustness set {member!r} has no zeroshot_classification entry")
    return EvalSpec(
        sets=tuple(sets),
        batch_size=_int("batch_size", raw.get("batch_size", 256), where, 1),
        robustness_name=str(robust["name"]) if robust.get("name") else None,
        robustness_sets=members,
    )


def _shots(entry: dict[str, Any], task: str, where: str) -> tuple[tuple[int, ...], int]:
    """A linear probe's k-shot sizes (each k ≥ 1, no repeats) and its draws of each."""
    if task != "linear_probe" and ("shots" in entry or "seeds" in entry):
        raise ClipscaleError(f"{where}: shots and seeds are for task linear_probe, not {task}")
    shots = tuple(_int("shots", k, where, 1) for k in _as_tuple(entry.get("shots") or ()))
    if len(set(shots)) != len(shots):
        raise ClipscaleError(f"{where}: shots {list(shots)} repeat a k")
    return tuple(sorted(shots)), _int("seeds", entry.get("seeds", EvalSet.seeds), where, 1)


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
    lr = _float("lr", entry.get("lr", EvalSet.lr), where, 0.0, 1.0, False)
    shifted = tuple(
        EvalSet(str(n), "zeroshot_classification", os.path.join(root, str(n)))
        for n in _as_tuple(entry.get("shifted") or ())
    )
    return _int("epochs", entry.get("epochs", EvalSet.epochs), where, 1), lr, shifted


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise ClipscaleError(f"{where}: each entry needs 'match' and 'train'")
    _check_keys(raw, {"match", "train"}, where)
    match = _coords(raw.get("match"), f"{where}: match")
    return Rule(match, _train_values(raw.get("train") or {}, f"{where}: train"))


def _finetune(raw: Any, where: str) -> Mapping[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ClipscaleError(f"{where}: must be a mapping of settings")
    _check_keys(raw, {"samples_seen", "data", *TRAIN_FIELDS}, where)
    if raw.get("samples_seen") is None:
        raise ClipscaleError(f"{where}: samples_seen must be set")
    if "model_type" in raw:  # the second stage loads the first one's weights: the same model
        raise ClipscaleError(f"{where}: model_type is the first stage's; set it on the sweep's points")
    return {
        k: coerce_axis_value(k, v, where) if k in AXIS_KEYS else coerce_train_value(k, v, where)
        for k, v in raw.items()
    }


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
