"""The manifest and the commit plan: pure functions, no store."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runctl.errors import IntegrityError, UsageError
from runctl.models import CheckpointInfo, FileEntry
from runctl.store.manifest import (
    FORMAT,
    Transfer,
    build_manifest,
    check_paths,
    manifest_key,
    next_seq,
    parse_manifest,
    parse_seq_name,
    path_problem,
    plan_commit,
    same_files,
    seq_name,
)

SHA_A = "a" * 64
SHA_B = "b" * 64
URL = "s3://bucket/jobs/j/checkpoints/00000003"


def doc(**changes):
    base = {
        "format": FORMAT, "seq": 3, "created": "2026-11-29T08:22:00.000Z", "total_bytes": 5, "metadata": {"step": 7},
        "files": [{"path": "model.pt", "size": 2, "sha256": SHA_A}, {"path": "opt/s.bin", "size": 3, "sha256": SHA_B}],
    }
    base.update(changes)
    return json.dumps(base).encode()


def test_names():
    assert seq_name(3) == "00000003" and seq_name(123456789) == "123456789"
    assert manifest_key("jobs/j/checkpoints/", 3) == "jobs/j/checkpoints/00000003/MANIFEST.json"
    assert parse_seq_name("00000003") == 3 and parse_seq_name("123456789") == 123456789
    for other in ["3", "003", "latest", "0000000x", "00000003\n", "-0000003", "١٢٣٤٥٦٧٨", ""]:
        assert parse_seq_name(other) is None, other


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "is not a non-empty string"),
        (None, "is not a non-empty string"),
        ("/etc/passwd", "is absolute"),
        ("..", "contains '.' or '..'"),
        ("a/../../b", "contains '.' or '..'"),
        ("./a", "contains '.' or '..'"),
        ("a\\b", "contains a backslash"),
        ("a//b", "has an empty path component"),
        ("a/", "has an empty path component"),
        ("a\x00b", "contains a NUL character"),
        ("MANIFEST.json", "is the reserved name MANIFEST.json"),
        ("x/.m.runctl-tmp-0123", "is a temporary file name"),
        ("bad\udcff", "is not valid UTF-8"),
    ],
)
def test_path_problem(path, problem):
    assert problem in path_problem(path)


@pytest.mark.parametrize("path", ["model.pt", "a/b/c.bin", "sub/MANIFEST.json", "..hidden", "a b/ü.txt", ".x"])
def test_path_ok(path):
    assert path_problem(path) is None


def test_check_paths_duplicates_and_file_folder_clash():
    check_paths(["a", "b/c", "b/d"], "here")
    with pytest.raises(IntegrityError, match="here: file path 'a' is listed twice"):
        check_paths(["a", "b", "a"], "here")
    with pytest.raises(IntegrityError, match="'b' is listed both as a file and as a folder"):
        check_paths(["b", "b/c"], "here")


def test_build_then_parse_roundtrip():
    files = [FileEntry("z.bin", 3, SHA_B), FileEntry("a/model.pt", 2, SHA_A)]
    data = build_manifest(3, "2026-11-29T08:22:00.000Z", files, {"step": 7, "note": "ü"})
    raw = json.loads(data)
    assert raw["format"] == FORMAT and raw["total_bytes"] == 5
    assert [f["path"] for f in raw["files"]] == ["a/model.pt", "z.bin"]
    info = parse_manifest(data, url=URL, seq=3)
    assert info == CheckpointInfo(seq=3, created="2026-11-29T08:22:00.000Z", files=tuple(sorted(files, key=lambda f: f.path)),
                                  url=URL, metadata={"step": 7, "note": "ü"})


def test_build_refuses_unserialisable_metadata_and_bad_paths():
    with pytest.raises(UsageError, match="not JSON-serialisable"):
        build_manifest(1, "t", [FileEntry("a", 1, SHA_A)], {"x": object()})
    with pytest.raises(IntegrityError, match="'../a'"):
        build_manifest(1, "t", [FileEntry("../a", 1, SHA_A)], {})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{nope", "is not valid JSON"),
        (b"\xff\xfe", "is not valid JSON"),
        (b"[1, 2]", "is not a JSON object"),
        (doc(format="runctl.manifest/2"), "has format 'runctl.manifest/2'"),
        (doc(seq="3"), "has no valid seq"),
        (doc(seq=4), "says seq 4 but sits in folder 00000003"),
        (doc(created=5), "'created' is not a string"),
        (doc(metadata=[1]), "'metadata' is not an object"),
        (doc(files={"a": 1}), "'files' is not a list"),
        (doc(files=["a"]), "a file entry is not an object"),
        (doc(files=[{"path": "a", "size": -1, "sha256": SHA_A}]), "file 'a' has invalid size -1"),
        (doc(files=[{"path": "a", "size": True, "sha256": SHA_A}]), "file 'a' has invalid size True"),
        (doc(files=[{"path": "a", "size": 1.5, "sha256": SHA_A}]), "file 'a' has invalid size 1.5"),
        (doc(files=[{"path": "a", "size": 1, "sha256": "A" * 64}]), "file 'a' has invalid sha256"),
        (doc(files=[{"path": "a", "size": 1, "sha256": "a" * 63}]), "file 'a' has invalid sha256"),
        (doc(files=[{"path": "../a", "size": 1, "sha256": SHA_A}]), "file path '../a' contains '.' or '..'"),
        (doc(files=[{"path": "/a", "size": 1, "sha256": SHA_A}]), "file path '/a' is absolute"),
        (doc(files=[{"path": 7, "size": 1, "sha256": SHA_A}]), "file path 7 is not a non-empty string"),
        (doc(total_bytes=6), "total_bytes 6 is not the sum"),
    ],
)
def test_parse_rejects(data, message):
    with pytest.raises(IntegrityError) as caught:
        parse_manifest(data, url=URL, seq=3)
    assert message in str(caught.value)
    assert URL in str(caught.value)


@pytest.mark.parametrize("newest", ["/etc/passwd", "../x", "model.pt/..", "opt/s.bin", "gone.pt", "", 42, True,
                                    ["model.pt"]])
def test_parse_rejects_a_newest_that_is_not_a_top_level_entry_of_the_snapshot(newest):
    # metadata.newest becomes RUNCTL_RESUME_FROM and --resume {checkpoint}: it is input too.
    with pytest.raises(IntegrityError) as caught:
        parse_manifest(doc(metadata={"step": 7, "newest": newest}), url=URL, seq=3)
    assert "metadata.newest" in str(caught.value) and URL in str(caught.value)


@pytest.mark.parametrize("newest", ["model.pt", "opt", None])
def test_parse_accepts_a_newest_naming_a_top_level_entry(newest):
    info = parse_manifest(doc(metadata={"newest": newest}), url=URL, seq=3)
    assert info.metadata["newest"] == newest


@pytest.mark.parametrize("newest", ["/etc/passwd", "back\\slash.pt", "MANIFEST.json"])
def test_build_leaves_out_a_newest_outside_the_snapshot(newest):
    # The agent names the newest file of the folder; one a snapshot cannot hold (skipped by the
    # commit) must not make every commit fail, nor make a manifest parse_manifest refuses.
    data = build_manifest(1, "t", [FileEntry("a", 1, SHA_A)], {"newest": newest, "step": 3})
    assert parse_manifest(data, url=URL, seq=1).metadata == {"step": 3}


def test_parse_tolerates_missing_optional_fields():
    info = parse_manifest(json.dumps({"format": FORMAT, "seq": 1, "files": []}).encode(), url=URL)
    assert info.seq == 1 and info.files == () and info.metadata == {} and info.created == ""


def test_next_seq_and_same_files():
    assert next_seq([]) == 1 and next_seq([1, 2, 7]) == 8
    a, b = FileEntry("a", 1, SHA_A), FileEntry("b", 1, SHA_B)
    assert same_files([a, b], [b, a])
    assert not same_files([a], [a, b])
    assert not same_files([a], [FileEntry("a", 1, SHA_B)])


def test_plan_commit_copies_known_content_and_uploads_duplicates_once():
    previous = CheckpointInfo(seq=1, created="", url="", files=(FileEntry("old/name", 1, SHA_A),))
    files = [FileEntry("renamed", 1, SHA_A), FileEntry("new1", 2, SHA_B), FileEntry("new2", 2, SHA_B),
             FileEntry("same-hash-other-size", 9, SHA_A)]
    plan = plan_commit(files, "p/00000002/", previous, "p/00000001/")
    assert plan == [
        Transfer(FileEntry("new1", 2, SHA_B)),
        Transfer(FileEntry("new2", 2, SHA_B), "p/00000002/new1", after_uploads=True),
        Transfer(FileEntry("renamed", 1, SHA_A), "p/00000001/old/name"),
        Transfer(FileEntry("same-hash-other-size", 9, SHA_A)),
    ]
    assert all(t.source_key is None for t in plan_commit(files[:2], "p/00000001/", None, None))


def test_plan_commit_copies_from_older_snapshots_the_latest_first():
    older = CheckpointInfo(seq=1, created="", url="", files=(FileEntry("w", 1, SHA_A), FileEntry("x", 2, SHA_B)))
    previous = CheckpointInfo(seq=2, created="", url="", files=(FileEntry("y", 2, SHA_B),))
    files = [FileEntry("w", 1, SHA_A), FileEntry("x", 2, SHA_B)]
    plan = plan_commit(files, "p/00000003/", previous, "p/00000002/", [(older, "p/00000001/")])
    assert plan == [Transfer(files[0], "p/00000001/w"), Transfer(files[1], "p/00000002/y")]


_part = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\x00"),
                min_size=1, max_size=12).filter(lambda p: p not in (".", "..") and ".runctl-tmp-" not in p)
_paths = st.lists(st.lists(_part, min_size=1, max_size=4).map("/".join), min_size=0, max_size=8, unique=True)


@given(_paths, st.lists(st.integers(0, 2**40), min_size=8, max_size=8),
       st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3))
def test_roundtrip_property(paths, sizes, metadata):
    paths = [p for p in paths if p != "MANIFEST.json"]
    try:
        check_paths(paths, "x")
    except IntegrityError:
        return  # a file-and-folder clash: not a set of files a folder can hold
    files = [FileEntry(p, sizes[i], f"{i:064x}") for i, p in enumerate(paths)]
    info = parse_manifest(build_manifest(5, "now", files, metadata), url=URL, seq=5)
    assert same_files(info.files, files) and info.metadata == metadata and info.total_bytes == sum(sizes[: len(paths)])


@given(st.text(max_size=40))
def test_path_problem_never_accepts_an_escape(path):
    if path_problem(path) is None:
        parts = path.split("/")
        assert not path.startswith("/") and ".." not in parts and "" not in parts and "\\" not in path
