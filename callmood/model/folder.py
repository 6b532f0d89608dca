"""A trained model is one folder of safetensors and JSON; loading it never runs code.

    config.json               ViTConfig, or Wav2Vec2Config for the raw-audio comparison
                              (architecture, id2label / label2id)
    model.safetensors         the weights
    preprocessor_config.json  MelConfig + normalisation statistics
    callmood.json             label mapping, valence, training data, metrics, seed, versions
    call_analytics.json       optional: the call analytics settings fitted with this model
                              (results.call_summary.CallAnalytics fields, and "fitted_on")

An ensemble folder holds ensemble.json and one such folder per member instead
(callmood.model.ensemble); it loads the same way and scores as one model.

Loading reads only these files: no pickle (`torch.load`), no remote code, no Hub access.
A folder from a stranger is checked before anything is built from it: each file must be
a regular file of bounded size, every size the config names must be the weights' own and
within sane limits, and the weights and statistics must be finite; what fails is one
line naming the file and the problem.
Batch scoring needs nothing from training but this module and features.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import reprlib
import stat
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    ViTConfig,
    ViTForImageClassification,
    Wav2Vec2Config,
    Wav2Vec2ForSequenceClassification,
)

from callmood.digest import sha256_hex
from callmood.model.calibration import softmax
from callmood.signal.features import (
    LOG_MEL,
    WAVEFORM,
    MelConfig,
    Normalization,
    is_finite_number,
    model_input,
)
from callmood.valence import DEFAULT_VALENCE

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
PREPROCESSOR = "preprocessor_config.json"
CARD = "callmood.json"
ANALYTICS = "call_analytics.json"  # a file of its own: readers older than it ignore it
MODEL_FILES = (CONFIG, WEIGHTS, PREPROCESSOR, CARD)  # what scoring loads of a single model
ENSEMBLE = "ensemble.json"  # an ensemble folder's: its name and member subfolders
MAX_MEMBERS = 8
MEMBER_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")

# Sane limits of a model folder. The bundled model's JSON files are under 10 kB and its
# weights 22 MB; a ViT-Base (86 M parameters) is 350 MB.
MAX_JSON_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 2 << 30
MAX_LABELS = 1000
MAX_LAYERS = 64
MAX_NAME_LENGTH = 200  # the name goes into every scored row
# wav2vec2 frames of one clip: a convolution stack that hardly shortens the audio would make
# attention over tens of thousands of frames (wav2vec2-base's gives 151 for 3 s)
MAX_ENCODER_FRAMES = 1024

# config.json's model_type -> the config and model classes, and the frontend it reads
ARCHITECTURES = {"vit": (ViTConfig, ViTForImageClassification, LOG_MEL),
                 "wav2vec2": (Wav2Vec2Config, Wav2Vec2ForSequenceClassification, WAVEFORM)}


class ModelFolderError(ValueError):
    """A model folder that is missing files, unsafe or inconsistent."""


class ModelOutputError(ValueError):
    """The model gave non-finite scores (NaN or inf): the model is broken, not the audio.

    `kind` and `detail` as in AudioError, so that a caller records both the same way.
    """

    kind = "model"

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__(detail)


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

    def __post_init__(self):
        """Check what scoring reads, so that a bad card fails to load, not every file."""
        if not isinstance(self.name, str) or not 0 < len(self.name) <= MAX_NAME_LENGTH:
            raise ValueError(f"name must be a string of 1 to {MAX_NAME_LENGTH} characters, "
                             f"got {reprlib.repr(self.name)}")
        if not isinstance(self.labels, list) or not all(isinstance(x, str) for x in self.labels):
            raise ValueError(f"labels must be a list of strings, got {reprlib.repr(self.labels)}")
        if not isinstance(self.valence, dict) \
                or not all(v in (-1, 0, 1) and not isinstance(v, bool)
                           for v in self.valence.values()):
            raise ValueError("valence must map labels to -1, 0 or 1, got "
                             f"{reprlib.repr(self.valence)}")
        temperature = self.calibration.get("temperature", 1.0) \
            if isinstance(self.calibration, dict) else None
        if not is_finite_number(temperature) or temperature <= 0:
            raise ValueError("calibration temperature must be a finite number > 0, got "
                             f"{reprlib.repr(temperature)}")

    @property
    def temperature(self) -> float:
        return float(self.calibration.get("temperature", 1.0))


@torch.inference_mode()
def predict_logits(model: PreTrainedModel, mels: torch.Tensor, mel: MelConfig,
                   norm: Normalization, batch_size: int = 64, device: str | torch.device = "cpu",
                   bf16: bool = False, speakers: torch.Tensor | None = None) -> np.ndarray:
    """(N, n_mels, input_frames) log-mels -> (N, labels) logits, in batches; `speakers`
    (N, n_mels, 1): each clip's speaker profile, for a model with mel.speaker_mean.

    The one forward pass behind training's validation, evaluation, predict and scoring.
    """
    model.eval()
    out = []
    for start in range(0, len(mels), batch_size):
        chunk = slice(start, start + batch_size)
        x = model_input(mels[chunk], mel, norm,
                        None if speakers is None else speakers[chunk]).to(device)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**{model.main_input_name: x}).logits
        out.append(logits.float().cpu())
    if not out:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    return torch.cat(out).numpy()


def predict_probabilities(model: PreTrainedModel, mels: torch.Tensor, mel: MelConfig,
                          norm: Normalization, batch_size: int = 64,
                          device: str | torch.device = "cpu", bf16: bool = False,
                          temperature: float = 1.0, speakers: torch.Tensor | None = None,
                          ) -> np.ndarray:
    """(N, n_mels, input_frames) log-mels -> (N, labels) probabilities, softmax(logits / T)."""
    logits = predict_logits(model, mels, mel, norm, batch_size, device, bf16, speakers)
    return softmax(logits, temperature).astype(np.float32)


@dataclass
class LoadedModel:
    # ViTForImageClassification or Wav2Vec2ForSequenceClassification, or an ensemble's
    # AveragedNetwork of them
    model: PreTrainedModel
    mel: MelConfig
    norm: Normalization
    card: ModelCard
    # the first 12 hex digits of the weights file's sha256 (an ensemble's: of its members'
    # versions in order, callmood.model.ensemble)
    version: str
    # call_analytics.json as read (checked only as a JSON object; CallAnalytics.of_model
    # reads the settings) and where it lies, for errors; {} for a folder without one
    analytics: dict = field(default_factory=dict)
    analytics_file: str = ANALYTICS

    @property
    def labels(self) -> list[str]:
        return self.card.labels

    @property
    def name(self) -> str:
        return self.card.name

    def predict_mels(self, mels: torch.Tensor, batch_size: int = 64,
                     speakers: torch.Tensor | None = None, bf16: bool = False) -> np.ndarray:
        """(N, n_mels, input_frames) log-mels -> (N, labels) calibrated probabilities;
        `speakers` and `bf16` as for predict_logits (which decides the precision: an
        autocast around this call has no effect on the network)."""
        return self.check_finite(predict_probabilities(
            self.model, mels, self.mel, self.norm, batch_size, bf16=bf16,
            temperature=self.card.temperature, speakers=speakers))

    def check_finite(self, probs: np.ndarray) -> np.ndarray:
        """`probs`, or ModelOutputError if any is NaN or inf (finite weights can still
        overflow): they would leave NaN confidences and invalid JSON."""
        if not np.isfinite(probs).all():
            raise ModelOutputError(f"model {self.name} ({self.version}) gave non-finite "
                                   "scores (NaN or inf): the model is broken, not the audio")
        return probs


def save_model_folder(path: str | Path, model: PreTrainedModel, mel: MelConfig,
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
    # settings newer than some readers are left out at their defaults, so that a folder
    # without speaker normalisation still loads in a server or worker not yet upgraded
    newer = ("speaker_mean", "speaker_shift_db", "frontend", "prosody_rows", "trim_silence")
    defaults = MelConfig()
    mel_values = {k: v for k, v in asdict(mel).items()
                  if not (k in newer and v == getattr(defaults, k))}
    preprocessor = {"feature_extractor_type": f"callmood-{mel.frontend}", "mel": mel_values,
                    "normalization": {k: v for k, v in asdict(norm).items()
                                      if v is not None}}  # no reference: as older folders
    (path / PREPROCESSOR).write_text(json.dumps(preprocessor, indent=2) + "\n")
    (path / CARD).write_text(json.dumps(asdict(card), indent=2, default=str) + "\n")
    return path


def write_call_analytics(path: str | Path, settings: dict, fitted_on: str) -> Path:
    """Give the model folder at `path` the call analytics settings fitted with it
    (call_analytics.json, replaced atomically; scoring with the model then uses them);
    nothing else in the folder changes. A folder that cannot be written is a
    ModelFolderError naming the file."""
    target = Path(path) / ANALYTICS
    if not any((Path(path) / file).is_file() for file in (CARD, ENSEMBLE)):
        raise ModelFolderError(f"{path}: not a callmood model folder ({CARD} is missing)")
    written = target.with_name(f".{ANALYTICS}.{os.getpid()}.tmp")
    try:
        written.write_text(json.dumps(settings | {"fitted_on": fitted_on}, indent=2) + "\n")
        os.replace(written, target)
    except OSError as err:
        written.unlink(missing_ok=True)
        raise ModelFolderError(f"{target}: cannot be written ({err.strerror})") from None
    return target


def folder_files(path: str | Path) -> list[str]:
    """The files, relative to `path`, that scoring loads from the model folder there (an
    ensemble's members' too, their names checked as loading checks them): what a Dask run
    ships to its workers."""
    path = Path(path)
    if not (path / ENSEMBLE).exists():
        return list(MODEL_FILES)
    _, members = ensemble_manifest(path)
    return [ENSEMBLE, *(f"{member}/{file}" for member in members for file in MODEL_FILES)]


def ensemble_manifest(path: Path) -> tuple[dict, list[str]]:
    """ensemble.json's values and its member subfolders, checked: 2 to MAX_MEMBERS distinct
    plain names of real folders inside `path` (no link, no path, nothing outside it), none
    an ensemble itself."""
    manifest = _read_json(path / ENSEMBLE)
    with _blame(path / ENSEMBLE):
        members = manifest["members"]
        if not isinstance(members, list) or not 2 <= len(members) <= MAX_MEMBERS \
                or not all(isinstance(m, str) and MEMBER_NAME.fullmatch(m) for m in members) \
                or len(set(members)) != len(members) or set(members) & {".", ".."}:
            raise ValueError(f"members must list 2 to {MAX_MEMBERS} distinct subfolder names "
                             f"(letters, digits, '.', '_', '-'), got {_brief(members)}")
    for member in members:
        folder = path / member
        if folder.is_symlink() or not folder.is_dir():
            raise ModelFolderError(f"{folder}: a member must be a folder inside the ensemble "
                                   "(not a link)")
        if (folder / ENSEMBLE).exists():
            raise ModelFolderError(f"{folder}: an ensemble cannot hold an ensemble")
    return manifest, members


def _brief(value: object, limit: int = 200) -> str:
    """str(value) on one line, cut to `limit` characters: a stranger's value inside an
    error (a megabyte-long name, a million labels) must not make a megabyte-long line."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


