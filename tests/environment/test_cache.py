import io
import tarfile

import pytest

from runctl.environment import cache
from runctl.errors import IntegrityError, StoreError
from runctl.store import layout
from runctl.store.local import LocalStore


def _env(folder):
    (folder / "venv" / "bin").mkdir(parents=True)
    (folder / "venv" / "lib.py").write_text("x = 1\n")
    (folder / "venv" / "bin" / "python").symlink_to("/usr/bin/python3")
    (folder / cache.MARK).write_text("{}")
    return folder


def test_upload_then_restore_elsewhere(tmp_path):
    store = LocalStore(tmp_path / "store")
    built = _env(tmp_path / "a" / "k1")
    sent = cache.upload(store, "k1", built, tmp_path / "a" / ".upload", {"build_seconds": 3.0})
    assert sent.stored and sent.size > 0
    assert not list((tmp_path / "a" / ".upload").iterdir())  # the archive is not left behind
    record = cache.read_record(store, "k1")
    assert record["key"] == "k1" and record["build_seconds"] == 3.0
    target = tmp_path / "b" / "k1"
    cache.restore(store, "k1", record, target)
    assert (target / "venv" / "lib.py").read_text() == "x = 1\n"
    assert (target / "venv" / "bin" / "python").readlink().as_posix() == "/usr/bin/python3"
    assert not (target / cache.MARK).exists()  # the restore writes its own
    assert [p.name for p in target.parent.iterdir()] == ["k1"]  # no temporary left


def test_the_machines_runctl_link_is_not_archived_and_linked_folders_stay_links(tmp_path):
    store = LocalStore(tmp_path / "store")
    built = _env(tmp_path / "a" / "k")
    site = built / "venv" / "lib" / "python3" / "site-packages"
    site.mkdir(parents=True)
    (site / "_runctl_in_script_api.pth").write_text("/somewhere\n")
    (built / "runctl-link").mkdir()
    (built / "venv" / "lib64").symlink_to("lib")
    cache.upload(store, "k", built, tmp_path / "up", {})
    target = tmp_path / "b" / "k"
    cache.restore(store, "k", cache.read_record(store, "k"), target)
    assert (target / "venv" / "lib64").readlink().as_posix() == "lib"
    assert (target / "venv" / "lib" / "python3" / "site-packages").is_dir()
    assert not (target / "runctl-link").exists()
    assert not list(target.rglob("_runctl_in_script_api.pth"))


def test_second_upload_is_dropped(tmp_path):
    store = LocalStore(tmp_path / "store")
    built = _env(tmp_path / "k")
    assert cache.upload(store, "k", built, tmp_path / "up", {}).stored
    assert not cache.upload(store, "k", built, tmp_path / "up", {}).stored


def test_no_record_no_cache(tmp_path):
    assert cache.read_record(LocalStore(tmp_path / "store"), "nope") is None


def test_archive_not_matching_its_record_is_refused(tmp_path):
    store = LocalStore(tmp_path / "store")
    cache.upload(store, "k", _env(tmp_path / "k"), tmp_path / "up", {})
    record = {**cache.read_record(store, "k"), "sha256": "0" * 64}
    with pytest.raises(IntegrityError, match="does not match its record"):
        cache.restore(store, "k", record, tmp_path / "b" / "k")
    assert not (tmp_path / "b" / "k").exists()


@pytest.mark.parametrize("name", ["../evil", "/abs/evil"])
def test_members_escaping_the_folder_are_refused(tmp_path, name):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(IntegrityError, match="refusing member"):
        cache.unpack(archive, tmp_path / "out")
    assert not (tmp_path / "evil").exists()


def test_a_broken_archive_is_a_store_error(tmp_path):
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(b"not a tar")
    with pytest.raises(StoreError, match="cannot unpack"):
        cache.unpack(archive, tmp_path / "out")


def test_record_that_is_not_json(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.write(layout.env_record_key("k"), b"{")
    with pytest.raises(IntegrityError, match="not JSON"):
        cache.read_record(store, "k")
