"""Optuna search over training settings, scored on validation macro-F1 only.

The study lives in an RDB (an SQLite file in the study folder by default), so it resumes
after an interruption, and several `callmood tune` processes (or machines, with a
PostgreSQL URL) pointed at one study share its trials. Each trial is a `train()` run
with a changed copy of the base TrainConfig; per-epoch validation macro-F1 feeds the
pruner.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import optuna

from callmood.training.splits import Split, load_split
from callmood.training.train import TrainConfig, train

# augmentation strength s in [0, 1] scales these maximal settings
_FULL_AUGMENT = {"augment.specaug_freq": 32, "augment.specaug_time": 64,
                 "augment.mixup_alpha": 0.4}
# the training settings every trial draws (and `init` when the space lists inits)
_ALWAYS_DRAWN = ("lr", "weight_decay", "optimizer", "batch_size", *_FULL_AUGMENT)
HEARTBEAT_S = 60
COUNTED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                  optuna.trial.TrialState.RUNNING)


@dataclass
class SearchSpace:
    lr: tuple[float, float] = (3e-5, 1e-3)
    weight_decay: tuple[float, float] = (1e-3, 0.1)
    optimizer: list[str] = field(default_factory=lambda: ["adamw", "sgd"])
    batch_size: list[int] = field(default_factory=lambda: [16, 32, 64])
    augment_strength: tuple[float, float] = (0.0, 1.0)
    init: list[str] = field(default_factory=list)  # empty: keep the base config's init
    # any other training setting (`augment.channel_p`, `mel.speaker_mean`, ...) and the
    # values a trial picks from
    settings: dict[str, list] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.settings, dict):
            raise ValueError(f"search-space settings: expected an object of setting: [values],"
                             f" got {self.settings!r}")
        for key, choices in self.settings.items():
            if key in (*_ALWAYS_DRAWN, "init"):
                raise ValueError(f"search-space setting {key}: already drawn by the space's "
                                 "own keys (lr, weight_decay, optimizer, batch_size, "
                                 "augment_strength, init)")
            if not isinstance(choices, list) or not choices or not all(
                    value is None or isinstance(value, bool | int | float | str)
                    for value in choices):
                raise ValueError(f"search-space setting {key}: expected a list of numbers, "
                                 f"strings, booleans or null, got {choices!r}")
            for value in choices:  # a typo'd key or a bad value fails before any trial
                try:
                    TrainConfig().with_overrides({key: value})
                except (ValueError, TypeError) as error:
                    raise ValueError(f"search-space setting {key}: {error}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> SearchSpace:
        values = json.loads(Path(path).read_text())
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown search-space keys {sorted(unknown)}")
        try:
            return cls(**{k: tuple(v) if isinstance(getattr(cls(), k), tuple) else v
                          for k, v in values.items()})
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: {error}") from None

    def to_dict(self) -> dict:
        """As a --space file holds it; `settings` only when there are some, as spaces were
        recorded before it existed."""
        out = asdict(self)
        if not out["settings"]:
            del out["settings"]
        return out

    def keys(self) -> set[str]:
        """The training settings a trial sets (suggest's keys)."""
        return {*_ALWAYS_DRAWN, *(["init"] if self.init else []), *self.settings}

    def suggest(self, trial: optuna.Trial) -> dict:
        """Trial parameters as TrainConfig overrides."""
        strength = trial.suggest_float("augment_strength", *self.augment_strength)
        overrides = {
            "lr": trial.suggest_float("lr", *self.lr, log=True),
            "weight_decay": trial.suggest_float("weight_decay", *self.weight_decay, log=True),
            "optimizer": trial.suggest_categorical("optimizer", self.optimizer),
            "batch_size": trial.suggest_categorical("batch_size", self.batch_size),
        }
        for key, full in _FULL_AUGMENT.items():
            overrides[key] = round(full * strength) if isinstance(full, int) else full * strength
        if self.init:
            overrides["init"] = trial.suggest_categorical("init", self.init)
        for key, choices in self.settings.items():
            overrides[key] = trial.suggest_categorical(key, choices)
        return overrides


def _pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()


def _rdb_storage(url: str, engine: dict) -> optuna.storages.RDBStorage:
    """RDBStorage, retried: workers starting together on a new database race to create its
    tables ("table studies already exists", UNIQUE alembic_version); the loser retries."""
    import sqlalchemy.exc

    def connect() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
            grace_period=3 * HEARTBEAT_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=2))

    for attempt in range(4):
        try:
            return connect()
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
            time.sleep(0.2 * (attempt + 1))
    return connect()


