"""Make the catalogue's own model configs known to open_clip (imports open_clip)."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from scaling.config import ModelSpec

_registered: dict[str, str] = {}


def register_models(models: Iterable[ModelSpec]) -> None:
    """Add project-defined configs to open_clip's registry under their catalogue names.

    open_clip rescans every registered path whenever one is added, so the JSON files must
    outlive this call: they stay in a directory removed when the process exits.
    """
    import open_clip

    for model in models:
        if model.open_clip_config is None:
            continue
        text = json.dumps(dict(model.open_clip_config), sort_keys=True)
        if _registered.get(model.name) == text:
            continue
        path = _config_dir() / f"{model.name}.json"
        path.write_text(text)
        open_clip.add_model_config(path)
        _registered[model.name] = text


_dir: Path | None = None


def _config_dir() -> Path:
    global _dir
    if _dir is None:
        _dir = Path(tempfile.mkdtemp(prefix="clipscale-models-"))
        atexit.register(shutil.rmtree, _dir, True)
    return _dir
