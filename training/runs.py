"""A training run as `callmood train` starts or resumes it.

A run is its split options, its TrainConfig and its feature cache. They are kept in the
run's checkpoints (training/checkpoint.py), so `callmood train --resume OUT` rebuilds the
same split and settings from OUT alone, from any working directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from callmood.training.checkpoint import read_run
from callmood.training.splits import Split, load_split
from callmood.training.train import TrainConfig, TrainResult, train


def _absolute_spec(spec: str) -> str:
    name, sep, path = spec.partition("=")
    return f"{name}={os.path.abspath(path)}" if sep and path else spec


@dataclass
class RunSettings:
    """What a run is started with: load_split's keyword arguments, the config, the cache."""

    split: dict
    config: TrainConfig
    cache_dir: str | None = None

    @classmethod
    def new(cls, split_args: dict, config: TrainConfig,
            cache_dir: str | Path | None = None) -> RunSettings:
        """Settings for a new run, with the corpus, shared and cache paths made absolute so
        that a resume works from any working directory."""
        split = {**split_args, "corpora": [_absolute_spec(c) for c in split_args["corpora"]],
                 "label_overrides": list(split_args.get("label_overrides", ()))}
        if split.get("shared") is not None:
            split["shared"] = os.path.abspath(split["shared"])
        return cls(split, config, os.path.abspath(cache_dir) if cache_dir else None)

    @classmethod
    def of_run(cls, out_dir: str | Path) -> RunSettings:
        """The settings the checkpointed run in out_dir was started with (CheckpointError
        when there is nothing to resume)."""
        run = read_run(out_dir)
        return cls(run["split"], TrainConfig().with_overrides(run["config"]), run["cache_dir"])

    def invocation(self) -> dict:
        """What train() keeps in the checkpoint besides the config."""
        return {"split": self.split, "cache_dir": self.cache_dir}


def train_run(settings: RunSettings, out_dir: str | Path, *, resume: bool = False,
              on_split: Callable[[Split], None] | None = None) -> tuple[Split, TrainResult]:
    """Load the split and train into out_dir (continuing its checkpoint with `resume`);
    `on_split(split)` sees the split before training starts."""
    split, mapping = load_split(**settings.split)
    if on_split is not None:
        on_split(split)
    result = train(split, settings.config, out_dir, label_map=mapping,
                   cache_dir=settings.cache_dir, resume=resume,
                   invocation=settings.invocation())
    return split, result