def open_study(out: Path, study_name: str, storage: str | None, pruner: str, epochs: int,
               seed: int) -> optuna.Study:
    """The study in `storage` (default: out/study.db), created if new. A trial whose worker
    was killed (no heartbeat for 3 minutes) is failed now and its settings queued to be
    tried again, so a study stopped mid-trial resumes that trial in its next sitting."""
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    # SQLite serialises writers; wait for the lock instead of failing when workers collide
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    rdb = _rdb_storage(url, engine)
    # workers on one study must not draw the same random start points, nor may two studies
    # run by one process (e.g. one per benchmark fold)
    sampler_seed = seed * 100003 + os.getpid() + zlib.crc32(study_name.encode())
    sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=4)
    study = optuna.create_study(study_name=study_name, storage=rdb, direction="maximize",
                                load_if_exists=True, sampler=sampler,
                                pruner=_pruner(pruner, epochs))
    # now, not only when the next trial starts: a stale trial still counts as running, and
    # a study whose last trial died would otherwise never start another
    optuna.storages.fail_stale_trials(study)
    return study


def run_study(split: Split, base: TrainConfig, space: SearchSpace, out: str | Path, *,
              label_map: dict, n_trials: int, timeout: float | None = None,
              study_name: str = "callmood", storage: str | None = None,
              pruner: str = "median", cache_dir=None,
              first_params: dict | None = None) -> optuna.trial.FrozenTrial | None:
    """Run trials until the study holds n_trials (counting other workers'); returns the best.

    `first_params` (search-space values, e.g. the settings in use today) is the new study's
    first trial, so a short study can only confirm or improve on them.
    """
    out = Path(out)
    study = open_study(out, study_name, storage, pruner, base.epochs, base.seed)
    if first_params and not study.get_trials(deepcopy=False):
        study.enqueue_trial(first_params)
    study.set_user_attr("split", split.description)
    study.set_user_attr("base_config", base.to_dict())

    def objective(trial: optuna.Trial) -> float:
        overrides = space.suggest(trial)
        trial.set_user_attr("overrides", overrides)
        config = base.with_overrides(overrides)

        def report(epoch: int, val_macro_f1: float) -> None:
            trial.report(val_macro_f1, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: validation macro-F1 {val_macro_f1:.3f}")

        result = train(split, config, out / "trials" / f"{trial.number:04d}",
                       label_map=label_map, cache_dir=cache_dir, on_epoch=report,
                       model_name=f"{study_name}-trial{trial.number}",
                       checkpoint=False)  # a pruned trial is not resumed
        trial.set_user_attr("model_dir", str(result.model_dir))
        return result.best_val_macro_f1

    if len(study.get_trials(deepcopy=False, states=COUNTED_STATES)) < n_trials:
        study.optimize(objective, timeout=timeout, callbacks=[
            optuna.study.MaxTrialsCallback(n_trials, states=COUNTED_STATES)])
    return write_study_summary(study, base, out)


def tune_run(split_args: dict, base: TrainConfig, space: SearchSpace, out: str | Path, *,
             n_trials: int, timeout: float | None = None, study_name: str = "callmood",
             storage: str | None = None, pruner: str = "median", cache_dir=None,
             on_split: Callable[[Split], None] | None = None
             ) -> optuna.trial.FrozenTrial | None:
    """`callmood tune`: load the split of `split_args` (load_split's keyword arguments) and
    run the study on its training and validation speakers; the test speakers are dropped
    before any trial, so tuning never looks at them. `on_split(split)` sees the split as
    loaded. Returns the best trial, None while none has completed."""
    split, mapping = load_split(**split_args)
    if on_split is not None:
        on_split(split)
    split.test = []
    return run_study(split, base, space, out, label_map=mapping, n_trials=n_trials,
                     timeout=timeout, study_name=study_name, storage=storage, pruner=pruner,
                     cache_dir=cache_dir)


def write_study_summary(study: optuna.Study, base: TrainConfig, out: Path,
                        objective: str = "validation macro-F1", whole: bool = False
                        ) -> optuna.trial.FrozenTrial | None:
    """best_params.json (ready for `train --params`): the base config's init and epochs
    and the best trial's settings, or with `whole` every setting of the base config with
    the best trial's applied (not the machine's: device, workers); trials.csv and
    history.png, in `out` (made if missing); nothing while no trial has completed."""
    completed = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        return None
    out.mkdir(parents=True, exist_ok=True)
    best = study.best_trial
    if whole:
        params = json.loads(json.dumps(base.with_overrides(best.user_attrs["overrides"])
                                       .to_dict(), default=str))
        for machine in ("device", "workers"):
            params.pop(machine)
    else:
        params = {"init": base.init, "epochs": base.epochs, **best.user_attrs["overrides"]}
    (out / "best_params.json").write_text(json.dumps(params, indent=2) + "\n")
    study.trials_dataframe().to_csv(out / "trials.csv", index=False)
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization.matplotlib import plot_optimization_history

    ax = plot_optimization_history(study)
    ax.set_ylabel(objective)
    ax.figure.tight_layout()
    ax.figure.savefig(out / "history.png", dpi=110)
    return best
