"""Per-epoch training checkpoints, so a stopped run continues to the same result.

OUT/checkpoint/ holds `tensors.safetensors` (the model, the best epoch's model, the
auxiliary heads if any are trained (now and at the best epoch), the weights' moving
average if one is kept, the optimiser's tensors and
the random generators' states) and `state.json` (epoch, step, history, the optimiser's
settings, the plateau scheduler, the training settings and what `callmood train --resume`
needs to rebuild the split). Like a model folder it is
safetensors and JSON only, so resuming a run never unpickles anything. The training loop
saves it after every epoch and removes it once the model folder is written.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

FOLDER = "checkpoint"
TENSORS = "tensors.safetensors"
STATE = "state.json"
# the Checkpoint's state dicts and the prefix of their tensors' names in TENSORS
_STATE_DICTS = {"model": "model", "best_model": "best", "auxiliary": "auxiliary",
                "best_auxiliary": "best_auxiliary", "averaged_model": "averaged"}


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not belong to the run being resumed."""


@dataclass
class Checkpoint:
    """Everything the loop needs to carry on after `epoch`."""

    epoch: int
    step: int
    history: list[dict]
    best_f1: float
    best_epoch: int
    model: dict[str, torch.Tensor]
    best_model: dict[str, torch.Tensor]
    optimizer: dict
    plateau: dict | None
    generator: torch.Tensor
    torch_rng: torch.Tensor
    numpy_rng: tuple
    python_rng: tuple
    # the auxiliary heads trained beside the model (training/auxiliary.py), if any, now
    # and at the best epoch
    auxiliary: dict[str, torch.Tensor] = field(default_factory=dict)
    best_auxiliary: dict[str, torch.Tensor] = field(default_factory=dict)
    # the moving average of the model's weights (ema_decay), if one is kept
    averaged_model: dict[str, torch.Tensor] = field(default_factory=dict)


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / FOLDER


def has_checkpoint(out_dir: str | Path) -> bool:
    """Whether a stopped training left a checkpoint in `out_dir` to resume from."""
    return (checkpoint_dir(out_dir) / STATE).is_file()


def _optimizer_parts(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state_dict into its tensors and a JSON-able rest."""
    tensors, plain = {}, {}
    for index, values in state["state"].items():
        plain[str(index)] = {}
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain[str(index)][name] = value
    return tensors, {"state": plain, "param_groups": state["param_groups"]}


def _optimizer_state(tensors: dict[str, torch.Tensor], saved: dict) -> dict:
    state = {int(i): dict(values) for i, values in saved["state"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state[int(index)][name] = value
    return {"state": state, "param_groups": saved["param_groups"]}


def save_checkpoint(out_dir: str | Path, point: Checkpoint, run: dict) -> Path:
    """Write the checkpoint atomically (a crash while writing leaves the previous one)."""
    folder = checkpoint_dir(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    optimizer_tensors, optimizer_rest = _optimizer_parts(point.optimizer)
    numpy_kind, numpy_keys, numpy_pos, numpy_gauss, numpy_cached = point.numpy_rng
    tensors = {**{f"{prefix}.{k}": v.detach().cpu().contiguous()
                  for name, prefix in _STATE_DICTS.items()
                  for k, v in getattr(point, name).items()},
               **optimizer_tensors,
               "rng.generator": point.generator, "rng.torch": point.torch_rng,
               "rng.numpy": torch.from_numpy(np.asarray(numpy_keys, dtype=np.int64))}
    state = {"epoch": point.epoch, "step": point.step, "history": point.history,
             "best_f1": point.best_f1, "best_epoch": point.best_epoch,
             "optimizer": optimizer_rest, "plateau": point.plateau,
             "numpy_rng": [numpy_kind, int(numpy_pos), int(numpy_gauss), float(numpy_cached)],
             "python_rng": [point.python_rng[0], list(point.python_rng[1]),
                            point.python_rng[2]],
             "run": run}
    for name, write in ((TENSORS, lambda p: save_file(tensors, str(p))),
                        (STATE, lambda p: p.write_text(json.dumps(state, indent=1)))):
        partial = folder / f".{name}.{os.getpid()}.tmp"
        write(partial)
        os.replace(partial, folder / name)
    return folder


def read_run(out_dir: str | Path) -> dict:
    """What the checkpointed run was started with (settings, split arguments)."""
    path = checkpoint_dir(out_dir) / STATE
    if not path.is_file():
        hint = " (the run finished: the model folder is written)" if \
            (Path(out_dir) / "model.safetensors").is_file() else ""
        raise CheckpointError(f"{out_dir}: no checkpoint to resume{hint}")
    try:
        return json.loads(path.read_text())["run"]
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({err})") from None


def load_checkpoint(out_dir: str | Path, run: dict,
                    current: Callable[[dict], dict] = lambda config: config) -> Checkpoint:
    """The checkpoint in out_dir; refused if it was made with other settings than `run`.
    `current` turns the saved settings into the present format (a setting added since a
    checkpoint was made is at its default there), or raises ValueError."""
    folder = checkpoint_dir(out_dir)
    saved_run = read_run(out_dir)
    try:
        saved = current(saved_run.get("config") or {})
    except ValueError as err:
        raise CheckpointError(f"{folder}: unusable training settings ({err})") from None
    if saved != run.get("config"):
        raise CheckpointError(f"{folder}: the checkpoint was made with other training "
                              "settings; resume with the same ones or start a new --out")
    state = json.loads((folder / STATE).read_text())
    tensors = load_file(str(folder / TENSORS))
    kind, pos, gauss, cached = state["numpy_rng"]
    python_version, python_state, python_gauss = state["python_rng"]
    return Checkpoint(
        epoch=state["epoch"], step=state["step"], history=state["history"],
        best_f1=state["best_f1"], best_epoch=state["best_epoch"],
        **{name: {k.removeprefix(f"{prefix}."): v for k, v in tensors.items()
                  if k.startswith(f"{prefix}.")} for name, prefix in _STATE_DICTS.items()},
        optimizer=_optimizer_state(tensors, state["optimizer"]), plateau=state["plateau"],
        generator=tensors["rng.generator"], torch_rng=tensors["rng.torch"],
        numpy_rng=(kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, gauss, cached),
        python_rng=(python_version, tuple(python_state), python_gauss))


def restore_random_state(point: Checkpoint, generator: torch.Generator) -> None:
    generator.set_state(point.generator)
    torch.set_rng_state(point.torch_rng)
    np.random.set_state(point.numpy_rng)
    random.setstate(point.python_rng)


def capture_random_state(generator: torch.Generator) -> dict:
    return {"generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}