_FILE_KINDS = {"d": "a directory", "c": "a character device", "b": "a block device",
               "p": "a FIFO", "s": "a socket"}


def _open_model_file(path: Path, max_bytes: int) -> BinaryIO:
    """`path` opened for reading, if it is a regular file of at most `max_bytes`.

    Checked before opening: a link to /dev/zero never ends and a FIFO blocks open() for
    ever. The open is non-blocking, so that a file swapped for a FIFO after the check
    does not block either. OSError (a missing file too) is left to the caller.
    """
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        kind = _FILE_KINDS.get(stat.filemode(info.st_mode)[0], "a special file")
        raise ModelFolderError(f"{path}: not a regular file ({kind})")
    if info.st_size > max_bytes:
        raise ModelFolderError(f"{path}: {info.st_size:,} bytes, more than the "
                               f"{max_bytes:,} allowed for {path.name}")
    return open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")


def _read_json(path: Path) -> dict:
    """A JSON object from one of the folder's files, read with a size cap."""
    try:
        with _open_model_file(path, MAX_JSON_BYTES) as f:
            data = f.read(MAX_JSON_BYTES)
    except FileNotFoundError:
        raise ModelFolderError(f"{path.parent}: not a callmood model folder ({path.name} "
                               "is missing)") from None
    except OSError as err:
        raise ModelFolderError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        values = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ModelFolderError(f"{path}: not UTF-8 text ({err.reason} at byte "
                               f"{err.start})") from None
    except (ValueError, RecursionError) as err:  # also a 5,000-digit number, deep nesting
        raise ModelFolderError(f"{path}: invalid JSON ({_brief(err)})") from None
    if not isinstance(values, dict):
        raise ModelFolderError(f"{path}: must hold a JSON object, not a "
                               f"{type(values).__name__}")
    return values


