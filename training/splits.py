"""Train / validation / test splits that never share a speaker (unless asked to).

* `--fold K`: the RAVDESS speaker-independent protocol of EmoBox (../shared/protocols);
  other corpora given with it are training data only.
* `--folds N --fold K`: speaker-grouped N-fold cross-validation over all corpora.
* `--test-speakers A,B`: an explicit list (`01` or corpus-qualified `ravdess:01`).
* `--random-test F`: a random, speaker-overlapping split; reports say so.

Validation (early stopping, tuning) always comes from the training speakers.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from callmood.training.corpora.base import Utterance

PROTOCOL_FILE = "protocols/ravdess_speaker_folds.json"


class SplitError(ValueError):
    pass


@dataclass
class Split:
    train: list[Utterance]
    val: list[Utterance]
    test: list[Utterance]
    description: str
    speaker_independent: bool

    def summary(self) -> dict:
        return {
            "description": self.description,
            "speaker_independent": self.speaker_independent,
            **{f"{name}_utterances": len(part) for name, part in
               (("train", self.train), ("val", self.val), ("test", self.test))},
            **{f"{name}_speakers": sorted({u.speaker for u in part}) for name, part in
               (("val", self.val), ("test", self.test))},
        }


def ravdess_protocol(shared: str | Path) -> dict:
    path = Path(shared) / PROTOCOL_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SplitError(f"{path}: RAVDESS fold protocol not found (set --shared or "
                         "CALLMOOD_SHARED to the shared data folder)") from None


def ravdess_fold_speakers(fold: int, shared: str | Path) -> list[str]:
    folds = ravdess_protocol(shared)["test_actors_by_fold"]
    if str(fold) not in folds:
        raise SplitError(f"--fold must be one of {sorted(folds, key=int)}, got {fold}")
    return [f"ravdess:{actor}" for actor in folds[str(fold)]]


def resolve_speakers(names: list[str], utterances: list[Utterance]) -> list[str]:
    """Qualify bare speaker ids (`01`) with their corpus; refuse ambiguous or unknown ones."""
    known = sorted({u.speaker for u in utterances})
    resolved = []
    for name in names:
        name = name.strip()
        matches = [s for s in known if s == name or s.split(":", 1)[1] == name]
        if not matches:
            raise SplitError(f"test speaker {name!r} is not in the corpora")
        if len(matches) > 1:
            raise SplitError(f"test speaker {name!r} is ambiguous ({', '.join(matches)}); "
                             "qualify it as CORPUS:ID")
        resolved.append(matches[0])
    return resolved


def speaker_folds(utterances: list[Utterance], n_folds: int, seed: int = 0) -> list[list[str]]:
    """Speakers shuffled with `seed` and dealt into n_folds groups."""
    speakers = sorted({u.speaker for u in utterances})
    if n_folds < 2 or n_folds > len(speakers):
        raise SplitError(f"cannot make {n_folds} speaker folds from {len(speakers)} speakers")
    random.Random(seed).shuffle(speakers)
    return [sorted(speakers[i::n_folds]) for i in range(n_folds)]


def hold_out_validation(train: list[Utterance], fraction: float = 0.1,
                        seed: int = 0) -> tuple[list[Utterance], list[Utterance]]:
    """Per corpus, move ceil(fraction * speakers) training speakers to validation."""
    val_speakers = set()
    for corpus in sorted({u.corpus for u in train}):
        speakers = sorted({u.speaker for u in train if u.corpus == corpus})
        if len(speakers) < 2:
            continue
        random.Random(f"{seed}:{corpus}").shuffle(speakers)
        val_speakers.update(speakers[:max(1, math.ceil(fraction * len(speakers)))])
    return ([u for u in train if u.speaker not in val_speakers],
            [u for u in train if u.speaker in val_speakers])


def _by_test_speakers(utterances, test_speakers, description, seed) -> Split:
    test_set = set(test_speakers)
    test = [u for u in utterances if u.speaker in test_set]
    train, val = hold_out_validation([u for u in utterances if u.speaker not in test_set],
                                     seed=seed)
    if not test:
        raise SplitError(f"no utterances for the test speakers {sorted(test_set)}")
    if not train:
        raise SplitError("no training utterances left after removing the test speakers")
    return Split(train, val, test, description, speaker_independent=True)


def make_split(utterances: list[Utterance], *, fold: int | None = None,
               n_folds: int | None = None, test_speakers: list[str] | None = None,
               random_test: float | None = None, shared: str | Path = "../shared",
               seed: int = 0) -> Split:
    chosen = sum(x is not None for x in (fold, test_speakers, random_test))
    if chosen != 1:
        raise SplitError("choose exactly one of --fold, --test-speakers, --random-test")
    if test_speakers is not None:
        speakers = resolve_speakers(test_speakers, utterances)
        return _by_test_speakers(utterances, speakers,
                                 f"speaker-independent, test speakers {','.join(speakers)}",
                                 seed)
    if fold is not None and n_folds is not None:
        groups = speaker_folds(utterances, n_folds, seed)
        if not 1 <= fold <= n_folds:
            raise SplitError(f"--fold must be in 1..{n_folds}")
        return _by_test_speakers(utterances, groups[fold - 1],
                                 f"speaker-independent {n_folds}-fold (seed {seed}), fold "
                                 f"{fold}", seed)
    if fold is not None:
        if not any(u.corpus == "ravdess" for u in utterances):
            raise SplitError("--fold K alone selects the RAVDESS protocol fold; give a "
                             "ravdess corpus, or --folds N for speaker folds of any corpus")
        speakers = ravdess_fold_speakers(fold, shared)
        actors = ",".join(s.split(":")[1] for s in speakers)
        return _by_test_speakers(utterances, speakers,
                                 f"speaker-independent, RAVDESS protocol fold {fold} "
                                 f"(test actors {actors})", seed)
    if not 0 < random_test < 1:
        raise SplitError("--random-test must be a fraction between 0 and 1")
    shuffled = sorted(utterances, key=lambda u: u.path)
    random.Random(seed).shuffle(shuffled)
    n_test = max(1, round(random_test * len(shuffled)))
    n_val = max(1, round(0.1 * len(shuffled)))
    return Split(shuffled[n_test + n_val:], shuffled[n_test:n_test + n_val], shuffled[:n_test],
                 f"RANDOM split ({random_test:.0%} test, speakers overlap: not "
                 "speaker-independent)", speaker_independent=False)


def load_split(corpora: list[str], fold: int | str | None = None, n_folds: int | None = None,
               test_speakers: str | None = None, random_test: float | None = None,
               label_preset: str = "corpus", label_overrides: list[str] = (),
               shared: str | Path = "../shared", seed: int = 0) -> tuple[Split, dict]:
    """The split and label mapping that the command line's corpus and split options name:
    `corpora` as NAME=PATH specs, `fold` a number (or its digits), `test_speakers` comma
    separated. These keyword arguments are what a training run records to resume."""
    from callmood.training.corpora.registry import load_corpora
    from callmood.training.labels import apply_mapping, parse_mapping

    if not corpora:
        raise SplitError("no corpus given")
    if fold is not None:
        if not str(fold).isdigit():
            raise SplitError(f"expected a fold number, got {fold!r}")
        fold = int(fold)
    mapping = parse_mapping(label_preset, list(label_overrides))
    utterances = apply_mapping(load_corpora(list(corpora)), mapping)
    speakers = test_speakers.split(",") if test_speakers else None
    split = make_split(utterances, fold=fold, n_folds=n_folds, test_speakers=speakers,
                       random_test=random_test, shared=shared, seed=seed)
    return split, mapping


def fold_names(shared: str | Path, n_folds: int | None = None) -> list[str]:
    """The folds `--fold all` goes through: 1..n_folds, or else every RAVDESS protocol fold."""
    count = n_folds or len(ravdess_protocol(shared)["test_actors_by_fold"])
    return [str(k) for k in range(1, count + 1)]
