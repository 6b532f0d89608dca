"""What every benchmark script shares: where things are, the machine record, how results
are written, and the finished cells a stopped benchmark resumes from.

* `ROOT`, `RESULTS`, `RECIPE`: the checkout, benchmarks/results and the bundled model's
  training settings; `DEIT`: DeiT-Tiny's folder within the shared data.
* `shared_default()` / `add_shared_option(parser)`: `--shared`, the shared data folder:
  $CALLMOOD_SHARED, else ../shared beside the checkout (as the tests find it).
* `machine(*packages)`: the one machine record of every report (CPU model, cores,
  platform, Python, the versions of `packages`, the date).
* `write_json(path, report)`: the report with the command line that produced it, written
  atomically (a temporary file renamed over `path`), indented by 2, ending in a newline;
  `write_text` writes any other file (a markdown table) atomically.
* `CellStore`: finished cells (one JSON file each, committed so a fresh clone reuses them),
  plain or kept with the settings they were made with (`load_if_same`);
  `without_added_later(config)` leaves out the training settings added after cells were
  kept where they are off, so that such a cell still counts as made with the same settings.
* `paired_interval(differences)`: the t-interval of a mean of paired differences (a
  lever's or a candidate's against its reference, one per held-out corpus).

The scripts in benchmarks/ are scripts, not a package: each puts its own folder on
sys.path and imports this module as `harness`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path

import soundfile as sf

from callmood.workers import usable_cores

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RECIPE = ROOT / "benchmarks" / "default_model_params.json"  # the bundled model's settings
DEIT = "weights/deit-tiny-in1k"
# Training settings added after cells were kept, left out at their defaults (which turn
# them off) wherever kept settings are compared or name a checkpoint, so that a cell kept
# before a setting existed still counts as made with it off.
ADDED_LATER = (("mel", "spectral_mean"), ("mel", "speaker_mean"), ("mel", "speaker_shift_db"),
               ("mel", "frontend"), ("mel", "prosody_rows"), ("corpus_adversary",),
               ("affect_heads",), ("backbone",), ("val_channels",), ("teachers",),
               ("teacher_weight",), ("augment", "frequency_warp"), ("ema_decay",),
               ("mel", "trim_silence"), ("augment", "speech_margin"))
SHARED_HELP = ("the shared data folder (default: $CALLMOOD_SHARED, else ../shared beside the "
               "repository)")


# ---------------------------------------------------------------- the shared data
def shared_default() -> Path:
    """$CALLMOOD_SHARED if it is set (and not empty), else ../shared beside the checkout."""
    return Path(os.environ.get("CALLMOOD_SHARED") or ROOT.parent / "shared")


def add_shared_option(parser, help: str = SHARED_HELP) -> None:
    """`--shared DIR`, defaulting to shared_default()."""
    parser.add_argument("--shared", type=Path, default=shared_default(), help=help)


# ---------------------------------------------------------------- the machine record
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_version(name: str) -> str | None:
    """The installed version of distribution `name` (None when it is not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return getattr(sys.modules.get(name), "__version__", None)


def machine(*packages: str, **extra) -> dict:
    """Where a benchmark ran: CPU model, usable cores and the machine's count, platform,
    Python, the versions of `packages` (with "torch": its thread count and device too),
    `extra` as given, and the date (UTC)."""
    record = {"cpu": cpu_model(), "cores": usable_cores(), "cpu_count": os.cpu_count(),
              "platform": platform.platform(), "python": platform.python_version()}
    record.update({name: package_version(name) for name in packages})
    if "torch" in packages:
        import torch

        record.update(torch_threads=torch.get_num_threads(),
                      device="cuda" if torch.cuda.is_available() else "cpu")
    record.update(extra)
    record["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return record


# ---------------------------------------------------------------- writing results
def command_line(argv: list[str] | None = None) -> str:
    """The command that is running, as one would type it from the repository root."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv and argv[0] else None
    if script is not None and script.is_relative_to(ROOT):
        argv[0] = str(script.relative_to(ROOT))
    return "python " + shlex.join(argv)


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically: readers (and a run stopped half-way) see the old
    file or the new one, never part of one. Folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # os.open with 0o666 applies the umask, as open() would for `path` itself
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666),
                       "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_wav(path: Path | str, audio, rate: int) -> None:
    """Write float audio to the WAV `path` atomically (a stopped run leaves no half a
    file); its folder must exist."""
    partial = f"{path}.partial.wav"
    sf.write(partial, audio, rate, subtype="FLOAT")
    os.replace(partial, path)


def reading(model, trim_silence: bool):
    """`model` reading each utterance file cut to its speech (trim_silence) or whole,
    whatever it was trained with."""
    return dataclasses.replace(model, mel=dataclasses.replace(model.mel,
                                                              trim_silence=trim_silence))


def write_json(path: Path, report: dict, command: str | None = None) -> Path:
    """A benchmark's report: "command" (the command line that produced it, unless given)
    first, then `report`; indented by 2, a trailing newline, written atomically."""
    data = {"command": command or command_line(),
            **{k: v for k, v in report.items() if k != "command"}}
    return write_text(path, json.dumps(data, indent=2) + "\n")


def paired_interval(differences: list[float], level: float = 0.95) -> dict:
    """The t-interval of the mean of independent paired differences ({"interval": [low,
    high]}; from three pairs on, none below or where all are equal): one per held-out
    corpus, a candidate's figure minus its reference's. Training noise moves single cells
    by as much as most levers (ablation: baseline-fp32 against baseline, up to 0.12), and
    pairing by held-out corpus takes out the corpora's differences, so it is the paired
    differences' own spread that says whether a mean difference is a result."""
    import numpy as np
    import scipy.stats

    if len(differences) < 3 or np.ptp(differences) == 0:  # too few, or no spread to read
        return {}
    half = scipy.stats.t.ppf(0.5 + level / 2, len(differences) - 1) \
        * np.std(differences, ddof=1) / np.sqrt(len(differences))
    mean = float(np.mean(differences))
    return {"interval": [round(float(mean - half), 4), round(float(mean + half), 4)]}


def read_json(path: Path, default=None):
    """A report or cell written earlier, or `default` when there is none."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else default


# ---------------------------------------------------------------- resumable cells
def without_added_later(config: dict) -> dict:
    """A TrainConfig's settings (to_dict() or as JSON keeps them) as JSON keeps them
    (tuples are lists), without ADDED_LATER's settings where they are off."""
    from callmood.training.train import TrainConfig

    out = json.loads(json.dumps(config, default=str))
    defaults = json.loads(json.dumps(TrainConfig().to_dict(), default=str))
    for *parents, name in ADDED_LATER:
        holder, off = out, defaults
        for key in parents:
            holder, off = holder.get(key, {}), off[key]
        if holder.get(name, off[name]) == off[name]:
            holder.pop(name, None)
    return out


class CellStore:
    """Finished cells of a resumable benchmark, `<folder>/<name>.json` each.

    The files are committed, so a fresh clone picks up where the last run was; they are
    written atomically, so a run stopped while writing never leaves half a cell. Their
    format is fixed by the committed cells: `json.dumps(cell, indent=indent)`, no trailing
    newline; `save_with_settings` keeps {"settings": ..., "result": ...}, and
    `load_if_same` returns the result only if it was made with the same settings.
    """

    def __init__(self, folder: Path, indent: int | None = 1):
        self.folder = Path(folder)
        self.indent = indent

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.json"

    def has(self, name: str) -> bool:
        return self.path(name).is_file()

    def load(self, name: str) -> dict | None:
        return read_json(self.path(name))

    def save(self, name: str, cell: dict) -> Path:
        return write_text(self.path(name), json.dumps(cell, indent=self.indent))

    def load_if_same(self, name: str, settings: dict) -> dict | None:
        """The kept result of `name` if it was made with `settings` (compared as JSON
        stores them: tuples are lists), else None."""
        kept = self.load(name)
        if kept is None or kept["settings"] != json.loads(json.dumps(settings)):
            return None
        return kept["result"]

    def save_with_settings(self, name: str, settings: dict, result: dict) -> Path:
        return self.save(name, {"settings": settings, "result": result})

    def clear(self) -> None:
        """Forget every kept cell (a fresh start)."""
        shutil.rmtree(self.folder, ignore_errors=True)
