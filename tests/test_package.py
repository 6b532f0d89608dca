"""The built package works like the checkout: the working tree's files (as a fresh clone
would have them) are built into an sdist, the wheel is built from that sdist and installed
into a new virtual environment, and its `callmood` runs every command from outside the
checkout. The new environment reuses this one's installed dependencies (torch included)
through a .pth file, so nothing is downloaded."""

from __future__ import annotations

import shutil
import signal
import site
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
from live_fixtures import free_port, start_server, stream_callmood
from processes import wait_for_http
from websockets.sync.client import connect

import callmood
from callmood.model.folder import default_model_dir, load_model_folder

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CALLS = REPO / "sample_calls"


@dataclass
class Installed:
    source_files: list[str]  # the working tree's files, relative to the repository
    sdist: Path
    wheel: Path
    venv: Path

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def callmood(self) -> str:
        return str(self.venv / "bin" / "callmood")


def working_tree_files() -> list[str]:
    """What a commit of the working tree would hold: tracked and untracked files that git
    does not ignore, less those deleted."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, capture_output=True, check=True)
    names = sorted(set(listed.stdout.decode().split("\0")) - {""})
    return [name for name in names if (REPO / name).is_file()]


def build(hook: str, source: Path, out: Path) -> Path:
    """Run the project's build backend (PEP 517) in `source`, without build isolation:
    the backend is the one installed here, so nothing is downloaded."""
    backend = tomllib.loads((source / "pyproject.toml").read_text())["build-system"]
    script = (f"import {backend['build-backend']} as backend; "
              f"print(backend.{hook}({str(out)!r}))")
    done = subprocess.run([sys.executable, "-c", script], cwd=source, capture_output=True,
                          text=True)
    assert done.returncode == 0, f"{hook} failed:\n{done.stderr[-3000:]}"
    return out / done.stdout.strip().splitlines()[-1]


def package_files(source_files: list[str]) -> dict[str, str]:
    """Every file under the folders that pyproject.toml installs as packages, mapped to
    its path inside the wheel (`training/x.py` -> `callmood/training/x.py`)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {folder: package.replace(".", "/")
               for package, folder in config["package-dir"].items()}
    inside = {}
    for name in source_files:
        folder, _, rest = name.partition("/")
        if folder in folders and rest:
            inside[name] = f"{folders[folder]}/{rest}"
    return inside


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("package")
    clone = root / "clone"
    source_files = working_tree_files()
    for name in source_files:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, clone / name)
    sdist = build("build_sdist", clone, root / "dist")
    with tarfile.open(sdist) as archive:
        archive.extractall(root / "unpacked", filter="data")
    wheel = build("build_wheel", root / "unpacked" / sdist.name.removesuffix(".tar.gz"),
                  root / "dist")

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # A plain path line: the dependencies installed here become importable there, but the
    # .pth files in those folders (this checkout's editable install) are not run.
    (Path(purelib) / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"),
                              "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    return Installed(source_files, sdist, wheel, venv)


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """Run from a folder outside the checkout, with nothing of it on the path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    return tmp_path


def run(*command: str, timeout: float = 300) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr[-3000:]}"
    return done.stdout


def test_wheel_and_sdist_carry_every_package_file(installed):
    """Every file of the package folders, data files included, is installed: a file the
    code reads at run time cannot be left out of package data unnoticed."""
    expected = package_files(installed.source_files)
    assert "dashboard/macros.sql" in expected and "callmood/cli.py" in expected
    with zipfile.ZipFile(installed.wheel) as wheel:
        in_wheel = set(wheel.namelist())
    missing = sorted(name for name, inside in expected.items() if inside not in in_wheel)
    assert not missing, f"the wheel lacks {missing}: add them to package data in pyproject.toml"

    top = installed.sdist.name.removesuffix(".tar.gz")
    with tarfile.open(installed.sdist) as sdist:
        in_sdist = {name.removeprefix(f"{top}/") for name in sdist.getnames()}
    missing = sorted(set(expected) - in_sdist)
    assert not missing, f"the sdist lacks {missing}"


def test_version_names_the_package_and_the_bundled_model(installed, elsewhere):
    imported = run(installed.python, "-c", "import callmood; print(callmood.__file__)")
    assert Path(imported.strip()).is_relative_to(installed.venv), \
        f"callmood was imported from {imported.strip()}, not from the installed wheel"

    bundled = load_model_folder(default_model_dir())
    assert run(installed.callmood, "--version").splitlines() == [
        f"callmood {callmood.__version__}",
        f"bundled model: {bundled.name} (weights {bundled.version})"]


def test_score_query_and_predict(installed, elsewhere):
    scored = run(installed.callmood, "score", str(SAMPLE_CALLS), "--out", "results",
                 "--no-progress")
    assert "12 calls scored" in scored and "0 files failed" in scored
    assert "Calls: 12 from" in run(installed.callmood, "query", "results", "--summary")

    table = run(installed.callmood, "predict", str(SAMPLE_CALLS / "audio" / "call-0001.wav"))
    header, row = table.splitlines()
    assert header.split("\t")[:3] == ["file", "emotion", "confidence"]
    assert row.split("\t")[1] in header.split("\t")[3:]


def test_dashboard_serves_its_page_and_stops(installed, elsewhere):
    (elsewhere / "results").mkdir()
    port = free_port()
    with open(elsewhere / "dashboard.log", "w") as log:
        process = subprocess.Popen([installed.callmood, "dashboard", "results",
                                    "--server.port", str(port)], stdout=log, stderr=log)
    page = f"http://127.0.0.1:{port}/"
    try:
        wait_for_http(page, process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, (elsewhere / "dashboard.log").read_text()
    finally:
        process.kill()
        process.wait()
    with pytest.raises(OSError):  # nothing serves on the port any more
        urllib.request.urlopen(page, timeout=1)


def test_live_scores_a_call(installed, elsewhere):
    process, url = start_server(elsewhere, installed.callmood)
    try:
        with connect(url) as ws:
            events = stream_callmood(ws, "call-0001")
        assert events[-1]["type"] == "summary" and events[-1]["call_id"] == "call-0001"
        assert [e for e in events if e["type"] == "segment"]
        process.terminate()
        assert process.wait(timeout=30) == 0, (elsewhere / "server.log").read_text()
    finally:
        process.kill()
        process.wait()
