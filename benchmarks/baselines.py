"""Baseline rows of benchmarks/bench_ravdess.py: what callmood is compared against.

  row 2, the image pipeline callmood replaces: a librosa mel spectrogram rendered to an
         8-bit picture, resized to 224x224 RGB, and DeiT-Tiny fine-tuned on it as an
         ImageNet ViT with the defaults people keep (AdamW 5e-5, linear decay, batch 8, no
         augmentation), early-stopped on validation macro-F1;
  row 4, the classical baseline: MFCC (a DCT of callmood's log-mel) + deltas + energy and
         pitch statistics -> standardised RBF SVM, C chosen by speaker-grouped CV.

Both take the fold's split, its labels and bench_ravdess's arguments (shared, work, seed,
epochs, patience, precision, cache_dir) and return the cell's figures. level_cue.py uses
row 2's picture (picture_db, render_image) to measure what it sees of a clip's level.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import torch

from callmood.signal.features import MelConfig
from callmood.training.cache import extract
from callmood.training.evaluate import classification_metrics
from callmood.training.model import timm_to_hf, vit_config

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: the harness
from harness import DEIT  # noqa: E402


# ---------------------------------------------------------------- row 2: image pipeline
def picture_db(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """The picture before 8-bit scaling: librosa mel power in dB below the clip's peak,
    floored by librosa's defaults at 80 dB below the peak or at an absolute power of 1e-10,
    whichever is higher (a quiet take's digital silence reaches the absolute one first)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=waveform, sr=sample_rate, n_mels=128)
    return librosa.power_to_db(mel, ref=np.max)


def render_image(waveform: np.ndarray, sample_rate: int):
    """As usually written: librosa mel in dB -> 8-bit picture -> 224x224 RGB."""
    from PIL import Image

    db = picture_db(waveform, sample_rate)
    pixels = (255 * (db - db.min()) / max(db.max() - db.min(), 1e-6)).astype(np.uint8)
    picture = Image.fromarray(pixels[::-1]).resize((224, 224), Image.BILINEAR).convert("RGB")
    return np.asarray(picture)


def image_tensor(images: np.ndarray) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    x = torch.as_tensor(images).permute(0, 3, 1, 2).float() / 255
    return (x - mean) / std


def imagenet_vit(shared: Path, labels: list[str]):
    """DeiT-Tiny as an ordinary 224x224 RGB ViTForImageClassification."""
    from safetensors.torch import load_file
    from transformers import ViTForImageClassification

    weights = load_file(str(shared / DEIT / "model.safetensors"))
    image = MelConfig(n_mels=224, input_frames=224, f_max=8000.0)
    config = vit_config(image, labels, 192, 12, 3, 768)
    config.num_channels = 3
    model = ViTForImageClassification(config)
    state = timm_to_hf(weights, 12, (14, 14))
    state["vit.embeddings.patch_embeddings.projection.weight"] = weights["patch_embed.proj.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("classifier.") for k in missing)
    return model


def image_row(split, labels, args) -> dict:
    from callmood.signal.audio import load_mono

    def images(utterances):
        return np.stack([render_image(load_mono(u.path, 16000), 16000) for u in utterances])

    label_id = {label: i for i, label in enumerate(labels)}
    cache = args.work / "images"
    cache.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, part in (("train", split.train), ("val", split.val), ("test", split.test)):
        # hashlib, not hash(): str hashes change from process to process
        names = "|".join(u.path for u in part).encode()
        key = cache / f"{hashlib.sha1(names).hexdigest()[:16]}.npy"
        if not key.is_file():
            np.save(key, images(part))
        arrays[name] = np.load(key)
    targets = {name: torch.tensor([label_id[u.label] for u in part]) for name, part in
               (("train", split.train), ("val", split.val), ("test", split.test))}
    torch.manual_seed(args.seed)
    model = imagenet_vit(args.shared, labels)
    # the Trainer defaults people keep: AdamW lr 5e-5, linear decay, batch 8, no augmentation
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    steps = args.epochs * int(np.ceil(len(targets["train"]) / 8))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / steps))

    @torch.inference_mode()
    def predict(x: torch.Tensor) -> np.ndarray:
        model.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            return torch.cat([torch.softmax(model(pixel_values=x[i:i + 64]).logits.float(), -1)
                              for i in range(0, len(x), 64)]).numpy()

    val_x, test_x = image_tensor(arrays["val"]), image_tensor(arrays["test"])
    best_f1, best_state, started, since_best = -1.0, None, time.time(), 0
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(targets["train"]))
        for start in range(0, len(order), 8):
            idx = order[start:start + 8]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                logits = model(pixel_values=image_tensor(arrays["train"][idx.numpy()])).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), targets["train"][idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        f1 = classification_metrics(targets["val"].numpy(), predict(val_x).argmax(1),
                                    labels)["macro_f1"]
        print(f"  row 2 epoch {epoch + 1}: val macro-F1 {f1:.3f}", flush=True)
        if f1 > best_f1:
            best_f1, best_state, since_best = f1, {k: v.clone() for k, v in
                                                   model.state_dict().items()}, 0
        else:
            since_best += 1
            if since_best >= args.patience:
                break
    wall = time.time() - started
    model.load_state_dict(best_state)
    metrics = classification_metrics(targets["test"].numpy(), predict(test_x).argmax(1),
                                     labels)
    return {"metrics": metrics, "train_wall_s": round(wall, 1), "epochs_run": epoch + 1,
            "predict": predict, "test_x": test_x}


# ---------------------------------------------------------------- row 4: classical
def classical_features(mel: torch.Tensor, waveform: np.ndarray) -> np.ndarray:
    """MFCC (DCT of callmood's log-mel) + deltas, energy and pitch statistics."""
    import librosa
    from scipy.fft import dct

    mfcc = dct(mel.numpy(), type=2, axis=0, norm="ortho")[:20]
    delta = np.diff(mfcc, axis=1)
    energy = mel.exp().sum(0).log().numpy()
    f0 = librosa.yin(waveform, fmin=60, fmax=500, sr=16000, frame_length=1024)
    voiced = f0[(f0 > 60) & (f0 < 500)]
    voiced = voiced if len(voiced) else np.zeros(1)
    stats = [mfcc.mean(1), mfcc.std(1), delta.mean(1), delta.std(1),
             [energy.mean(), energy.std(), np.percentile(energy, 90) - np.percentile(energy, 10),
              np.median(voiced), voiced.std(), np.percentile(voiced, 90), len(voiced) / len(f0)]]
    return np.concatenate([np.ravel(s) for s in stats])


def classical_row(split, labels, args) -> dict:
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from callmood.signal.audio import load_mono

    mel = MelConfig()
    label_id = {label: i for i, label in enumerate(labels)}

    def table(utterances):
        feats = extract(utterances, mel, (), args.cache_dir, 2).mels["clean"]
        return np.stack([classical_features(m, load_mono(u.path, 16000))
                         for m, u in zip(feats, utterances, strict=True)])

    started = time.time()
    train_part = split.train + split.val
    x_train, x_test = table(train_part), table(split.test)
    y_train = np.array([label_id[u.label] for u in train_part])
    y_test = np.array([label_id[u.label] for u in split.test])
    search = GridSearchCV(make_pipeline(StandardScaler(), SVC(kernel="rbf")),
                          {"svc__C": [1, 3, 10, 30], "svc__gamma": ["scale"]},
                          cv=GroupKFold(n_splits=4), scoring="f1_macro")
    search.fit(x_train, y_train, groups=[u.speaker for u in train_part])
    metrics = classification_metrics(y_test, search.predict(x_test), labels)
    return {"metrics": metrics, "train_wall_s": round(time.time() - started, 1),
            "svm_C": search.best_params_["svc__C"]}
