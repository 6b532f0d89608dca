"""`callmood score`: score every new or changed call under the inputs into a results folder.

Each file is one task for joblib (local processes, or a Dask cluster through joblib's
dask backend): decode, find speech, log-mels, and the model's probabilities, all in the
worker. The model is most of the work, so it runs where the parallelism is: each worker
loads the model folder once and scores its file's windows in batches with one torch
thread, and throughput grows with the number of workers. Workers return only the
windows and their probabilities; the main process builds the rows and writes them, one
call at a time, as results arrive.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import joblib
import numpy as np

from callmood.batch.ledger import claim_call_ids, to_score
from callmood.batch.scan import AUDIO_PATTERNS, CallFile, input_root, scan
from callmood.batch.worker import cached_model, score_file
from callmood.model.calibration import adapt_priors
from callmood.progress import progress as progress_bar
from callmood.results.call_summary import CallAnalytics
from callmood.results.location import is_url, shown
from callmood.results.meta import source_zone
from callmood.results.scored import ScoredCall
from callmood.results.store import ResultsStore, is_compacted, partition_of
from callmood.results.writer import (
    LIVE_WRITE_S,
    CallWriter,
    ModelStamp,
    RunSummary,
    claim_labels,
    now,
    scored_live,
    write_spooled_calls,
)
from callmood.signal.audio import AudioError, probe
from callmood.signal.features import CLIP_OVERLAP
from callmood.signal.segment import VadConfig
from callmood.workers import workers_die_with_this_process

CONFIG = "score_config.json"


@dataclass(frozen=True)
class ScoreConfig:
    """Settings of a scoring run; saved beside the results as score_config.json."""

    workers: int = 1
    backend: str = "loky"  # loky (local processes) | dask
    scheduler: str | None = None  # Dask scheduler address, with backend="dask"
    batch_size: int = 32
    precision: str = "fp32"  # fp32 | bf16 (autocast; fast on CPUs with AVX512-BF16 or AMX)
    overlap: float = CLIP_OVERLAP  # of the clip, between windows of a long speech region
    max_hours: float = 6.0  # longer files are recorded as errors, not decoded
    file_minutes: float = 60.0  # a file still not scored after this is an error row
    rescore: bool = False
    include: tuple[str, ...] = AUDIO_PATTERNS
    exclude: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()
    follow_links: bool = False  # links to files and folders outside the inputs
    # the recorders' zone: times in paths and sidecar times without an offset are local
    # times there (IANA name); results hold UTC
    source_timezone: str = "UTC"
    # "em": re-estimate the class priors over the run's segments (Saerens et al., 2002) and
    # correct the probabilities for them; the run then writes its calls after the last file
    prior_shift: str = "off"  # off | em
    vad: VadConfig = field(default_factory=VadConfig)
    # call analytics settings over those fitted with the model (--analytics); a run
    # records all it used in score_config.json
    analytics: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.backend not in ("loky", "dask"):
            raise ValueError(f"unknown backend {self.backend!r}; choose loky or dask")
        if self.prior_shift not in ("off", "em"):
            raise ValueError(f"unknown prior shift {self.prior_shift!r}; choose off or em")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"unknown precision {self.precision!r}; choose fp32 or bf16")
        if self.backend == "dask" and not self.scheduler:
            raise ValueError("the dask backend needs a scheduler address")
        source_zone(self.source_timezone)  # a ValueError naming a bad zone
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.workers < 1 or self.batch_size < 1 or self.max_hours <= 0 \
                or self.file_minutes <= 0:
            raise ValueError("workers, batch size, max hours and file minutes must be "
                             "positive")


def _outcomes(todo: list[CallFile], model_dir: str, config: ScoreConfig,
              storage_options: dict | None):
    """ScoredCalls in the order they finish. A Dask worker that dies (killed, out of
    memory) has its files scored again by another: each comes back once."""

    def jobs(model: str):  # a path, or the name of the model the run shipped to Dask
        task = joblib.delayed(score_file)
        return (task(call.path, model, config.vad, config.overlap, config.max_hours * 3600,
                     config.batch_size, config.precision, config.file_minutes * 60,
                     storage_options)
                for call in todo)

    if config.backend == "dask":
        from callmood.batch.cluster import cluster

        with cluster(config.scheduler, model_dir) as model, \
                joblib.parallel_config(backend="dask"):
            yield from joblib.Parallel(n_jobs=-1,
                                       return_as="generator_unordered")(jobs(model))
        return
    with workers_die_with_this_process():
        yield from joblib.Parallel(n_jobs=config.workers,
                                   return_as="generator_unordered")(jobs(model_dir))


def shift_priors(outcomes: list[ScoredCall], labels: list[str]) -> dict[str, float]:
    """Adapt every outcome's probabilities to the class priors EM estimates over all of
    them; the model's training priors are uniform (class-balanced sampling)."""
    stacked = np.concatenate([o.probs for o in outcomes])
    adapted, priors = adapt_priors(stacked, np.full(len(labels), 1.0 / len(labels)))
    start = 0
    for outcome in outcomes:
        outcome.probs = adapted[start:start + len(outcome.probs)].astype(np.float32)
        start += len(outcome.probs)
    return dict(zip(labels, map(float, priors), strict=True))


