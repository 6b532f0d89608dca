"""Any other corpus: a folder per label, or a CSV/Parquet manifest `path,label[,speaker]`.

A folder holding `manifest.csv` is read through that manifest (columns beyond
path/label/speaker, e.g. gender, language, source_name, are ignored).

In a folder-per-label layout (`ROOT/<label>/[<speaker>/]file.wav`) the speaker is the
sub-folder below the label when there is one, else unknown (each file its own speaker, so
speaker-independent splits cannot be promised: the split reports say so).
Relative manifest paths are resolved against the manifest's folder.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from callmood.training.corpora.base import CorpusError, Utterance, audio_files


def scan(root: str | Path, name: str = "generic") -> tuple[list[Utterance], list[Path]]:
    root = Path(root)
    if root.is_dir() and (root / "manifest.csv").is_file():
        root = root / "manifest.csv"
    if root.is_file():
        return _from_manifest(root, name), []
    utterances = []
    for path in audio_files(root):
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            raise CorpusError(f"{path}: a folder-per-label corpus keeps files in "
                              "ROOT/<label>/..., not at the top")
        speaker = parts[1] if len(parts) > 2 else f"file:{path.stem}"
        utterances.append(Utterance(str(path), parts[0], f"{name}:{speaker}", name))
    return utterances, []


def _from_manifest(manifest: Path, name: str) -> list[Utterance]:
    try:
        if manifest.suffix.lower() == ".parquet":
            table = pd.read_parquet(manifest)
        else:
            table = pd.read_csv(manifest, dtype=str)
    except (OSError, ValueError) as err:
        raise CorpusError(f"{manifest}: cannot read manifest ({err})") from None
    missing = {"path", "label"} - set(table.columns)
    if missing:
        raise CorpusError(f"{manifest}: manifest lacks column(s) {sorted(missing)}; "
                          "expected path,label[,speaker]")
    utterances = []
    for row_number, row in enumerate(table.itertuples(index=False), start=2):
        path = Path(str(row.path))
        if not path.is_absolute():
            path = manifest.parent / path
        speaker = getattr(row, "speaker", None)
        if speaker is None or pd.isna(speaker) or str(speaker) == "":
            speaker = f"file:{path.stem}"
        if pd.isna(row.label) or str(row.label) == "":
            raise CorpusError(f"{manifest}: row {row_number} has no label")
        utterances.append(Utterance(str(path), str(row.label), f"{name}:{speaker}", name))
    return utterances
