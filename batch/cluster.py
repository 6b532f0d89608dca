"""The nightly job on a Dask cluster (`--backend dask --scheduler tcp://host:8786`): the
run connects to the scheduler and ships the model folder to the workers, so a worker
needs no copy of it; only the recordings must be where the workers can read them (an
object store, or a shared path mounted at the same place).

The model travels as its folder's files (safetensors and JSON, never a pickle of torch
objects) inside a worker plugin. The scheduler keeps the plugin for the run and gives it
to every worker, one that joins or is restarted mid-run too; each worker writes the
files to its own local directory and loads them once, under the name the tasks use for
the model (the client's folder), so `worker.cached_model` finds it without a disk of
the client's. At the end of the run the plugin is removed, and the workers' copies with
it.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from distributed import Client, WorkerPlugin

from callmood.batch.worker import forget_model, install_model
from callmood.model.folder import CARD, CONFIG, PREPROCESSOR, WEIGHTS, load_model_folder
from callmood.results.store import ResultsError

PLUGIN = "callmood-model"


class ShippedModel(WorkerPlugin):
    """A model folder's files, loaded on each worker as the model named `model_dir`."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.files = {name: (Path(model_dir) / name).read_bytes()
                      for name in (CONFIG, WEIGHTS, PREPROCESSOR, CARD)}
        self.folder: Path | None = None

    def setup(self, worker) -> None:
        self.folder = Path(worker.local_directory) / PLUGIN
        shutil.rmtree(self.folder, ignore_errors=True)  # a former run's model
        self.folder.mkdir(parents=True)
        for name, data in self.files.items():
            (self.folder / name).write_bytes(data)
        install_model(self.model_dir, load_model_folder(self.folder))

    def teardown(self, worker) -> None:
        forget_model(self.model_dir)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def cluster(scheduler: str, model_dir: str) -> Iterator[Client]:
    """A client of the scheduler at `scheduler` whose workers all hold the model folder
    `model_dir` for as long as the block runs."""
    try:
        client = Client(scheduler, timeout="10s")
    except OSError as err:
        raise ResultsError(f"cannot reach the Dask scheduler at {scheduler} ({err})"
                           ) from None
    with client:
        client.register_plugin(ShippedModel(model_dir), name=PLUGIN)
        try:
            yield client
        finally:  # a scheduler gone meanwhile must not hide what ended the run
            with contextlib.suppress(Exception):
                client.unregister_worker_plugin(PLUGIN)
