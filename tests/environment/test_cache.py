import hashlib
import io
import tarfile

import pytest

from runctl.environment import cache, stream_unpack
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


@pytest.fixture(params=["gnu tar", "tarfile"])
def unpacker(request, monkeypatch):
    """Both ways to unpack: GNU tar where there is one, Python's tarfile where not."""
    if request.param == "gnu tar" and stream_unpack.gnu_tar() is None:
        pytest.skip("no GNU tar here")
    if request.param == "tarfile":
        monkeypatch.setattr(stream_unpack, "gnu_tar", lambda: None)
    return request.param


def _unpack(archive, folder):
    data = archive.read_bytes()
    stream_unpack.unpack_stream(io.BytesIO(data), folder, archive.name, expect_size=len(data),
                                expect_sha256=hashlib.sha256(data).hexdigest())


def _archive(path, *members):
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
    return path


def _member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, 1 if kind == tarfile.REGTYPE else 0
    return info


def test_both_unpackers_restore_the_same_folder(tmp_path, unpacker):
    store = LocalStore(tmp_path / "store")
    cache.upload(store, "k", _env(tmp_path / "a" / "k"), tmp_path / "up", {})
    target = tmp_path / "b" / "k"
    cache.restore(store, "k", cache.read_record(store, "k"), target)
    assert (target / "venv" / "lib.py").read_text() == "x = 1\n"
    assert (target / "venv" / "bin" / "python").readlink().as_posix() == "/usr/bin/python3"


def test_a_mismatch_found_at_the_end_removes_the_partial_folder(tmp_path, unpacker):
    store = LocalStore(tmp_path / "store")
    cache.upload(store, "k", _env(tmp_path / "k"), tmp_path / "up", {})
    record = {**cache.read_record(store, "k"), "sha256": "0" * 64}
    with pytest.raises(IntegrityError, match="does not match its record"):
        cache.restore(store, "k", record, tmp_path / "b" / "k")
    assert list((tmp_path / "b").iterdir()) == []  # nothing of the unpacked files left


@pytest.mark.parametrize("member", [
    _member("../evil"), _member("/abs/evil"), _member("a/../../evil"),
    _member("hard", tarfile.LNKTYPE, "../evil"), _member("dev", tarfile.CHRTYPE)])
def test_members_escaping_the_folder_or_devices_are_refused(tmp_path, unpacker, member):
    archive = _archive(tmp_path / "bad.tar.gz", _member("ok"), member)
    with pytest.raises(IntegrityError, match="refusing member"):
        _unpack(archive, tmp_path / "x" / "out")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "x" / "evil").exists()


def test_a_symlink_out_is_never_written_through(tmp_path, unpacker):
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = _archive(tmp_path / "bad.tar.gz", _member("link", tarfile.SYMTYPE, str(outside)), _member("link/evil"))
    with pytest.raises((IntegrityError, StoreError)):
        _unpack(archive, tmp_path / "out")
    assert list(outside.iterdir()) == []


def test_a_broken_archive_is_a_store_error(tmp_path, unpacker):
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(b"not a tar")
    with pytest.raises(StoreError, match="cannot unpack"):
        _unpack(archive, tmp_path / "out")


def test_record_that_is_not_json(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.write(layout.env_record_key("k"), b"{")
    with pytest.raises(IntegrityError, match="not JSON"):
        cache.read_record(store, "k")


def test_a_file_that_compresses_very_well_comes_out_whole(tmp_path, unpacker):
    archive = tmp_path / "zeros.tar.gz"
    info = tarfile.TarInfo("zeros")
    info.size = 40 << 20  # 40 MiB in about 40 kB: inflated a bounded piece at a time
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    _unpack(archive, tmp_path / "out")
    assert (tmp_path / "out" / "zeros").stat().st_size == 40 << 20
