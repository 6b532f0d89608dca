"""callmood/digest.py: one sha256 of a file for the manifest and the model version."""

import hashlib

from callmood.digest import file_sha256
from callmood.model.folder import WEIGHTS, default_model_dir, load_model_folder


def test_file_sha256_reads_past_its_first_block(tmp_path):
    data = bytes(range(256)) * 5000  # 1.2 MiB: two blocks
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_model_version_is_the_weights_digest_prefix():
    folder = default_model_dir()
    assert load_model_folder(folder).version == file_sha256(folder / WEIGHTS)[:12]
