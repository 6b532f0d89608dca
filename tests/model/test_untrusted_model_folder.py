"""A model folder from a stranger (callmood/model/folder.py, callmood/model/predict.py): what is
wrong with it is refused in one line naming the file, before it can hang, fill memory or
leave NaN scores. `callmood predict`, `score` and `live` all load through this."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from callmood.model.folder import (
    ModelFolderError,
    ModelOutputError,
    load_model_folder,
)
from callmood.model.predict import predict_files

CALLMOOD = str(Path(sys.executable).parent / "callmood")
JSON_FILES = ["config.json", "preprocessor_config.json", "callmood.json"]

# Loads each folder named on its command line in a process limited to 3 GiB of address
# space, one line per folder: a regression that fills memory fails there (MemoryError),
# one that hangs fails by the caller's timeout; neither takes the test run with it.
LOAD_EACH = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from callmood.model.folder import ModelFolderError, load_model_folder
for folder in sys.argv[1:]:
    try:
        load_model_folder(folder)
        print("loaded", flush=True)
    except ModelFolderError as err:
        print(err, flush=True)
"""


def load_in_child(folders: list[Path]) -> list[str]:
    done = subprocess.run([sys.executable, "-c", LOAD_EACH, *map(str, folders)],
                          capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == len(folders), done.stderr[-3000:]
    return lines


def copy_of(tiny_model_dir: Path, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(tiny_model_dir, folder)
    return folder


def edit_json(path: Path, change) -> None:
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


def edit_weights(folder: Path, change) -> None:
    state = load_file(folder / "model.safetensors")
    change(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def refusal(folder: Path) -> str:
    """The one-line message load_model_folder refuses `folder` with."""
    with pytest.raises(ModelFolderError) as err:
        load_model_folder(folder)
    message = str(err.value)
    assert "\n" not in message and len(message) < len(str(folder)) + 300, message[:1000]
    return message


def replace_with_special_file(path: Path, kind: str) -> None:
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")


SPECIAL_FILE_KINDS = {"fifo": "a FIFO", "zero": "a character device"}


# --- item 8: non-finite weights, statistics and scores

def overflowing(state: dict) -> None:
    """Finite weights whose logits overflow float32 whatever the input: the folder loads,
    its scores are NaN."""
    state["vit.layernorm.weight"].fill_(3e38)
    state["classifier.weight"].fill_(3e38)


def nan_bias(state: dict) -> None:
    state["classifier.bias"][0] = float("nan")


def infinite_cls_token(state: dict) -> None:
    state["vit.embeddings.cls_token"].fill_(float("-inf"))


def bias_beyond_float32(state: dict) -> None:
    """Finite in the file, infinite once loaded into the float32 model."""
    state["classifier.bias"] = torch.full((4,), 1e300, dtype=torch.float64)


@pytest.mark.parametrize(("change", "tensor"), [
    (nan_bias, "classifier.bias"), (infinite_cls_token, "vit.embeddings.cls_token"),
    (bias_beyond_float32, "classifier.bias")])
def test_non_finite_weights_are_refused(tiny_model_dir, tmp_path, change, tensor):
    folder = copy_of(tiny_model_dir, tmp_path, "broken")
    edit_weights(folder, change)
    assert refusal(folder) == (f"{folder}/model.safetensors: NaN or infinite values in 1 "
                               f"tensor(s): {tensor}")


@pytest.mark.parametrize("statistics", [{"std": 0}, {"std": float("nan")},
                                        {"mean": float("inf")}, {"std": "wide"}])
def test_zero_or_non_finite_statistics_are_refused(tiny_model_dir, tmp_path, statistics):
    folder = copy_of(tiny_model_dir, tmp_path, "broken")
    edit_json(folder / "preprocessor_config.json",
              lambda p: p["normalization"].update(statistics))
    assert refusal(folder).startswith(f"{folder}/preprocessor_config.json: normalization "
                                      "needs a finite mean and a finite std > 0")


def test_non_finite_scores_are_an_error_not_a_row(tiny_model_dir, tmp_path, write_wav):
    folder = copy_of(tiny_model_dir, tmp_path, "overflowing")
    edit_weights(folder, overflowing)
    model = load_model_folder(folder)
    with pytest.raises(ModelOutputError, match="gave non-finite scores") as err:
        model.predict_mels(torch.full((2, model.mel.n_mels, model.mel.input_frames), -6.0))
    assert err.value.kind == "model"
    wav = str(write_wav("a.wav"))
    row, = predict_files(model, [wav])
    assert row == {"file": wav, "error": f"{wav}: {err.value.detail}", "error_kind": "model"}


def test_predict_reports_non_finite_scores_as_a_failed_file_in_valid_json(
        tiny_model_dir, tmp_path, write_wav):
    folder = copy_of(tiny_model_dir, tmp_path, "overflowing")
    edit_weights(folder, overflowing)
    wav = str(write_wav("a.wav"))
    done = subprocess.run([CALLMOOD, "predict", "--format", "jsonl", "--model", str(folder),
                           wav], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    row, = [json.loads(line, parse_constant=refuse) for line in done.stdout.splitlines()]
    assert row["file"] == wav and row["error_kind"] == "model"
    assert "non-finite scores" in row["message"]


# --- item 10: JSON files that never end or block

def test_json_files_that_are_fifos_or_links_to_dev_zero_are_refused(tiny_model_dir, tmp_path):
    cases = [(name, kind) for name in JSON_FILES for kind in SPECIAL_FILE_KINDS]
    folders = []
    for name, kind in cases:
        folders.append(copy_of(tiny_model_dir, tmp_path, f"{kind}-{name}"))
        replace_with_special_file(folders[-1] / name, kind)
    for folder, (name, kind), line in zip(folders, cases, load_in_child(folders), strict=True):
        assert line == f"{folder}/{name}: not a regular file ({SPECIAL_FILE_KINDS[kind]})"


@pytest.mark.parametrize(("name", "size"), [*[(name, 2 << 20) for name in JSON_FILES],
                                            ("model.safetensors", 3 << 30)])
def test_an_oversized_file_is_refused(tiny_model_dir, tmp_path, name, size):
    folder = copy_of(tiny_model_dir, tmp_path, "big")
    with open(folder / name, "r+b") as f:
        f.truncate(size)  # sparse: no disk space, no time
    assert refusal(folder).startswith(f"{folder}/{name}: {size:,} bytes, more than the ")


def test_predict_refuses_a_fifo_config_in_one_line(tiny_model_dir, tmp_path, write_wav):
    folder = copy_of(tiny_model_dir, tmp_path, "fifo")
    replace_with_special_file(folder / "config.json", "fifo")
    done = subprocess.run([CALLMOOD, "predict", "--model", str(folder),
                           str(write_wav("a.wav"))], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == \
        f"Error: {folder}/config.json: not a regular file (a FIFO)"


# --- item 11: sizes bounded before anything is built

def test_oversized_settings_are_refused_before_anything_is_allocated(tiny_model_dir, tmp_path):
    cases = {  # name: (config.json changes, mel changes, message)
        "image-24576": ({"image_size": [24576, 24576]},
                        {"n_mels": 24576, "input_frames": 24576},
                        "preprocessor_config.json: n_mels must be a positive integer of at "
                        "most 512, got 24576"),
        "image-2**20": ({"image_size": [2**20, 2**20]}, {"n_mels": 2**20, "input_frames": 2**20},
                        "preprocessor_config.json: n_mels must be a positive integer of at "
                        "most 512, got 1048576"),
        "n_fft-2**30": ({}, {"n_fft": 2**30},
                        "preprocessor_config.json: n_fft must be a positive integer of at "
                        "most 4096, got 1073741824"),
        "labels-10**7": ({"num_labels": 10**7}, {},
                         "config.json: num_labels 10000000 differs from the 4 labels of "
                         "id2label"),
    }
    folders = []
    for name, (config, mel, _) in cases.items():
        folders.append(copy_of(tiny_model_dir, tmp_path, name))
        edit_json(folders[-1] / "config.json", lambda c, config=config: c.update(config))
        edit_json(folders[-1] / "preprocessor_config.json", lambda p, mel=mel: p["mel"].update(mel))
    for folder, (*_, message), line in zip(folders, cases.values(), load_in_child(folders),
                                           strict=True):
        assert line == f"{folder}/{message}"


@pytest.mark.parametrize(("config", "mel", "wrong"), [
    ({"image_size": [64, 320]}, {"input_frames": 320},
     "vit.embeddings.position_embeddings (1, 81, 64) in config.json, (1, 41, 64) in the weights"),
    ({"patch_size": 8}, {}, "vit.embeddings.patch_embeddings.projection.weight (64, 1, 8, 8) in "
                            "config.json, (64, 1, 16, 16) in the weights"),
    ({"num_channels": 3}, {}, "vit.embeddings.patch_embeddings.projection.weight (64, 3, 16, 16) "
                              "in config.json, (64, 1, 16, 16) in the weights"),
])
def test_every_size_the_config_gives_is_checked_against_the_weights(tiny_model_dir, tmp_path,
                                                                     config, mel, wrong):
    folder = copy_of(tiny_model_dir, tmp_path, "resized")
    edit_json(folder / "config.json", lambda c: c.update(config))
    edit_json(folder / "preprocessor_config.json", lambda p: p["mel"].update(mel))
    assert refusal(folder).startswith(f"{folder}: config.json does not describe the weights: "
                                      f"{wrong}")


# --- item 22: every problem one line naming the file

@pytest.mark.parametrize(("name", "write", "problem"), [
    ("config.json", lambda p: p.write_text("[1, 2]"), "must hold a JSON object, not a list"),
    ("config.json", lambda p: p.write_bytes(b"\xff\xfe{}"), "not UTF-8 text"),
    ("config.json", lambda p: p.write_text("[" * 100_000), "invalid JSON"),
    ("config.json", lambda p: edit_json(p, lambda c: c.update(image_size=64)),
     "image_size"),
    ("preprocessor_config.json",
     lambda p: edit_json(p, lambda v: v["mel"].update(hop_length=0)),
     "hop_length must be a positive integer"),
    *[("callmood.json",
       lambda p, t=t: edit_json(p, lambda c: c.update(calibration={"temperature": t})),
       "calibration temperature must be a finite number > 0") for t in (0, -1, "hot")],
    *[("model.safetensors", lambda p, kind=kind: replace_with_special_file(p, kind),
       f"not a regular file ({description})")
      for kind, description in SPECIAL_FILE_KINDS.items()],
], ids=["array", "not-utf8", "nested", "image_size-int", "hop-0", "temperature-0",
        "temperature-negative", "temperature-hot", "weights-fifo", "weights-dev-zero"])
def test_bad_files_and_values_are_refused_in_one_line_naming_the_file(
        tiny_model_dir, tmp_path, name, write, problem):
    folder = copy_of(tiny_model_dir, tmp_path, "bad")
    write(folder / name)
    message = refusal(folder)
    assert message.startswith(f"{folder}/{name}: ") and problem in message


@pytest.mark.parametrize("count", [50_000, 1_000_000])
def test_many_labels_give_a_short_error_line(tiny_model_dir, tmp_path, count):
    folder = copy_of(tiny_model_dir, tmp_path, "labels")
    edit_json(folder / "callmood.json",
              lambda c: c.update(labels=[f"label{i}" for i in range(count)]))
    assert "callmood.json" in refusal(folder)  # refusal() checks it is one short line