def _audio_seconds(path: str) -> float:
    try:
        return probe(path).duration_s
    except (AudioError, OSError):
        return 0.0


def _progress(todo: list[CallFile], show: bool):
    """The run's bar, and each file's share of it: hours of audio, from local files'
    headers; bytes, as the scan listed them, when recordings are in an object store (a
    header there costs a request and a ranged read of up to READ_BLOCK bytes per object
    before the first is scored, and the worker reads and checks it anyway)."""
    if any(is_url(call.path) for call in todo):
        shares = {call.path: float(call.size) for call in todo}
        unit = {"unit": "B", "unit_scale": True, "unit_divisor": 1024,
                "bar_format": "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B of "
                              "recordings [{elapsed}<{remaining}{postfix}]"}
    else:
        shares = {call.path: _audio_seconds(call.path) / 3600 for call in todo}
        unit = {"unit": "h", "bar_format": "{desc}: {percentage:3.0f}%|{bar}| "
                                           "{n:.3f}/{total:.3f} h of audio "
                                           "[{elapsed}<{remaining}{postfix}]"}
    return shares, progress_bar(total=sum(shares.values()), disable=not show,
                                desc="scoring", **unit)


def score_calls(inputs: list[str], out: str, model_dir: str, config: ScoreConfig,
                progress: bool = True, storage_options: dict | None = None,
                lease_s: float | None = None) -> RunSummary:
    """Score what is new or changed under `inputs` into the results folder `out`; either
    may be an fsspec URL (`s3://bucket/prefix`), opened with `storage_options` (which are
    never written: score_config.json holds `config` only). `lease_s`: the run lock's
    lease on an object store (results.store.ObjectLock).

    progress: show progress (a bar on a terminal, a line every 30 s in a log).
    """
    clock = time.perf_counter()
    started = now()
    model_dir = str(Path(model_dir).resolve())
    model = cached_model(model_dir)
    stamp = ModelStamp.of(model)
    analytics = CallAnalytics.of_model(model, config.analytics)
    config = replace(config, analytics=asdict(analytics))
    files, rejected, hidden = scan(inputs, config.include, config.exclude, config.metadata,
                                   source_zone(config.source_timezone), config.follow_links,
                                   storage_options)
    summary = RunSummary(f"{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
                         len(files) + len(rejected), hidden_skipped=hidden)
    store = ResultsStore(out, storage_options, **({"lease_s": lease_s} if lease_s else {}))
    with store.lock(LIVE_WRITE_S):
        store.remove_leftovers()
        claim_labels(store, stamp)
        store.write_json(CONFIG, asdict(config))
        store.add_input_roots([shown(item) if is_url(item) else str(input_root(item))
                               for item in inputs])
        manifest = store.manifest()
        store.finish_compaction(manifest)
        write_spooled_calls(store, analytics, manifest)
        live = scored_live(manifest)
        todo = to_score(files, manifest, live, store, config.rescore, storage_options)
        summary.files_unchanged = len(files) - len(todo)  # incl. recordings scored live
        run = CallWriter(store, stamp, analytics, manifest, summary, started,
                         config.rescore)
        run.write_run(0.0, "running")  # stays so if the run is killed
        status = "failed: interrupted"
        for item in rejected:
            run.write_rejected(item)
        try:
            todo = claim_call_ids(todo, manifest, run, storage_options)
            by_path = {call.path: call for call in todo}
            shares, bar = _progress(todo, progress)
            held: list[ScoredCall] = []  # scored files, with prior_shift="em"
            with bar:
                for done, outcome in enumerate(
                        _outcomes(todo, model_dir, config, storage_options), 1):
                    call = by_path[outcome.path]
                    if outcome.error_kind:
                        run.write_failed(call, outcome.error_kind, outcome.error,
                                         outcome.sha256)
                    elif config.prior_shift == "em":
                        held.append(outcome)
                    else:
                        run.write_scored(call, outcome)
                    bar.set_postfix_str(f"files {done}/{len(todo)}", refresh=False)
                    bar.update(shares[call.path])
            if held:
                summary.priors = shift_priors(held, model.labels)
                for outcome in held:
                    run.write_scored(by_path[outcome.path], outcome)
            # merged too: the days of calls whose files no run merged yet (scored live, or
            # by a run killed before its compaction), and of live calls that ended during
            # the run (spooled: the run held the folder)
            loose = {partition_of(part) for entry in run.manifest.values()
                     for part in entry.get("parts", []) if not is_compacted(part)}
            loose |= write_spooled_calls(store, analytics, run.manifest)
            store.compact(run.touched | loose, run.manifest)
            status = "finished"
        except Exception as err:
            status = f"failed: {type(err).__name__}: {err}"
            raise
        finally:
            summary.wall_s = time.perf_counter() - clock
            run.write_run(summary.wall_s, status)
    return summary
