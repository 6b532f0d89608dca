"""`--corpus NAME=PATH`: NAME picks the adapter; unknown names use the generic one."""

from __future__ import annotations

import logging
from pathlib import Path

from callmood.training.corpora import cremad, emodb, generic, ravdess, savee, tess
from callmood.training.corpora.base import CorpusError, Utterance, skip_report

log = logging.getLogger(__name__)

ADAPTERS = {"ravdess": ravdess.scan, "emodb": emodb.scan, "cremad": cremad.scan,
            "tess": tess.scan, "savee": savee.scan}


def parse_corpus_arg(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise CorpusError(f"--corpus expects NAME=PATH (e.g. ravdess=../shared/data/ravdess), "
                          f"got {value!r}")
    return name.lower(), Path(path)


def load_corpus(name: str, path: str | Path) -> list[Utterance]:
    """Scan one corpus; files that do not follow its layout are counted and logged."""
    if name in ADAPTERS:
        utterances, skipped = ADAPTERS[name](path)
    else:
        utterances, skipped = generic.scan(path, name)
    if skipped:
        log.warning(skip_report(name, skipped))
    if not utterances:
        raise CorpusError(f"{path}: no {name} utterances found")
    return utterances


def load_corpora(specs: list[str]) -> list[Utterance]:
    utterances = []
    for spec in specs:
        utterances.extend(load_corpus(*parse_corpus_arg(spec)))
    return utterances
