"""Fine-tuning the spectrogram ViT: one readable loop, no framework.

`train()` takes a split and a TrainConfig, trains with early stopping on validation
macro-F1, and writes the best epoch as a model folder. Optuna trials call the same
function with a changed copy of the config and an `on_epoch` hook for pruning.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import platform
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import transformers
from tqdm import tqdm

import callmood
from callmood.model.calibration import (
    expected_calibration_error,
    fit_temperature,
    softmax,
)
from callmood.model.folder import LoadedModel, ModelCard, load_model_folder, save_model_folder
from callmood.model.predict import Inference
from callmood.progress import progress
from callmood.signal.features import (
    LOG_MEL,
    WAVEFORM,
    MelConfig,
    Normalization,
    band_levels,
    fit_frames,
    is_finite_number,
    model_input,
    speaker_profiles,
)
from callmood.training.augment import (
    AugmentConfig,
    cut_at_margin,
    spec_augment,
    warp_factors,
    warp_frequencies,
)
from callmood.training.auxiliary import (
    AffectHeads,
    CorpusAdversary,
    affect_table,
    reversal_strength,
    save_affect_heads,
)
from callmood.training.cache import (
    CLEAN,
    Features,
    Variant,
    babble_bank,
    clean,
    condition_variant,
    extract,
    training_channels,
)
from callmood.training.channel import condition_line
from callmood.training.checkpoint import (
    Checkpoint,
    capture_random_state,
    checkpoint_dir,
    load_checkpoint,
    restore_random_state,
    save_checkpoint,
)
from callmood.training.evaluate import classification_metrics, score_utterances
from callmood.training.labels import ordered_labels
from callmood.training.model import build_model, logits_and_embedding
from callmood.training.splits import Split

log = logging.getLogger(__name__)


BACKBONES = {"vit": LOG_MEL, "wav2vec2": WAVEFORM}  # backbone -> the frontend it reads


@dataclass
class TrainConfig:
    # vit: the spectrogram ViT; wav2vec2: the raw-audio comparison (training/wav2vec2.py).
    # mel.frontend follows it.
    backbone: str = "vit"
    init: str = "random:tiny"  # random:<preset>, a timm folder, or a Hub id / HF folder
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2.5e-4
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # adamw | sgd
    schedule: str = "cosine"  # cosine | plateau
    warmup_epochs: float = 1.0
    patience: int = 8  # epochs without a better validation macro-F1 before stopping
    # how rare classes are weighted: sampler draws classes equally often; corpus draws each
    # corpus equally often and within it each of its classes (so 2,800 clips of TESS's two
    # speakers weigh as much as any other corpus, no more); loss weights the loss; none
    balance: str = "sampler"  # sampler | corpus | loss | none
    # examples drawn per epoch (0: as many as the training set has); fixes the budget of a
    # run independently of how much data it trains on, e.g. across the transfer benchmark's
    # rows, and lets a large union of corpora be validated more often than once per pass
    epoch_size: int = 0
    # the loss of an example only weighs the classes its corpus has, so a corpus without
    # "surprised" does not teach "never surprised" (see class_loss)
    mask_absent_classes: bool = True
    grad_clip: float = 1.0
    # 0: with 0.1 (hidden + attention) a pretrained DeiT-Tiny learnt nothing in its first
    # epoch on RAVDESS fold 1 (validation macro-F1 0.05, against 0.40 without)
    dropout: float = 0.0
    label_smoothing: float = 0.05
    # weight of a corpus classifier that reads the [CLS] embedding through gradient
    # reversal (training/auxiliary.py), so that the encoder unlearns corpus cues; 0: off
    corpus_adversary: float = 0.0
    # weight of valence and arousal heads beside the classifier (multi-task); 0: off
    affect_heads: float = 0.0
    # model folders whose probabilities, averaged, on each training utterance's clean audio
    # are soft targets beside its label: an ensemble distilled into this one model (the
    # product stays one fast ViT), every simulated line taught what the teachers read on
    # clean speech; empty: none
    teachers: tuple[str, ...] = ()
    teacher_weight: float = 0.5  # the teachers' share of each example's target
    # exponential moving average of the weights (Polyak averaging) per step: each epoch is
    # validated, and the model folder written, with the average, a cheap ensemble of the
    # run's late weights in one model of the same size; 0: off
    ema_decay: float = 0.0
    # named channel conditions (training/channel.py) the validation speakers are heard
    # through: each validation utterance through one of them, the same every epoch and run
    # (channel_mix), so the best epoch, and an Optuna trial's score, reward reading calls'
    # lines rather than clean speech alone; empty: clean. The unseen_* conditions are
    # refused: they stay for testing robustness beyond the training ranges.
    val_channels: tuple[str, ...] = ()
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # auto: bf16 autocast on CUDA, fp32 on CPU; bf16 on a CPU with native bf16 (AVX512-BF16,
    # AMX) trains ~1.8x faster (measured on this project's 2-core EPYC), and on one without
    # it 18x slower (benchmarks/bench_train_step.py; warn_slow_bf16)
    precision: str = "auto"  # auto | fp32 | bf16
    workers: int = 2  # processes for feature extraction
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mel: MelConfig = field(default_factory=MelConfig)

    def __post_init__(self):
        choices = {"backbone": tuple(BACKBONES), "optimizer": ("adamw", "sgd"),
                   "schedule": ("cosine", "plateau"),
                   "balance": ("sampler", "corpus", "loss", "none"),
                   "device": ("auto", "cpu", "cuda"), "precision": ("auto", "fp32", "bf16")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_size and lr must be positive")
        if self.epoch_size < 0:
            raise ValueError("epoch_size must be 0 (the training set's size) or positive")
        for name in ("corpus_adversary", "affect_heads"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (is_finite_number(self.ema_decay) and 0 <= self.ema_decay < 1):
            raise ValueError(f"ema_decay must be a number in [0, 1), got {self.ema_decay!r}")
        if self.ema_decay and self.affect_heads:
            raise ValueError("ema_decay averages the model's weights, not the affect heads "
                             "saved beside it, which would then read another encoder: use "
                             "one or the other")
        if isinstance(self.teachers, str):  # one folder, from a JSON file of settings
            self.teachers = [self.teachers]
        self.teachers = tuple(str(Path(t).expanduser().resolve()) for t in self.teachers)
        if not (is_finite_number(self.teacher_weight) and 0 <= self.teacher_weight <= 1):
            raise ValueError(f"teacher_weight must be a number in [0, 1], got "
                             f"{self.teacher_weight!r}")
        if not self.teachers and self.teacher_weight != TrainConfig.teacher_weight:
            raise ValueError("teacher_weight needs teachers (model folders to learn from)")
        if isinstance(self.val_channels, str):  # "clean, telephone" from a command line
            self.val_channels = self.val_channels.split(",")
        self.val_channels = tuple(name.strip() for name in self.val_channels)
        for name in self.val_channels:
            condition_line(name)  # a known condition, or ValueError
            if name.startswith("unseen_"):
                raise ValueError(f"val_channels: {name!r} is kept for testing robustness "
                                 "beyond the training ranges; validate on others")
        if self.mel.frontend != BACKBONES[self.backbone]:
            self.mel = replace(self.mel, frontend=BACKBONES[self.backbone])
        if self.augment.frequency_warp and self.mel.frontend == WAVEFORM:
            raise ValueError("augment.frequency_warp acts on log-mel bands; the waveform "
                             f"frontend ({self.backbone}) has none")
        if self.augment.speech_margin and self.mel.frontend == WAVEFORM:
            raise ValueError("augment.speech_margin finds the speech in log-mel bands; the "
                             f"waveform frontend ({self.backbone}) has none")

    def with_overrides(self, overrides: dict) -> TrainConfig:
        """A copy with `overrides` applied; `augment.x` keys reach the AugmentConfig,
        `mel.x` keys (or a `mel` dict) change those mel settings and keep the others."""
        top = {f.name for f in fields(self)}
        overrides = dict(overrides)
        mel = overrides.pop("mel", {})
        if isinstance(mel, MelConfig):
            mel = asdict(mel)
        if not isinstance(mel, dict):
            raise ValueError(f"mel must be an object of mel settings, got {mel!r}")
        mel = dict(mel)  # the caller's stays as it was
        mel |= {k.split(".", 1)[1]: overrides.pop(k) for k in list(overrides)
                if k.startswith("mel.")}
        if mel:
            overrides["mel"] = MelConfig.from_dict({**asdict(self.mel), **mel})
        if isinstance(overrides.get("augment"), dict):
            nested = overrides.pop("augment")
            overrides.update({f"augment.{k}": v for k, v in nested.items()})
        augment = {k.split(".", 1)[1]: v for k, v in overrides.items()
                   if k.startswith("augment.")}
        plain = {k: v for k, v in overrides.items() if not k.startswith("augment.")}
        unknown = (set(plain) - top) | (set(augment) - {f.name for f in fields(AugmentConfig)})
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}")
        return replace(self, **plain, augment=replace(self.augment, **augment))

    def to_dict(self) -> dict:
        return asdict(self)


def config_from_params(params_file: str | Path | None, overrides: dict) -> TrainConfig:
    """The TrainConfig of a --params JSON file (e.g. `callmood tune`'s best_params.json),
    or the defaults, with the `overrides` that are not None applied on top."""
    values = json.loads(Path(params_file).read_text()) if params_file else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig().with_overrides(values)


@dataclass
class TrainResult:
    model_dir: Path
    best_epoch: int
    best_val_macro_f1: float
    history: list[dict]
    test_metrics: dict | None


EpochHook = Callable[[int, float], None]  # (epoch, validation macro-F1); may raise to stop


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def lr_factor(step: int, total_steps: int, warmup_steps: int, cosine: bool) -> float:
    """Linear warm-up, then cosine decay to zero (or flat, for the plateau schedule)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine:
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_batch(mels: dict[str, list[torch.Tensor]], indices: list[int], config: TrainConfig,
               generator: torch.Generator,
               profiles: dict[str, torch.Tensor] | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random crops of the chosen examples; with probability channel_p an example comes from
    one of its cached channel variants (chosen at random) instead of the clean audio. With
    `profiles` (example_speaker_profiles), each crop's speaker profile comes too."""
    frames = config.mel.input_frames
    augment = config.augment
    if config.mel.frontend == WAVEFORM:  # a frame's rows are samples: time masks only
        augment = replace(augment, specaug_freq=0)
    channels = [name for name in mels if name != CLEAN]
    clips, speakers = [], []
    for i in indices:
        variant = CLEAN
        if channels and torch.rand(1, generator=generator).item() < config.augment.channel_p:
            variant = channels[int(torch.randint(len(channels), (1,), generator=generator))]
        mel = mels[variant][i]
        if augment.speech_margin > 0:
            mel = cut_at_margin(mels[CLEAN][i], mel, augment, config.mel, generator)
        room = mel.shape[-1] - frames
        offset = int(torch.randint(0, room + 1, (1,), generator=generator)) if room > 0 else 0
        clips.append(fit_frames(mel, frames, offset))
        if profiles is not None:
            speakers.append(profiles[variant][i])
    crops = torch.stack(clips)
    speakers = torch.stack(speakers) if profiles is not None else None
    if augment.frequency_warp > 0:  # a warped voice is another speaker: their profile too
        factors = warp_factors(len(indices), augment, generator)
        if speakers is None:
            crops = warp_frequencies(crops, factors, config.mel)
        else:  # a profile is one more frame of its clip (no prosody rows beside it)
            both = warp_frequencies(torch.cat([crops, speakers], dim=-1), factors, config.mel)
            crops, speakers = both[..., :-1], both[..., -1:]
    if config.mel.prosody_rows:  # masks fill with the log-mel's mean: it alone is masked
        mels, prosody = crops.split([config.mel.n_mels, config.mel.prosody_rows], dim=1)
        return torch.cat([spec_augment(mels, augment, generator), prosody], dim=1), None
    if speakers is None:
        return spec_augment(crops, augment, generator), None
    # masked relative to the speaker, so that once model_input subtracts the profile a
    # mask is flat, not the speaker's profile turned upside down
    return spec_augment(crops - speakers, augment, generator) + speakers, speakers


def example_speaker_profiles(data: Features) -> dict[str, torch.Tensor]:
    """Per cached variant, each example's speaker profile (features.speaker_profiles),
    (examples, n_mels, 1): its speaker's over their clean utterances, plus what the
    example's line did to its own band levels (through the line minus clean), because a
    call channel's profile holds its line's colouring as well as the voice."""
    own = {variant: torch.stack([band_levels(m) for m in mels])
           for variant, mels in data.mels.items()}
    speakers = speaker_profiles(own[CLEAN], data.speakers())
    return {variant: speakers if variant == CLEAN else speakers + levels - own[CLEAN]
            for variant, levels in own.items()}


def epoch_order(targets: np.ndarray, balance: str, generator: torch.Generator,
                corpora: np.ndarray | None = None, size: int = 0) -> list[int]:
    """`size` (0: len(targets)) example indices for an epoch, drawn with replacement when
    balancing: `sampler` draws classes equally often, `corpus` corpora equally often and
    each corpus's classes equally often within it (`corpora`: one corpus name per example).
    Unbalanced, the examples are shuffled and repeated as far as `size` asks."""
    n = size or len(targets)
    if balance not in ("sampler", "corpus"):
        repeats = math.ceil(n / len(targets))
        return torch.cat([torch.randperm(len(targets), generator=generator)
                          for _ in range(repeats)])[:n].tolist()
    groups = targets if balance == "sampler" or corpora is None else np.array(
        [f"{c}\0{t}" for c, t in zip(corpora, targets, strict=True)])
    _, group, counts = np.unique(groups, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[group]
    if balance == "corpus" and corpora is not None:
        names, corpus = np.unique(corpora, return_inverse=True)
        classes = [len(np.unique(targets[corpus == i])) for i in range(len(names))]
        weights /= np.array(classes)[corpus]
    return torch.multinomial(torch.as_tensor(weights, dtype=torch.double), n,
                             replacement=True, generator=generator).tolist()


def class_loss(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor | None,
               class_weights: torch.Tensor | None, smoothing: float) -> torch.Tensor:
    """Cross-entropy of (B, C) logits against (B, C) soft targets over the classes each
    example may be (`allowed`, (B, C) bool; None: all), label smoothing spread over those.

    With every class allowed this is torch's cross_entropy with `weight` and
    `label_smoothing`. A class outside an example's corpus gets no gradient from it.
    """
    if allowed is None:
        allowed = torch.ones_like(targets, dtype=torch.bool)
    logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min / 4)
    spread = allowed.float() / allowed.sum(dim=1, keepdim=True)
    smoothed = (1 - smoothing) * targets + smoothing * spread
    per_class = -smoothed * torch.log_softmax(logits, dim=-1)
    if class_weights is not None:
        per_class = per_class * class_weights
    return per_class.sum(dim=1).mean()


def corpus_classes(utterances: list, label_id: dict[str, int]) -> dict[str, torch.Tensor]:
    """corpus -> (C,) bool: the classes that corpus has in the training data."""
    out: dict[str, torch.Tensor] = {}
    for u in utterances:
        mask = out.setdefault(u.corpus, torch.zeros(len(label_id), dtype=torch.bool))
        mask[label_id[u.label]] = True
    return out


def update_average(average: dict[str, torch.Tensor], model: torch.nn.Module, decay: float,
                   step: int) -> None:
    """Move the weights' moving average towards the model's after optimiser step `step`
    (from 0), by a rate warmed up as min(decay, (1 + step) / (10 + step)) so that the
    first steps do not pin it to the initial weights; integer buffers are copied."""
    rate = min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                average[name].lerp_(value, 1 - rate)
            else:
                average[name].copy_(value)


@contextlib.contextmanager
def weights_of(model: torch.nn.Module, state: dict[str, torch.Tensor] | None):
    """The model holds `state`'s weights within the block (None: its own) and its own
    weights again after it."""
    if state is None:
        yield
        return
    own = copy.deepcopy(model.state_dict())
    model.load_state_dict(state)
    try:
        yield
    finally:
        model.load_state_dict(own)


def uses_bf16(precision: str, device: torch.device) -> bool:
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


CPUINFO = Path("/proc/cpuinfo")


def cpu_has_native_bf16(cpuinfo: Path = CPUINFO) -> bool | None:
    """Whether this x86 CPU computes bf16 in hardware (AVX512-BF16 or AMX flags), or None
    where no x86 flags can be read (not Linux, or an ARM CPU, which lists `Features`)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), None)
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags))


def warn_slow_bf16(precision: str, device: torch.device, cpuinfo: Path = CPUINFO) -> None:
    """bf16 on a CPU without it in hardware is emulated: a ViT-Tiny training step took 18
    times fp32's on a 2-core AMD EPYC (Zen 3, AVX2) of this project
    (benchmarks/results/train_step.json)."""
    if device.type == "cpu" and uses_bf16(precision, device) \
            and cpu_has_native_bf16(cpuinfo) is False:
        log.warning("precision bf16 on a CPU without bf16 in hardware (no AVX512-BF16 or AMX) "
                    "is emulated and trains many times slower than fp32: use --precision "
                    "auto or fp32 here")


def summarise_data(split: Split, failures: int) -> dict:
    return {
        "split": split.summary(),
        "corpora": dict(Counter(u.corpus for u in split.train + split.val)),
        "train_label_counts": dict(Counter(u.label for u in split.train)),
        "skipped_unreadable_files": failures,
    }


def train(split: Split, config: TrainConfig, out_dir: str | Path, *, label_map: dict,
          cache_dir: str | Path | None = None, on_epoch: EpochHook | None = None,
          model_name: str | None = None, checkpoint: bool = True, resume: bool = False,
          invocation: dict | None = None) -> TrainResult:
    """Train; with `checkpoint`, every epoch is saved into OUT/checkpoint (removed when the
    model folder is written) and `resume` continues a stopped run from it.

    `invocation` (e.g. the command line's corpora and split options) is kept in the
    checkpoint so that `callmood train --resume OUT` can rebuild the same split.
    """
    started = time.time()
    out_dir = Path(out_dir)
    generator = _seed_everything(config.seed)
    device = _device(config.device)
    warn_slow_bf16(config.precision, device)

    # --- data: cached log-mels, label ids, normalisation from the training set
    labels = ordered_labels({u.label for u in split.train})
    label_id = {label: i for i, label in enumerate(labels)}
    # the model and teachers first: settings they refuse (an init, a shape, a teacher
    # without the labels) fail before any extraction
    model = build_model(config.mel, labels, config.init, config.dropout).to(device)
    teachers = [load_teacher(folder, labels) for folder in config.teachers]
    variants = [clean()]
    if config.augment.channel_p > 0:
        babble = babble_bank(split.train, config.mel.sample_rate, config.seed)
        variants += training_channels(config.augment.channel,
                                      config.augment.channel_variants, config.seed, babble)
    train_data = extract(split.train, config.mel, variants, cache_dir, config.workers)
    val_variants = validation_variants(split.val, config)
    val_data = extract(split.val, config.mel,
                       list({v.name: v for v in val_variants.values()}.values()), cache_dir,
                       config.workers)
    if not train_data.utterances:
        raise ValueError("no usable training audio")
    failures = len(train_data.failures) + len(val_data.failures)
    val_data = _known_labels(val_data, label_id)
    targets = np.array([label_id[u.label] for u in train_data.utterances])
    corpora = np.array([u.corpus for u in train_data.utterances])
    has_class = corpus_classes(train_data.utterances, label_id)
    allowed_all = torch.stack([has_class[c] for c in corpora]) \
        if config.mask_absent_classes else None
    val_targets = np.array([label_id[u.label] for u in val_data.utterances])
    val_mix = channel_mix(val_data, [val_variants[name].name for name in config.val_channels])
    taught = teacher_targets(teachers, train_data.utterances, labels, cache_dir,
                             config.workers) if teachers else None
    profiles = example_speaker_profiles(train_data) if config.mel.speaker_mean else None
    norm = Normalization.fit(train_data.mels[CLEAN], config.mel,
                             profiles[CLEAN] if profiles else None)

    corpus_names, corpus_ids = np.unique(corpora, return_inverse=True)

    # --- the auxiliary heads trained beside the model, optimiser, schedule
    auxiliary = torch.nn.ModuleDict()
    if config.corpus_adversary > 0:
        if len(corpus_names) < 2:
            raise ValueError("corpus_adversary needs at least two training corpora, got "
                             f"{list(corpus_names)}")
        auxiliary["corpus"] = CorpusAdversary(model.classifier.in_features, len(corpus_names))
    if config.affect_heads > 0:
        auxiliary["affect"] = AffectHeads(model.classifier.in_features)
    auxiliary.to(device)
    affect = affect_table(labels).to(device)
    parameters = list(model.parameters()) + list(auxiliary.parameters())
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(parameters, lr=config.lr,
                                      weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=0.9,
                                    weight_decay=config.weight_decay, nesterov=True)
    class_weights = None
    if config.balance == "loss":
        counts = np.bincount(targets, minlength=len(labels)).clip(min=1)
        class_weights = torch.as_tensor(len(targets) / (len(labels) * counts),
                                        dtype=torch.float32, device=device)
    steps_per_epoch = math.ceil((config.epoch_size or len(targets)) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = max(1, int(config.warmup_epochs * steps_per_epoch))
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5,
                                                         patience=2) \
        if config.schedule == "plateau" else None
    # validation scores utterances as the written folder will (uncalibrated until the end)
    inference = Inference(model, config.mel, norm, device=device,
                          bf16=uses_bf16(config.precision, device))
    beta = torch.distributions.Beta(config.augment.mixup_alpha, config.augment.mixup_alpha) \
        if config.augment.mixup_alpha > 0 else None

    # --- the loop, from the checkpoint of a stopped run if asked
    history, best_f1, best_epoch, best_state, step, first_epoch = [], -1.0, 0, None, 0, 1
    best_auxiliary = {}
    average = {k: v.detach().clone() for k, v in model.state_dict().items()} \
        if config.ema_decay else None
    run = {"config": json.loads(json.dumps(config.to_dict())), **(invocation or {})}
    if resume:
        point = load_checkpoint(out_dir, run, lambda saved: json.loads(json.dumps(
            TrainConfig().with_overrides(saved).to_dict())))
        model.load_state_dict(point.model)
        auxiliary.load_state_dict(point.auxiliary)
        optimizer.load_state_dict(point.optimizer)
        if plateau is not None:
            plateau.load_state_dict(point.plateau)
        restore_random_state(point, generator)
        history, best_f1, best_epoch, step = (point.history, point.best_f1, point.best_epoch,
                                              point.step)
        best_state, best_auxiliary, first_epoch = (point.best_model, point.best_auxiliary,
                                                   point.epoch + 1)
        if average is not None:
            average = {k: v.to(device) for k, v in point.averaged_model.items()}
        tqdm.write(f"resuming after epoch {point.epoch} (best so far: epoch {best_epoch}, "
                   f"validation macro-F1 {best_f1:.3f})")
    for epoch in range(first_epoch, config.epochs + 1):
        if epoch - best_epoch > config.patience:  # a resumed run that had stopped early
            break
        model.train()
        auxiliary.train()
        order = epoch_order(targets, config.balance, generator, corpora, config.epoch_size)
        total_loss, seen = 0.0, 0
        head_losses = dict.fromkeys(auxiliary, 0.0)  # per auxiliary head, summed
        bar = progress(range(0, len(order), config.batch_size),
                       desc=f"epoch {epoch}/{config.epochs}", unit="batch", leave=False)
        for start in bar:
            if plateau is None or epoch == 1:
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * lr_factor(step, total_steps, warmup_steps,
                                                   config.schedule == "cosine")
            indices = order[start:start + config.batch_size]
            clips, speakers = make_batch(train_data.mels, indices, config, generator, profiles)
            x = model_input(clips, config.mel, norm, speakers).to(device)
            y = torch.nn.functional.one_hot(torch.as_tensor(targets[indices]),
                                            len(labels)).float().to(device)
            allowed = allowed_all[indices].to(device) if allowed_all is not None else None
            if taught is not None:  # within the classes the example's corpus has
                soft = taught[indices].to(device)
                soft = soft * allowed if allowed is not None else soft
                soft = soft / soft.sum(dim=1, keepdim=True).clamp_min(1e-12)
                y = (1 - config.teacher_weight) * y + config.teacher_weight * soft
            corpus = torch.nn.functional.one_hot(torch.as_tensor(corpus_ids[indices]),
                                                 len(corpus_names)).float().to(device)
            if beta is not None:
                lam = float(beta.sample())
                perm = torch.randperm(len(indices), generator=generator).to(device)
                x = lam * x + (1 - lam) * x[perm]
                y = lam * y + (1 - lam) * y[perm]
                corpus = lam * corpus + (1 - lam) * corpus[perm]
                allowed = allowed | allowed[perm] if allowed is not None else None
            with torch.autocast(device.type, dtype=torch.bfloat16,
                                enabled=uses_bf16(config.precision, device)):
                logits, embedding = logits_and_embedding(model, x)
                logits = logits.float()
                heads = {name: head(embedding, reversal_strength(step / total_steps))
                         if name == "corpus" else head(embedding)
                         for name, head in auxiliary.items()}
            loss = class_loss(logits, y, allowed, class_weights, config.label_smoothing)
            emotion_loss = loss.item()  # train_loss: comparable with and without heads
            for name, out in heads.items():
                out = out.float()
                if name == "corpus":
                    head_loss = config.corpus_adversary * class_loss(out, corpus, None, None, 0)
                else:  # valence (3) and arousal (2), each a soft cross-entropy
                    wanted = y @ affect
                    head_loss = config.affect_heads * (
                        class_loss(out[:, :3], wanted[:, :3], None, None, 0)
                        + class_loss(out[:, 3:], wanted[:, 3:], None, None, 0))
                loss = loss + head_loss
                head_losses[name] += head_loss.item() * len(indices)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
            optimizer.step()
            if average is not None:
                update_average(average, model, config.ema_decay, step)
            step += 1
            total_loss += emotion_loss * len(indices)
            seen += len(indices)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}")

        with weights_of(model, average):  # validated (and kept, if best) as the average
            val = _validation_metrics(val_mix, val_data.speakers(), val_targets, labels,
                                      inference)
            if val["val_macro_f1"] > best_f1 or not val_data.utterances:
                best_f1, best_epoch = val["val_macro_f1"], epoch
                best_state = copy.deepcopy(model.state_dict())
                best_auxiliary = copy.deepcopy(auxiliary.state_dict())
        train_loss = total_loss / seen
        history.append({"epoch": epoch, "train_loss": train_loss, **val,
                        "lr": optimizer.param_groups[0]["lr"],
                        **{f"{name}_loss": total / seen for name, total in head_losses.items()}})
        log.info("epoch %d: loss %.4f, val macro-F1 %.3f, val UA %.3f", epoch, train_loss,
                 val["val_macro_f1"], val["val_ua"])
        tqdm.write(f"epoch {epoch}/{config.epochs}: loss {train_loss:.4f}  "
                   f"val macro-F1 {val['val_macro_f1']:.3f}  val UA {val['val_ua']:.3f}")
        if plateau is not None and epoch > config.warmup_epochs:
            plateau.step(val["val_macro_f1"])
        if checkpoint:
            save_checkpoint(out_dir, Checkpoint(
                epoch=epoch, step=step, history=history, best_f1=best_f1,
                best_epoch=best_epoch, model=model.state_dict(), best_model=best_state,
                averaged_model=average or {},
                auxiliary=auxiliary.state_dict(), best_auxiliary=best_auxiliary,
                optimizer=optimizer.state_dict(),
                plateau=plateau.state_dict() if plateau is not None else None,
                **capture_random_state(generator)), run)
        if on_epoch is not None:
            on_epoch(epoch, val["val_macro_f1"])
        if epoch - best_epoch >= config.patience:
            tqdm.write(f"early stop: no better validation macro-F1 for {config.patience} epochs")
            break

    # --- the best epoch, calibrated on the validation speakers, becomes the model folder;
    # test speakers are scored once, at the end
    model.load_state_dict(best_state)
    calibration = calibrate(inference, val_data, val_targets)
    test_metrics = None
    if split.test:
        test_data = _known_labels(extract(split.test, config.mel, (), cache_dir,
                                          config.workers), label_id)
        test_targets = np.array([label_id[u.label] for u in test_data.utterances])
        probs = inference.utterances(test_data.mels[CLEAN],
                                     speakers=test_data.speakers()).probs
        test_metrics = classification_metrics(test_targets, probs.argmax(1), labels)
    card = ModelCard(
        name=model_name or out_dir.name, labels=labels, label_map=label_map,
        training={**summarise_data(split, failures), "config": config.to_dict(),
                  "best_epoch": best_epoch, "epochs_run": len(history), "history": history,
                  **({"teachers": [{"folder": folder, "version": t.version} for folder, t
                                   in zip(config.teachers, teachers, strict=True)]}
                     if teachers else {}),
                  "wall_s": round(time.time() - started, 1), "device": str(device),
                  "versions": {"callmood": callmood.__version__, "torch": torch.__version__,
                               "transformers": transformers.__version__,
                               "python": platform.python_version()}},
        metrics={"val_macro_f1": best_f1,
                 **({"test": _brief(test_metrics, split.description)} if test_metrics else {})},
        calibration=calibration,
    )
    save_model_folder(out_dir, model.cpu(), config.mel, norm, card)
    if "affect" in auxiliary:
        save_affect_heads(out_dir, {k.split(".", 1)[1]: v for k, v in best_auxiliary.items()
                                    if k.startswith("affect.")})
    shutil.rmtree(checkpoint_dir(out_dir), ignore_errors=True)
    return TrainResult(out_dir, best_epoch, best_f1, history, test_metrics)


def load_teacher(folder: str, labels: list[str]) -> LoadedModel:
    """A teacher's model folder, if it has every label the student learns."""
    teacher = load_model_folder(folder)
    missing = sorted(set(labels) - set(teacher.labels))
    if missing:
        raise ValueError(f"teacher {folder} lacks the labels {missing}")
    return teacher


def teacher_targets(teachers: list[LoadedModel], utterances: list, labels: list[str],
                    cache_dir, workers: int) -> torch.Tensor:
    """(utterances, labels): the teachers' calibrated probabilities of each utterance's
    clean audio, averaged; each teacher reads its own features (its mel settings,
    speaker profiles over the utterances of each speaker)."""
    total = torch.zeros(len(utterances), len(labels))
    for teacher in teachers:
        scored = score_utterances(teacher, utterances, cache_dir=cache_dir, workers=workers)
        if len(scored.utterances) != len(utterances):
            raise ValueError(f"teacher {teacher.name}: {len(scored.failures)} training "
                             "utterances are unreadable for its features")
        total += torch.as_tensor(scored.probs[:, [teacher.labels.index(x) for x in labels]],
                                 dtype=torch.float32)
    return total / len(teachers)


def calibrate(inference: Inference, val_data: Features, val_targets: np.ndarray) -> dict:
    """Temperature scaling fitted on the validation speakers' clips (each clip a sample, as
    each scored segment of a call is one); an empty validation set leaves T = 1."""
    logits, owners = inference.clip_logits(val_data.mels[CLEAN], val_data.speakers())
    if not len(logits):
        return {"temperature": 1.0, "fitted_on": "nothing (no validation speakers)"}
    targets = val_targets[owners]
    temperature = fit_temperature(logits, targets)
    return {"temperature": temperature, "method": "temperature scaling",
            "fitted_on": f"validation speakers, {len(targets)} clips",
            "val_ece_before": expected_calibration_error(softmax(logits), targets),
            "val_ece_after": expected_calibration_error(softmax(logits, temperature), targets)}


def _known_labels(data: Features, label_id: dict[str, int]) -> Features:
    """Drop utterances whose label the model does not have (e.g. absent from training)."""
    keep = [i for i, u in enumerate(data.utterances) if u.label in label_id]
    if len(keep) < len(data.utterances):
        log.warning("%d utterances carry labels unseen in training and are not scored",
                    len(data.utterances) - len(keep))
    return Features([data.utterances[i] for i in keep],
                    {v: [m[i] for i in keep] for v, m in data.mels.items()}, data.failures)


def validation_variants(utterances: list, config: TrainConfig) -> dict[str, Variant]:
    """The clean audio (under CLEAN) and each of config.val_channels' conditions by name
    (babble made of the validation speakers, never an utterance's own voice)."""
    needs_babble = any(condition_line(name).noise == "babble" for name in config.val_channels)
    babble = babble_bank(utterances, config.mel.sample_rate, config.seed) \
        if needs_babble else None
    return {CLEAN: clean(), **{name: condition_variant(name, babble)
                               for name in config.val_channels}}


def channel_mix(data: Features, variants: list[str]) -> list[torch.Tensor]:
    """Each utterance's features through one of the named variants, picked by its path (so
    the mix is the same every epoch and run, whatever the order); clean without any."""
    if not variants:
        return data.mels[CLEAN]
    picks = [int(hashlib.sha1(u.path.encode()).hexdigest(), 16) % len(variants)
             for u in data.utterances]
    return [data.mels[variants[k]][i] for i, k in enumerate(picks)]


def _validation_metrics(mels: list[torch.Tensor], speakers: list, targets: np.ndarray,
                        labels: list[str], inference: Inference) -> dict:
    if not mels:
        return {"val_macro_f1": 0.0, "val_ua": 0.0, "val_wa": 0.0}
    probs = inference.utterances(mels, speakers=speakers).probs
    m = classification_metrics(targets, probs.argmax(1), labels)
    return {"val_macro_f1": m["macro_f1"], "val_ua": m["ua"], "val_wa": m["wa"]}


def _brief(metrics: dict, split_description: str) -> dict:
    return {"split": split_description,
            **{k: metrics[k] for k in ("ua", "wa", "macro_f1", "weighted_f1", "n")}}
