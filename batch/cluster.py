"""The nightly job on a Dask cluster (`--backend dask --scheduler tcp://host:8786`): the
run connects to the scheduler and ships the model folder to the workers, so a worker
needs no copy of it; only the recordings must be where the workers can read them (an
object store, or a shared path mounted at the same place).

The model travels as its folder's files (safetensors and JSON, never a pickle of torch
objects) inside a worker plugin. The scheduler keeps the plugin for the run and gives it
to every worker, one that joins or is restarted mid-run too; each worker writes the
files to its own local directory and loads them once. Plugin, folder and loaded model
are named after the run's client (`callmood-model-<client id>`), and the tasks ask for
the model by that name, so runs that share a cluster (two teams' nights, two models, or
two machines' different folders at the same path) never replace or remove each other's
model. At the end of the run its plugin is removed, and the workers' copies with it; a
run whose client was killed cannot do that, so the next run removes the plugins of
clients the scheduler no longer knows.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from distributed import Client, WorkerPlugin

from callmood.batch.worker import forget_model, install_model
from callmood.model.folder import folder_files, load_model_folder
from callmood.results.store import ResultsError

PLUGIN = "callmood-model"  # a run's plugin is f"{PLUGIN}-{its client's id}"


class ShippedModel(WorkerPlugin):
    """A model folder's files, loaded on each worker as the model called `name`."""

    def __init__(self, model_dir: str, name: str):
        self.name = name
        self.files = {file: (Path(model_dir) / file).read_bytes()
                      for file in folder_files(model_dir)}
        self.folder: Path | None = None

    def setup(self, worker) -> None:
        self.folder = Path(worker.local_directory) / self.name
        for file, data in self.files.items():
            (self.folder / file).parent.mkdir(parents=True, exist_ok=True)
            (self.folder / file).write_bytes(data)
        install_model(self.name, load_model_folder(self.folder))

    def teardown(self, worker) -> None:
        forget_model(self.name)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _remove_orphaned_models(client: Client) -> None:
    """Unregister the model plugins of runs whose client is gone (killed before its end):
    otherwise each would stay loaded on every worker, and be loaded by every worker that
    joins, for as long as the scheduler runs."""
    prefix = f"{PLUGIN}-"

    def orphaned(dask_scheduler) -> list[str]:  # a local function travels by value: the
        # scheduler need not be able to import callmood
        return [name for name in dask_scheduler.worker_plugins if name.startswith(prefix)
                and name.removeprefix(prefix) not in dask_scheduler.clients]

    for name in client.run_on_scheduler(orphaned):
        with contextlib.suppress(ValueError):  # removed by another run meanwhile
            client.unregister_worker_plugin(name)


@contextlib.contextmanager
def cluster(scheduler: str, model_dir: str) -> Iterator[str]:
    """Connected to the scheduler at `scheduler`, whose workers all hold the model folder
    `model_dir` for as long as the block runs; yields the name the tasks give
    worker.cached_model for it (the run's own)."""
    try:
        client = Client(scheduler, timeout="10s")
    except OSError as err:
        raise ResultsError(f"cannot reach the Dask scheduler at {scheduler} ({err})"
                           ) from None
    with client:
        _remove_orphaned_models(client)
        name = f"{PLUGIN}-{client.id}"
        try:
            client.register_plugin(ShippedModel(model_dir, name), name=name)
            yield name
        finally:  # a scheduler gone meanwhile must not hide what ended the run
            with contextlib.suppress(Exception):
                client.unregister_worker_plugin(name)
