"""The built environment's upload on a thread of its own: best-effort (a failure is logged,
never raised), bounded at the job's end, and never a half archive or a record without one."""

import logging
import threading

from runctl.environment import cache
from runctl.environment.background_upload import BackgroundUpload
from runctl.errors import StoreError
from runctl.store import layout
from runctl.store.local import LocalStore
from runctl.testing.faulty_store import FaultyStore


def _env(folder):
    (folder / "venv").mkdir(parents=True)
    (folder / "venv" / "lib.py").write_text("x = 1\n")
    return folder


def test_it_stores_the_archive_then_its_record(tmp_path):
    store = LocalStore(tmp_path / "store")
    upload = BackgroundUpload(store, "k", _env(tmp_path / "k"), tmp_path / "up", {"build_seconds": 1.0})
    assert upload.finish(timeout=60)
    assert upload.outcome().startswith("cached (")
    assert cache.read_record(store, "k")["build_seconds"] == 1.0


def test_a_failed_upload_is_logged_and_leaves_no_cache(tmp_path, caplog):
    store = FaultyStore(LocalStore(tmp_path / "store"))
    store.inject("upload", key=layout.env_archive_key("k"), when="before", error=StoreError("connection reset"))
    with caplog.at_level(logging.WARNING, logger="runctl.environment.background_upload"):
        upload = BackgroundUpload(store, "k", _env(tmp_path / "k"), tmp_path / "up", {})
        assert upload.finish(timeout=60)
    assert upload.outcome() == "not cached: connection reset"
    assert "not cached: connection reset" in caplog.text
    assert list(store.list("envs/")) == []  # no record written for an archive that is not there
    assert list((tmp_path / "up").iterdir()) == []  # nor a local archive left behind


def test_the_wait_at_the_job_end_is_bounded(tmp_path, caplog):
    release = threading.Event()

    class Stuck(LocalStore):
        def upload(self, *args, **kwargs):
            release.wait(30)
            return super().upload(*args, **kwargs)

    store = Stuck(tmp_path / "store")
    upload = BackgroundUpload(store, "k", _env(tmp_path / "k"), tmp_path / "up", {})
    with caplog.at_level(logging.WARNING, logger="runctl.environment.background_upload"):
        assert not upload.finish(timeout=0.2)
    assert upload.running and upload.outcome() == "still uploading to the store's cache"
    assert "did not end within" in caplog.text
    assert cache.read_record(store, "k") is None  # nothing visible before the archive is complete
    release.set()
    assert upload.finish(timeout=60) and cache.read_record(store, "k") is not None