@contextlib.contextmanager
def _blame(path: Path) -> Iterator[None]:
    """Turn a bad value's error, raised while the values of `path` are read, into a
    ModelFolderError that names the file."""
    try:
        yield
    except KeyError as err:
        raise ModelFolderError(f"{path}: no {_brief(err)} entry") from None
    except (TypeError, ValueError) as err:
        raise ModelFolderError(f"{path}: {_brief(err)}") from None


def _model_config(path: Path, values: dict) -> PretrainedConfig:
    """config.json's values -> ViTConfig or Wav2Vec2Config, labels checked first: the
    config makes a label for each of num_labels classes (10**8 of them would fill memory)."""
    if values.get("model_type") not in ARCHITECTURES:
        raise ModelFolderError(f"{path}: model_type must be one of {sorted(ARCHITECTURES)}, "
                               f"got {reprlib.repr(values.get('model_type'))}")
    id2label = values.get("id2label")
    if not isinstance(id2label, dict) or not 1 <= len(id2label) <= MAX_LABELS \
            or set(id2label) != {str(i) for i in range(len(id2label))}:
        raise ModelFolderError(f"{path}: id2label must number 1 to {MAX_LABELS} labels "
                               f"from 0, got {reprlib.repr(id2label)}")
    if values.get("num_labels", len(id2label)) != len(id2label):
        raise ModelFolderError(f"{path}: num_labels {reprlib.repr(values['num_labels'])} "
                               f"differs from the {len(id2label)} labels of id2label")
    try:
        return ARCHITECTURES[values["model_type"]][0].from_dict(values)
    except Exception as err:  # transformers checks types its own way, with its own errors
        raise ModelFolderError(f"{path}: {_brief(err)}") from None


