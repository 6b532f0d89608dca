"""A trained model is one folder of safetensors and JSON; loading it never runs code.

    config.json               ViTConfig (architecture, id2label / label2id)
    model.safetensors         the weights
    preprocessor_config.json  MelConfig + normalisation statistics
    callmood.json             label mapping, valence, training data, metrics, seed, versions

Loading reads only these files: no pickle (`torch.load`), no remote code, no Hub access.
Batch scoring needs nothing from training but this module and features.py.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from transformers import ViTConfig, ViTForImageClassification

from callmood.training.calibration import softmax
from callmood.training.features import MelConfig, Normalization, model_input

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
PREPROCESSOR = "preprocessor_config.json"
CARD = "callmood.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")

# Sign of each emotion for "negative emotion" figures; labels not listed count as 0.
DEFAULT_VALENCE = {"angry": -1, "sad": -1, "fearful": -1, "disgust": -1, "happy": 1,
                   "surprised": 0, "neutral": 0, "calm": 0, "boredom": 0}


class ModelFolderError(ValueError):
    """A model folder that is missing files, unsafe or inconsistent."""


@dataclass
class ModelCard:
    """callmood.json: what a user of the model needs to know beyond the architecture."""

    name: str
    labels: list[str]
    label_map: dict[str, str | None] = field(default_factory=dict)
    valence: dict[str, int] = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    # {"temperature": T, ...}: logits are divided by T before the softmax (training's
    # calibration step); folders without it give the raw softmax
    calibration: dict = field(default_factory=dict)

    @property
    def temperature(self) -> float:
        return float(self.calibration.get("temperature", 1.0))


@torch.inference_mode()
def predict_logits(model: ViTForImageClassification, mels: torch.Tensor, mel: MelConfig,
                   norm: Normalization, batch_size: int = 64, device: str | torch.device = "cpu",
                   bf16: bool = False) -> np.ndarray:
    """(N, n_mels, input_frames) log-mels -> (N, labels) logits, in batches.

    The one forward pass behind training's validation, evaluation, predict and scoring.
    """
    model.eval()
    out = []
    for start in range(0, len(mels), batch_size):
        x = model_input(mels[start:start + batch_size], mel, norm).to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(pixel_values=x).logits
        out.append(logits.float().cpu())
    if not out:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    return torch.cat(out).numpy()


def predict_probabilities(model: ViTForImageClassification, mels: torch.Tensor, mel: MelConfig,
                          norm: Normalization, batch_size: int = 64,
                          device: str | torch.device = "cpu", bf16: bool = False,
                          temperature: float = 1.0) -> np.ndarray:
    """(N, n_mels, input_frames) log-mels -> (N, labels) probabilities, softmax(logits / T)."""
    logits = predict_logits(model, mels, mel, norm, batch_size, device, bf16)
    return softmax(logits, temperature).astype(np.float32)


@dataclass
class LoadedModel:
    model: ViTForImageClassification
    mel: MelConfig
    norm: Normalization
    card: ModelCard
    version: str  # sha256 prefix of the weights file

    @property
    def labels(self) -> list[str]:
        return self.card.labels

    @property
    def name(self) -> str:
        return self.card.name

    def predict_mels(self, mels: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """(N, n_mels, input_frames) log-mels -> (N, labels) calibrated probabilities."""
        return predict_probabilities(self.model, mels, self.mel, self.norm, batch_size,
                                     temperature=self.card.temperature)


def save_model_folder(path: str | Path, model: ViTForImageClassification, mel: MelConfig,
                      norm: Normalization, card: ModelCard) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if labels != card.labels:
        raise ModelFolderError(f"card labels {card.labels} differ from the model's {labels}")
    if not card.valence:
        card.valence = {label: DEFAULT_VALENCE.get(label, 0) for label in labels}
    model.config.to_json_file(str(path / CONFIG))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / WEIGHTS), metadata={"format": "pt"})
    preprocessor = {"feature_extractor_type": "callmood-log-mel", "mel": asdict(mel),
                    "normalization": asdict(norm)}
    (path / PREPROCESSOR).write_text(json.dumps(preprocessor, indent=2) + "\n")
    (path / CARD).write_text(json.dumps(asdict(card), indent=2, default=str) + "\n")
    return path


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFolderError(f"{path.parent}: not a callmood model folder ({path.name} "
                               "is missing)") from None
    except json.JSONDecodeError as err:
        raise ModelFolderError(f"{path}: invalid JSON ({err})") from None


def weights_version(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def load_model_folder(path: str | Path) -> LoadedModel:
    """Load a model folder written by save_model_folder: safetensors + JSON only."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFolderError(f"{path}: model folder not found")
    weights = path / WEIGHTS
    if not weights.is_file():
        pickles = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
        hint = (f" (found {pickles}: pickled weights are refused because loading them can "
                "run code)") if pickles else ""
        raise ModelFolderError(f"{path}: {WEIGHTS} is missing{hint}")
    config_dict = _read_json(path / CONFIG)
    if config_dict.get("model_type") != "vit":
        raise ModelFolderError(f"{path}/{CONFIG}: model_type must be 'vit', got "
                               f"{config_dict.get('model_type')!r}")
    preprocessor = _read_json(path / PREPROCESSOR)
    card_dict = _read_json(path / CARD)
    try:
        # folders written before level_floor_db existed used the absolute floor
        mel = MelConfig.from_dict({"level_floor_db": None, **preprocessor["mel"]})
        norm = Normalization(**preprocessor["normalization"])
        card = ModelCard(**card_dict)
        config = ViTConfig.from_dict(config_dict)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelFolderError(f"{path}: inconsistent model folder ({err})") from None
    labels = [config.id2label[i] for i in range(config.num_labels)]
    if labels != card.labels:
        raise ModelFolderError(f"{path}: {CARD} labels {card.labels} differ from "
                               f"{CONFIG} labels {labels}")
    if tuple(config.image_size) != (mel.n_mels, mel.input_frames):
        raise ModelFolderError(f"{path}: image_size {config.image_size} does not match the "
                               f"mel settings ({mel.n_mels} x {mel.input_frames})")
    check_config_against_weights(config, weights)
    warn_about_ignored(path, config_dict)
    model = ViTForImageClassification(config)
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except (RuntimeError, OSError) as err:
        raise ModelFolderError(f"{weights}: weights do not match {CONFIG} ({err})") from None
    model.eval()
    return LoadedModel(model, mel, norm, card, weights_version(weights))


