"""The peer of ``bench/dispatch_bench.py``: a Hydra app whose task only writes a file, so a
``-m hydra/launcher=submitit_slurm`` sweep over it measures the launcher's own submission."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> None:
    Path(cfg.out_dir, f"{cfg.x}.done").write_text(f"{cfg.x}\n")


if __name__ == "__main__":
    main()