def load_model_folder(path: str | Path) -> LoadedModel:
    """Load a model folder written by save_model_folder: safetensors + JSON only, each
    file and value checked before anything is built from them."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFolderError(f"{path}: model folder not found")
    if (path / ENSEMBLE).exists():
        from callmood.model.ensemble import load_ensemble_folder  # it builds on this module

        return load_ensemble_folder(path)
    weights = path / WEIGHTS
    try:
        with _open_model_file(weights, MAX_WEIGHTS_BYTES) as f:
            version = sha256_hex(f)[:12]
    except FileNotFoundError:
        pickles = [p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES]
        hint = (f" (found {reprlib.repr(pickles)}: pickled weights are refused because "
                "loading them can run code)") if pickles else ""
        raise ModelFolderError(f"{path}: {WEIGHTS} is missing{hint}") from None
    except OSError as err:
        raise ModelFolderError(f"{weights}: cannot be read ({err.strerror})") from None
    config_dict = _read_json(path / CONFIG)
    preprocessor = _read_json(path / PREPROCESSOR)
    card_dict = _read_json(path / CARD)
    with _blame(path / PREPROCESSOR):
        # folders written before level_floor_db existed used the absolute floor
        mel = MelConfig.from_dict({"level_floor_db": None, **preprocessor["mel"]})
        norm = Normalization(**preprocessor["normalization"])
        if mel.speaker_shift_db is not None and len(norm.speaker_reference or ()) != mel.n_mels:
            raise ValueError(f"speaker_shift_db needs a speaker_reference of {mel.n_mels} "
                             "values in the normalization")
    with _blame(path / CARD):
        card = ModelCard(**card_dict)
    config = _model_config(path / CONFIG, config_dict)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    if labels != card.labels:
        raise ModelFolderError(f"{path}: {CARD} labels {reprlib.repr(card.labels)} differ "
                               f"from {CONFIG} labels {reprlib.repr(labels)}")
    _, model_class, frontend = ARCHITECTURES[config.model_type]
    if mel.frontend != frontend:
        raise ModelFolderError(f"{path / PREPROCESSOR}: frontend {mel.frontend!r}, but a "
                               f"{config.model_type} model reads the {frontend} frontend")
    size = getattr(config, "image_size", None)
    if config.model_type == "vit" and (tuple(size) if isinstance(size, list | tuple)
                                       else (size, size)) != (mel.rows, mel.input_frames):
        raise ModelFolderError(f"{path / CONFIG}: image_size {reprlib.repr(size)} does not "
                               f"match the mel settings of {PREPROCESSOR} ({mel.rows} x "
                               f"{mel.input_frames})")
    if config.model_type == "wav2vec2":
        check_encoder_frames(path / CONFIG, config, mel)
    check_config_against_weights(config, weights)
    warn_about_ignored(path, config_dict)
    model = model_class(config)
    try:
        model.load_state_dict(load_file(str(weights)), strict=True)
    except (RuntimeError, OSError) as err:
        raise ModelFolderError(f"{weights}: weights do not match {CONFIG} "
                               f"({_brief(err)})") from None
    # after the load, so that values that overflow float32 on the way in count too
    broken = [name for name, tensor in model.state_dict().items()
              if not torch.isfinite(tensor).all()]
    if broken:
        raise ModelFolderError(f"{weights}: NaN or infinite values in {len(broken)} "
                               f"tensor(s): {_brief(', '.join(broken))}")
    model.eval()
    analytics = _read_json(path / ANALYTICS) if (path / ANALYTICS).exists() else {}
    return LoadedModel(model, mel, norm, card, version, analytics, str(path / ANALYTICS))


def check_encoder_frames(path: Path, config: Wav2Vec2Config, mel: MelConfig) -> None:
    """Refuse a wav2vec2 whose convolutions leave a clip more than MAX_ENCODER_FRAMES
    frames (or none): the strides are in no weight's shape, so only this bounds them."""
    frames = mel.clip_samples
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        if not (isinstance(kernel, int) and isinstance(stride, int) and kernel >= 1
                and stride >= 1):
            raise ModelFolderError(f"{path}: conv_kernel and conv_stride must be positive "
                                   f"integers, got {reprlib.repr(config.conv_kernel)} and "
                                   f"{reprlib.repr(config.conv_stride)}")
        frames = (frames - kernel) // stride + 1
    if not 1 <= frames <= MAX_ENCODER_FRAMES:
        raise ModelFolderError(f"{path}: its convolutions make {frames} frames of a "
                               f"{mel.clip_seconds:.2f}-s clip; callmood loads 1 to "
                               f"{MAX_ENCODER_FRAMES}")


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