class IgnoredModelFiles(UserWarning):
    """A model folder carries code or pickles that callmood did not load."""


def warn_about_ignored(path: Path, config_dict: dict) -> None:
    """Say so when a folder offers code (auto_map / remote-code entries, .py files) or
    pickled extras beside its safetensors: none of it is loaded or run."""
    ignored = [p.name for p in sorted(path.iterdir())
               if p.suffix in _PICKLE_SUFFIXES + (".py",)]
    ignored += [f"{CONFIG}: {key}" for key in ("auto_map", "custom_pipelines")
                if key in config_dict]
    if ignored:
        warnings.warn(f"{path}: ignored {', '.join(ignored)}; callmood loads only "
                      f"{WEIGHTS} and JSON and runs no code from a model folder",
                      IgnoredModelFiles, stacklevel=3)


def check_config_against_weights(config: ViTConfig, weights: Path) -> None:
    """Refuse, before building anything, a config whose sizes the weights do not have
    (e.g. 100,000 layers would exhaust memory) or a weights file that is no safetensors
    file (e.g. a pickle renamed model.safetensors)."""
    try:
        with safe_open(str(weights), "pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape())
                      for key in f.keys()}  # noqa: SIM118 (a safe_open handle, no dict)
    except (SafetensorError, OSError) as err:
        raise ModelFolderError(f"{weights}: not a safetensors file ({err}); callmood loads "
                               "no other format (a pickle could run code)") from None
    layers = {int(key.split(".")[2]) for key in shapes if key.startswith("vit.layers.")}
    expected = {"layers": (config.num_hidden_layers, len(layers)),
                "hidden_size": (config.hidden_size,
                                shapes.get("vit.embeddings.cls_token", (0, 0, None))[-1]),
                "intermediate_size": (config.intermediate_size,
                                      shapes.get("vit.layers.0.mlp.fc1.weight", (None,))[0]),
                "labels": (config.num_labels, shapes.get("classifier.bias", (None,))[0])}
    wrong = [f"{name} {said} in {CONFIG}, {found} in the weights"
             for name, (said, found) in expected.items() if said != found]
    if wrong:
        raise ModelFolderError(f"{weights.parent}: {CONFIG} does not describe the weights: "
                               + "; ".join(wrong))


def default_model_dir() -> Path:
    """The model bundled with callmood, used when no --model is given."""
    import callmood

    return Path(callmood.__file__).parent / "default_model"
