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
    CONFIG,
    ENSEMBLE,
    PREPROCESSOR,
    WEIGHTS,
    LoadedModel,
    ModelCard,
    ModelFolderError,
    _blame,
    _brief,
    _read_json,
    load_model_folder,
)
from callmood.signal.features import Normalization

MAX_MEMBERS = 8
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
    """An ensemble's version: 12 hex digits of its members' weights versions, in order."""
    return hashlib.sha256("+".join(versions).encode()).hexdigest()[:12]


def ensemble_training(members: dict[str, LoadedModel]) -> dict:
    """The card's training entry of an ensemble of loaded members (subfolder -> model):
    which members, the corpora any of them heard and, as held-out test speakers, those
    that every member held out, so that no figure on them was heard by one of them."""
    cards = [model.card for model in members.values()]
    corpora: dict[str, int] = {}
    for card in cards:
        for corpus, count in card.training.get("corpora", {}).items():
            corpora[corpus] = max(corpora.get(corpus, 0), count)
    held_out = [set(card.training.get("split", {}).get("test_speakers", [])) for card in cards]
    first = cards[0].training.get("split", {}).get("test_speakers", [])
    return {"ensemble": [{"folder": folder, "name": model.name, "version": model.version,
                          "temperature": model.card.temperature}
                         for folder, model in members.items()],
            "corpora": corpora,
            "split": {"description": "speakers every member held out",
                      "test_speakers": [s for s in first if all(s in h for h in held_out)]}}


def write_ensemble_folder(out: str | Path, member_dirs: list[str | Path], name: str) -> Path:
    """Copy the model folders `member_dirs` into `out` as member-1, member-2, ... and
    write its ensemble.json; the result is loaded once, so a mismatch is an error now,
    not at scoring time (the half-written folder is then removed)."""
    out = Path(out)
    if not 2 <= len(member_dirs) <= MAX_MEMBERS:
        raise ModelFolderError(f"an ensemble needs 2 to {MAX_MEMBERS} members, "
                               f"got {len(member_dirs)}")
    if out.exists():
        raise ModelFolderError(f"{out}: already exists (an ensemble is written to a new "
                               "folder)")
    for member in member_dirs:
        if (Path(member) / ENSEMBLE).exists():
            raise ModelFolderError(f"{member}: an ensemble cannot be a member")
        load_model_folder(member)  # a member that does not load fails here, by its name
    names = [f"member-{i}" for i in range(1, len(member_dirs) + 1)]
    try:
        for member, folder in zip(member_dirs, names, strict=True):
            (out / folder).mkdir(parents=True)
            for file in (CONFIG, WEIGHTS, PREPROCESSOR, CARD):
                shutil.copyfile(Path(member) / file, out / folder / file)
        (out / ENSEMBLE).write_text(json.dumps({"name": name, "members": names}, indent=2)
                                    + "\n")
        load_model_folder(out)
    except (ModelFolderError, OSError):
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def load_ensemble_folder(path: Path) -> LoadedModel:
    """An ensemble folder (load_model_folder comes here when it holds ensemble.json), each
    member loaded and checked as any model folder, then checked against the first."""
    manifest = _read_json(path / ENSEMBLE)
    with _blame(path / ENSEMBLE):
        name, folders = manifest["name"], manifest["members"]
        if not isinstance(folders, list) or not 2 <= len(folders) <= MAX_MEMBERS \
                or not all(_is_plain_name(folder) for folder in folders) \
                or len(set(folders)) != len(folders):
            raise ValueError(f"members must list 2 to {MAX_MEMBERS} distinct subfolder "
                             f"names, got {_brief(folders)}")
    members: dict[str, LoadedModel] = {}
    for folder in folders:
        if (path / folder / ENSEMBLE).exists():
            raise ModelFolderError(f"{path / folder}: an ensemble cannot hold an ensemble")
        members[folder] = load_model_folder(path / folder)
    first_folder, first = folders[0], members[folders[0]]
    for folder, member in members.items():
        differs = [what for what, same in (
            ("labels", member.labels == first.labels),
            ("valence", member.card.valence == first.card.valence),
            ("mel settings", member.mel == first.mel),
            ("normalisation", _close(member.norm, first.norm))) if not same]
        if differs:
            raise ModelFolderError(f"{path / folder}: its {', '.join(differs)} differ from "
                                   f"{first_folder}'s: an ensemble's members must read the "
                                   "same features and give the same labels")
    with _blame(path / ENSEMBLE):
        card = ModelCard(name=name, labels=first.labels, label_map=first.card.label_map,
                         valence=first.card.valence, training=ensemble_training(members),
                         metrics=manifest.get("metrics", {}))
    network = AveragedNetwork([m.model for m in members.values()],
                              [m.card.temperature for m in members.values()])
    analytics = _read_json(path / ANALYTICS) if (path / ANALYTICS).exists() else {}
    return LoadedModel(network, first.mel, first.norm, card,
                       ensemble_version([m.version for m in members.values()]), analytics,
                       str(path / ANALYTICS))


def _is_plain_name(folder: object) -> bool:
    """A member is a subfolder named directly: no path, nothing outside the ensemble."""
    return isinstance(folder, str) and 0 < len(folder) <= 100 and "/" not in folder \
        and "\\" not in folder and folder not in (".", "..")


def _close(a: Normalization, b: Normalization) -> bool:
    """Two normalisations equal within NORMALIZATION_TOLERANCE (relative), value by value."""
    return all(x is None and y is None or x is not None and y is not None
               and np.shape(x) == np.shape(y)
               and np.allclose(x, y, rtol=NORMALIZATION_TOLERANCE, atol=0)
               for x, y in zip(astuple(a), astuple(b), strict=True))