# Where each architecture's main sizes lie in its weights, for check_config_against_weights:
# (prefix of the transformer layers, tensor and axis of hidden_size, tensor of
# intermediate_size's rows)
_SIZES_IN_WEIGHTS = {
    "vit": ("vit.layers.", ("vit.embeddings.cls_token", -1), "vit.layers.0.mlp.fc1.weight"),
    "wav2vec2": ("wav2vec2.encoder.layers.",
                 ("wav2vec2.feature_projection.projection.weight", 0),
                 "wav2vec2.encoder.layers.0.feed_forward.intermediate_dense.weight"),
}
_WAV2VEC2_CONV = "wav2vec2.feature_extractor.conv_layers."


def check_config_against_weights(config: PretrainedConfig, weights: Path) -> None:
    """Refuse, before building anything, a config whose sizes the weights do not have
    (100,000 layers, or a 2**20 x 2**20 image, would exhaust memory) or a weights file
    that is no safetensors file (e.g. a pickle renamed model.safetensors).

    The main sizes are compared by name first, for a readable message; then every tensor
    of the model built on the meta device (shapes only, no memory).
    """
    try:
        with safe_open(str(weights), "pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape())
                      for key in f.keys()}  # noqa: SIM118 (a safe_open handle, no dict)
    except (SafetensorError, OSError) as err:
        raise ModelFolderError(f"{weights}: not a safetensors file ({_brief(err)}); callmood "
                               "loads no other format (a pickle could run code)") from None
    layer_prefix, (hidden_key, hidden_axis), mlp_key = _SIZES_IN_WEIGHTS[config.model_type]
    layers = {key[len(layer_prefix):].split(".")[0] for key in shapes
              if key.startswith(layer_prefix)}
    if len(layers) > MAX_LAYERS:
        raise ModelFolderError(f"{weights}: {len(layers)} layers, more than the "
                               f"{MAX_LAYERS} callmood loads")
    expected = {"layers": (config.num_hidden_layers, len(layers)),
                "hidden_size": (config.hidden_size,
                                shapes.get(hidden_key, (None, None, None))[hidden_axis]),
                "intermediate_size": (config.intermediate_size,
                                      shapes.get(mlp_key, (None,))[0]),
                "labels": (config.num_labels, shapes.get("classifier.bias", (None,))[0])}
    if config.model_type == "wav2vec2":
        convs = {key[len(_WAV2VEC2_CONV):].split(".")[0] for key in shapes
                 if key.startswith(_WAV2VEC2_CONV)}
        expected["convolutions"] = (config.num_feat_extract_layers, len(convs))
    wrong = [f"{name} {reprlib.repr(said)} in {CONFIG}, {found} in the weights"
             for name, (said, found) in expected.items() if said != found]
    if not wrong:
        try:
            with torch.device("meta"):
                skeleton = ARCHITECTURES[config.model_type][1](config)
        except Exception as err:  # a stranger's config can upset transformers in many ways
            raise ModelFolderError(f"{weights.parent / CONFIG}: no {config.model_type} model "
                                   f"can be built from it ({_brief(err)})") from None
        built = {key: tuple(tensor.shape) for key, tensor in skeleton.state_dict().items()}
        wrong = [f"{key} {built.get(key, 'absent')} in {CONFIG}, "
                 f"{shapes.get(key, 'absent')} in the weights"
                 for key in sorted(built.keys() | shapes.keys())
                 if built.get(key) != shapes.get(key)]
    if wrong:
        raise ModelFolderError(f"{weights.parent}: {CONFIG} does not describe the weights: "
                               + _brief("; ".join(wrong), 400))


def default_model_dir() -> Path:
    """The model bundled with callmood, used when no --model is given."""
    import callmood

    return Path(callmood.__file__).parent / "default_model"
