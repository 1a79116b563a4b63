"""``runctl s3 ...`` driven through the real entry point, against moto and a local folder."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runctl.cli import main
from runctl.cli.s3 import run_parallel
from runctl.store import open_store


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def run_json(capsys, *args: str):
    code, out, err = run(capsys, *args, "--output", "json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(params=["local", "s3"])
def store_url(request, tmp_path) -> str:
    """A store root URL of each kind, empty."""
    if request.param == "s3":
        return f"s3://{request.getfixturevalue('s3_bucket')}/team"
    return str(tmp_path / "store")


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


FILES = {"model.pt": os.urandom(9 * 1024 * 1024), "cfg/args.json": b"{}", "cfg/deep/x.txt": b"x", "empty": b""}


# -- upload / download / list ---------------------------------------------------------------
def test_upload_folder_list_and_download_roundtrip(capsys, tmp_path, store_url):
    src = make_tree(tmp_path / "src", FILES)
    result = run_json(capsys, "s3", "upload", str(src), f"{store_url}/run1")
    assert result["files"] == 4 and result["bytes"] == sum(map(len, FILES.values()))

    listing = run_json(capsys, "s3", "list", f"{store_url}/run1")
    assert listing == [{"key": k, "size": len(FILES[k])} for k in sorted(FILES)]

    code, out, err = run(capsys, "s3", "download", f"{store_url}/run1", str(tmp_path / "back"))
    assert code == 0, err
    assert out.startswith("downloaded 4 files")
    assert tree(tmp_path / "back") == FILES


def test_upload_and_download_single_files(capsys, tmp_path, store_url):
    make_tree(tmp_path, {"one.bin": b"1" * 100})
    code, out, err = run(capsys, "s3", "upload", str(tmp_path / "one.bin"), f"{store_url}/dir/")
    assert (code, err) == (0, "")
    assert out == f"uploaded 1 file (100 B) to {open_store(store_url + '/dir').url}\n"
    run(capsys, "s3", "upload", str(tmp_path / "one.bin"), f"{store_url}/dir/renamed.bin")
    assert [o["key"] for o in run_json(capsys, "s3", "list", f"{store_url}/dir")] == ["one.bin", "renamed.bin"]

    # An object URL downloads to the path given, or into a folder under its own name.
    code, _, err = run(capsys, "s3", "download", f"{store_url}/dir/renamed.bin", str(tmp_path / "got.bin"))
    assert code == 0, err
    assert (tmp_path / "got.bin").read_bytes() == b"1" * 100
    (tmp_path / "into").mkdir()
    run(capsys, "s3", "download", f"{store_url}/dir/one.bin", str(tmp_path / "into"))
    assert tree(tmp_path / "into") == {"one.bin": b"1" * 100}


def test_list_text_is_a_table(capsys, tmp_path, store_url):
    make_tree(tmp_path / "src", {"a.txt": b"abc", "b/c.txt": b"1" * 2048})
    run(capsys, "s3", "upload", str(tmp_path / "src"), store_url)
    code, out, _ = run(capsys, "s3", "list", store_url)
    assert code == 0
    assert "a.txt" in out and "b/c.txt" in out and "3 B" in out and "2.0 KiB" in out and "2 objects" in out


def test_list_of_nothing(capsys, store_url):
    assert run_json(capsys, "s3", "list", f"{store_url}/nothing") == []
    code, out, err = run(capsys, "s3", "list", f"{store_url}/nothing")
    assert (code, out) == (0, "") and "no objects below" in err


def test_download_of_nothing_fails(capsys, tmp_path, store_url):
    code, out, err = run(capsys, "s3", "download", f"{store_url}/nothing", str(tmp_path / "x"))
    assert code == 3 and out == ""
    assert err.startswith("runctl: error: nothing to download") and err.count("\n") == 1


def test_upload_of_missing_path_is_a_usage_error(capsys, tmp_path, store_url):
    code, _, err = run(capsys, "s3", "upload", str(tmp_path / "absent"), store_url)
    assert code == 2 and "does not exist" in err


# -- sync -----------------------------------------------------------------------------------
def test_sync_uploads_only_what_differs(capsys, tmp_path, store_url):
    src = make_tree(tmp_path / "src", {"a": b"1", "b/c": b"22", "d": b"333"})
    first = run_json(capsys, "s3", "sync", str(src), store_url)
    assert sorted(first["uploaded"]) == ["a", "b/c", "d"] and first["unchanged"] == 0

    (src / "a").write_bytes(b"1111")  # size changed
    (src / "new").write_bytes(b"n")
    store = open_store(store_url)
    store.write("stray", b"left over")
    dry = run_json(capsys, "s3", "sync", str(src), store_url, "--delete", "--dry-run")
    assert sorted(dry["uploaded"]) == ["a", "new"] and dry["deleted"] == ["stray"] and dry["unchanged"] == 2
    assert store.read("a").data == b"1" and store.exists("stray")  # the dry run changed nothing

    code, out, err = run(capsys, "s3", "sync", str(src), store_url)
    assert code == 0, err
    assert out.startswith("uploaded 2 files (5 B), 2 unchanged")
    assert store.read("a").data == b"1111" and store.exists("stray")  # no --delete: kept

    again = run_json(capsys, "s3", "sync", str(src), store_url, "--delete")
    assert again["uploaded"] == [] and again["deleted"] == ["stray"] and again["unchanged"] == 4
    assert sorted(o.key for o in store.list()) == ["a", "b/c", "d", "new"]


# -- cleanup --------------------------------------------------------------------------------
OTHER_KEYS = [  # never touched by cleanup
    "jobs/j1/job.json",
    "jobs/j1/status.json",
    "jobs/j1/logs/0/out.log",
    "jobs/j1/checkpoints/notes.txt",
    "jobs/j1/checkpoints/latest/model.pt",
    "jobs/j1/checkpoints/0001x/model.pt",
    "other/checkpoints/00000001/model.pt",
    "README",
]


def seed_job(store, job: str, complete: list[int], incomplete: list[int]) -> None:
    for seq in complete + incomplete:
        store.write(f"jobs/{job}/checkpoints/{seq:08d}/model.pt", b"w" * 10)
        store.write(f"jobs/{job}/checkpoints/{seq:08d}/opt/state.pt", b"s" * 5)
    for seq in complete:
        store.write(f"jobs/{job}/checkpoints/{seq:08d}/MANIFEST.json", b"{}")


def snapshot_folders(store, job: str) -> list[str]:
    return store.list_dirs(f"jobs/{job}/checkpoints/")


@pytest.fixture
def seeded(store_url):
    store = open_store(store_url)
    seed_job(store, "j1", complete=[1, 3, 5], incomplete=[2, 4, 6])
    seed_job(store, "j2", complete=[1, 2, 3], incomplete=[])
    for key in OTHER_KEYS:
        store.write(key, b"keep me")
    return store


def test_cleanup_a_job(capsys, store_url, seeded):
    code, out, err = run(capsys, "s3", "cleanup", f"{store_url}/jobs/j1", "--keep-last-n", "2")
    assert code == 0, err
    assert "deleted 3 snapshots (00000001, 00000002, 00000004; 7 objects, 47 B), kept 2 (00000005, 00000003)" in out
    assert snapshot_folders(seeded, "j1") == ["00000003", "00000005", "00000006", "0001x", "latest"]
    assert snapshot_folders(seeded, "j2") == ["00000001", "00000002", "00000003"]  # another job: untouched
    for key in OTHER_KEYS:
        assert seeded.exists(key), key


def test_cleanup_a_checkpoints_folder_dry_run_then_real(capsys, store_url, seeded):
    url = f"{store_url}/jobs/j1/checkpoints"
    before = sorted(o.key for o in seeded.list())
    [dry] = run_json(capsys, "s3", "cleanup", url, "--keep-last-n", "1", "--dry-run")
    assert dry["deleted"] == ["00000001", "00000002", "00000003", "00000004"]
    assert dry["kept"] == ["00000005"] and dry["in_progress"] == ["00000006"] and dry["dry_run"] is True
    assert sorted(o.key for o in seeded.list()) == before

    [done] = run_json(capsys, "s3", "cleanup", url, "--keep-last-n", "1")
    assert done["deleted"] == dry["deleted"] and done["objects"] == 10
    assert done["checkpoints"] == f"{seeded.url}/jobs/j1/checkpoints"
    assert snapshot_folders(seeded, "j1") == ["00000005", "00000006", "0001x", "latest"]


def test_cleanup_a_store_root_does_every_job(capsys, store_url, seeded):
    results = run_json(capsys, "s3", "cleanup", store_url, "--keep-last-n", "1")
    assert {r["checkpoints"].rsplit("/", 2)[-2]: r["deleted"] for r in results} == {
        "j1": ["00000001", "00000002", "00000003", "00000004"],
        "j2": ["00000001", "00000002"],
    }
    assert snapshot_folders(seeded, "j2") == ["00000003"]
    remaining = {o.key for o in seeded.list()}
    assert set(OTHER_KEYS) <= remaining
    # The newest complete snapshot is whole: its manifest and files are all there.
    assert {k for k in remaining if "/00000005/" in k} == {
        f"jobs/j1/checkpoints/00000005/{n}" for n in ("model.pt", "opt/state.pt", "MANIFEST.json")
    }


def test_cleanup_with_nothing_complete_deletes_nothing(capsys, store_url):
    store = open_store(store_url)
    seed_job(store, "j", complete=[], incomplete=[1, 2])
    [result] = run_json(capsys, "s3", "cleanup", f"{store_url}/jobs/j", "--keep-last-n", "1")
    assert result["deleted"] == [] and result["in_progress"] == ["00000001", "00000002"]
    assert snapshot_folders(store, "j") == ["00000001", "00000002"]


def test_cleanup_of_a_folder_without_checkpoints_fails(capsys, store_url):
    open_store(store_url).write("something/else", b"x")
    code, out, err = run(capsys, "s3", "cleanup", store_url, "--keep-last-n", "1")
    assert code == 3 and out == "" and "no checkpoints below" in err


def test_cleanup_needs_a_positive_keep_last_n(capsys, store_url):
    code, _, err = run(capsys, "s3", "cleanup", store_url, "--keep-last-n", "0")
    assert code == 2 and "keep-last-n" in err


# -- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    ["list", "s3://no-such-bucket-x/p"],
    ["download", "s3://no-such-bucket-x/p/model.pt", "OUT"],
    ["upload", "SRC", "s3://no-such-bucket-x/p"],
    ["sync", "SRC", "s3://no-such-bucket-x/p"],
    ["cleanup", "s3://no-such-bucket-x/jobs/j", "--keep-last-n", "1"],
])
def test_missing_bucket_is_exit_3_and_one_line(capsys, tmp_path, moto_reset, command):
    make_tree(tmp_path / "src", {"a": b"1", "b": b"2", "c/d": b"3"})
    argv = [{"SRC": str(tmp_path / "src"), "OUT": str(tmp_path / "out")}.get(a, a) for a in command]
    code, out, err = run(capsys, "s3", *argv)
    assert code == 3 and out == ""
    assert err == (
        "runctl: error: bucket 'no-such-bucket-x' does not exist; create it (runctl aws setup, or "
        "aws s3 mb s3://no-such-bucket-x) or fix the store URL\n"
    )


def test_bad_url_scheme_is_a_usage_error(capsys):
    code, _, err = run(capsys, "s3", "list", "gs://bucket/x")
    assert code == 2 and err.startswith("runctl: error: unknown store URL scheme")


def test_help_imports_neither_boto3_nor_rich():
    code = (
        "import sys\n"
        "from runctl.cli import main\n"
        "try:\n    main(['s3', 'upload', '--help'])\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert not {'boto3', 'botocore', 'rich'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)


# -- helpers ----------------------------------------------------------------------------------
class FakeOutput:
    def __init__(self):
        self.seen: list[int] = []

    @contextlib.contextmanager
    def progress(self, description, total):
        self.total = total
        yield self.seen.append


class FakeApp:
    def __init__(self):
        self.output = FakeOutput()


def test_run_parallel_reports_progress_and_raises_the_first_error():
    app = FakeApp()
    run_parallel(app, "x", [(n, lambda progress, n=n: progress(n)) for n in (1, 2, 3)], jobs=2)
    assert app.output.total == 6 and sorted(app.output.seen) == [1, 2, 3]

    def boom(progress):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_parallel(FakeApp(), "x", [(1, boom)] + [(1, lambda p: None)] * 20, jobs=4)
