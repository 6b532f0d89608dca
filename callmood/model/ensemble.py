"""Several trained models scored as one: their calibrated probabilities averaged.

An ensemble folder holds `ensemble.json` ({"name": ..., "members": ["member-1", ...]}) and
one ordinary model folder per member beside it (safetensors and JSON; no member may be an
ensemble itself). `load_model_folder` reads it like any model folder: the members must
read the same features (mel settings and normalisation) and give the same labels, so the
nightly job, live scoring, evaluation and predict compute each clip's features once and
hand them to `AveragedNetwork`, whose "logits" are the log of the members' averaged
probabilities (the ensemble's own temperature is 1, each member keeps its own).

Ensembles of models of one recipe gained on unseen corpora in the ablation protocol
(`benchmarks/ablate.py --ensemble`); they cost a forward pass per member.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from dataclasses import astuple
from pathlib import Path

import numpy as np
import torch
from transformers.modeling_outputs import ImageClassifierOutput

from callmood.model.folder import (
    ANALYTICS,
    CARD,
    ENSEMBLE,
    MAX_MEMBERS,
    MODEL_FILES,
    LoadedModel,
    ModelCard,
    ModelFolderError,
    _blame,
    _brief,
    _read_json,
    ensemble_manifest,
    load_model_folder,
    save_model_folder,
)
from callmood.signal.features import Normalization

NORMALIZATION_TOLERANCE = 1e-6  # relative: members trained on the same data agree to ~1e-10


class AveragedNetwork(torch.nn.Module):
    """Member networks that read the same input; returns log(mean_i softmax(z_i / T_i))
    as logits, so softmax of them is the members' average calibrated probability."""

    def __init__(self, members: list[torch.nn.Module], temperatures: list[float]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.temperatures = [float(t) for t in temperatures]
        self.config = members[0].config  # num_labels, id2label: the members' own
        self.main_input_name = members[0].main_input_name

    def forward(self, **inputs) -> ImageClassifierOutput:
        probs = torch.stack([torch.softmax(member(**inputs).logits.float() / temperature, -1)
                             for member, temperature in
                             zip(self.members, self.temperatures, strict=True)])
        return ImageClassifierOutput(logits=torch.log(probs.mean(0).clamp_min(1e-30)))


def ensemble_version(versions: list[str]) -> str:
    """An ensemble's version: 12 hex digits of its members' weights versions, in order (the
    same members in another order score alike but are another folder)."""
    return hashlib.sha256("+".join(versions).encode()).hexdigest()[:12]


def _training_entry(card: ModelCard, key: str) -> dict:
    """card.training[key] (and training.split's test speakers) as a dict, {} where a
    member's card has none or another type: a single model loads with any."""
    training = card.training if isinstance(card.training, dict) else {}
    entry = training.get(key, {})
    return entry if isinstance(entry, dict) else {}


def ensemble_training(path: Path, members: dict[str, LoadedModel]) -> dict:
    """The card's training entry of the ensemble at `path` (member subfolder -> loaded
    model): which members, the corpora any of them heard and, as held-out test speakers,
    those no member heard: each member held them out or never trained on their corpus."""
    corpora: dict[str, int] = {}
    # per member: its corpora (None where its card does not say: it may have heard any)
    # and the speakers it held out
    heard: list[tuple[set | None, set]] = []
    for folder, model in members.items():
        with _blame(path / folder / CARD):
            mine = _training_entry(model.card, "corpora")
            for corpus, count in mine.items():
                corpora[corpus] = max(corpora.get(corpus, 0), int(count))
            held = _training_entry(model.card, "split").get("test_speakers", [])
            heard.append((set(mine) or None, {s for s in held if isinstance(s, str)}
                          if isinstance(held, list) else set()))
    candidates = sorted(set().union(*(held for _, held in heard)))
    return {"ensemble": [{"folder": folder, "name": model.name, "version": model.version,
                          "temperature": model.card.temperature}
                         for folder, model in members.items()],
            "corpora": corpora,
            "split": {"description": "speakers no member trained on",
                      "test_speakers": [
                          s for s in candidates
                          if all(s in held or trained is not None
                                 and s.split(":", 1)[0] not in trained
                                 for trained, held in heard)]}}


def _loaded_members(out: Path, member_dirs: list[str | Path],
                    name: str) -> dict[str, LoadedModel]:
    """The members of a new combined model folder `out` (path -> loaded, an error naming
    the member's own path), checked before anything is written: 2 to MAX_MEMBERS of them,
    none an ensemble, `name` a model name and `out` not there yet."""
    if not 2 <= len(member_dirs) <= MAX_MEMBERS:
        raise ModelFolderError(f"combining models needs 2 to {MAX_MEMBERS} members, "
                               f"got {len(member_dirs)}")
    ModelCard(name=name, labels=[])  # the name's checks
    if out.exists():
        raise ModelFolderError(f"{out}: already exists (a combined model is written to a new "
                               "folder)")
    for member in member_dirs:
        if (Path(member) / ENSEMBLE).exists():
            raise ModelFolderError(f"{member}: an ensemble cannot be a member")
    return {str(member): load_model_folder(member) for member in member_dirs}


def write_ensemble_folder(out: str | Path, member_dirs: list[str | Path],
                          name: str) -> LoadedModel:
    """Copy the model folders `member_dirs` into `out` as member-1, member-2, ... and
    write its ensemble.json; returns it loaded, so a mismatch is an error now, not at
    scoring time (whatever fails, the half-written folder is removed)."""
    out = Path(out)
    _loaded_members(out, member_dirs, name)  # a member that does not load fails by its path
    names = [f"member-{i}" for i in range(1, len(member_dirs) + 1)]
    try:
        for member, folder in zip(member_dirs, names, strict=True):
            (out / folder).mkdir(parents=True)
            for file in MODEL_FILES:
                shutil.copyfile(Path(member) / file, out / folder / file)
        (out / ENSEMBLE).write_text(json.dumps({"name": name, "members": names}, indent=2)
                                    + "\n")
        return load_model_folder(out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def write_weight_average(out: str | Path, member_dirs: list[str | Path],
                         name: str) -> LoadedModel:
    """One ordinary model folder whose weights are the members' averaged (a "model soup",
    Wortsman et al. 2022): one network's cost. Members must be the same network reading
    the same features; it only works for models fine-tuned from one initialisation. Its
    temperature is 1, not fitted: calibrate it before its probabilities are read as
    shares."""
    out = Path(out)
    members = _loaded_members(out, member_dirs, name)
    check_alike(Path(), members, architecture=True)
    first = next(iter(members.values()))
    states = [m.model.state_dict() for m in members.values()]
    network = copy.deepcopy(first.model)
    network.load_state_dict({key: sum(state[key].double() for state in states) / len(states)
                             if tensor.is_floating_point() else tensor
                             for key, tensor in states[0].items()})
    training = ensemble_training(Path(), members) | {"averaged": "weights"}
    card = ModelCard(name=name, labels=first.labels, label_map=first.card.label_map,
                     valence=first.card.valence, training=training)
    try:
        save_model_folder(out, network, first.mel, first.norm, card)
        return load_model_folder(out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise


def load_ensemble_folder(path: Path) -> LoadedModel:
    """An ensemble folder (load_model_folder comes here when it holds ensemble.json), each
    member loaded and checked as any model folder, then checked against the first."""
    manifest, folders = ensemble_manifest(path)
    members = {folder: load_model_folder(path / folder) for folder in folders}
    check_alike(path, members)
    first = members[folders[0]]
    training = ensemble_training(path, members)
    with _blame(path / ENSEMBLE):
        metrics = manifest.get("metrics", {})
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics must be an object, got {_brief(metrics)}")
        card = ModelCard(name=manifest["name"], labels=first.labels,
                         label_map=first.card.label_map, valence=first.card.valence,
                         training=training, metrics=metrics)
    network = AveragedNetwork([m.model for m in members.values()],
                              [m.card.temperature for m in members.values()])
    analytics = _read_json(path / ANALYTICS) if (path / ANALYTICS).exists() else {}
    return LoadedModel(network, first.mel, first.norm, card,
                       ensemble_version([m.version for m in members.values()]), analytics,
                       str(path / ANALYTICS))


def check_alike(path: Path, members: dict[str, LoadedModel],
                architecture: bool = False) -> None:
    """Members (folder under `path` -> model) that read the same features and give the same
    labels (and, with `architecture`, are the same network), else a ModelFolderError
    naming the first that differs from the first member."""
    (first_folder, first), *_ = members.items()
    for folder, member in members.items():
        differs = [what for what, same in (
            ("labels", member.labels == first.labels),
            ("valence", member.card.valence == first.card.valence),
            ("mel settings", member.mel == first.mel),
            ("normalisation", _close(member.norm, first.norm)),
            ("architecture", not architecture or _shapes(member) == _shapes(first)))
            if not same]
        if differs:
            raise ModelFolderError(f"{path / folder}: its {', '.join(differs)} differ from "
                                   f"{first_folder}'s: members must read the same features "
                                   "and give the same labels")


def _shapes(model: LoadedModel) -> dict:
    return {key: (tuple(t.shape), t.dtype) for key, t in model.model.state_dict().items()}


def _close(a: Normalization, b: Normalization) -> bool:
    """Two normalisations equal within NORMALIZATION_TOLERANCE (relative), value by value."""
    return all(x is None and y is None or x is not None and y is not None
               and np.shape(x) == np.shape(y)
               and np.allclose(x, y, rtol=NORMALIZATION_TOLERANCE, atol=0)
               for x, y in zip(astuple(a), astuple(b), strict=True))
