"""Code trees: ignore rules, content-addressed upload (only what changed), byte-exact materialize."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import pytest

from runctl.codesync import build_tree, materialize, project_files, read_tree, upload_tree
from runctl.codesync.tree import CodeTree
from runctl.errors import IntegrityError
from runctl.store import layout


class CountingStore:
    """A store proxy that counts blob uploads (writes and uploads under code/blobs/)."""

    def __init__(self, inner):
        self._inner = inner
        self.blob_writes: list[str] = []

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def write(self, key, data, **kwargs):
        if key.startswith("code/blobs/"):
            self.blob_writes.append(key)
        return self._inner.write(key, data, **kwargs)

    def upload(self, path, key, **kwargs):
        if key.startswith("code/blobs/"):
            self.blob_writes.append(key)
        return self._inner.upload(path, key, **kwargs)


def make_project(root):
    files = {
        "train.py": "print('train')\n",
        "lib/model.py": "W = 1\n",
        "lib/data/loader.py": "def load(): ...\n",
        "run.sh": "#!/bin/sh\necho hi\n",
        "notes.log": "ignored by *.log\n",
        "build/out.bin": "ignored folder\n",
        "data/big.csv": "1,2,3\n",
        "data/keep.csv": "kept by negation\n",
        "secret.env": "ignored by .runctlignore\n",
        ".venv/lib/site.py": "never\n",
        "lib/__pycache__/model.cpython-311.pyc": "never\n",
        ".runctl/jobs/x": "never\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    os.chmod(root / "run.sh", 0o755)
    (root / ".gitignore").write_text("# comment\n*.log\nbuild/\n/data/*.csv\n!/data/keep.csv\n")
    (root / ".runctlignore").write_text("secret.env\n")
    return root


EXPECTED = [".gitignore", ".runctlignore", "data/keep.csv", "lib/data/loader.py", "lib/model.py", "run.sh", "train.py"]


def git_init(root):
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull}
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=env)


@pytest.mark.parametrize("use_git", [False, pytest.param(True, marks=pytest.mark.skipif(
    shutil.which("git") is None, reason="no git"))])
def test_ignores_are_honoured(tmp_path, use_git):
    root = make_project(tmp_path / "proj")
    if use_git:
        git_init(root)
    assert project_files(root, use_git=use_git).files == EXPECTED


@pytest.mark.parametrize("use_git", [False, True])
def test_include_brings_back_ignored_files_but_never_the_always_excluded(tmp_path, use_git):
    if use_git and shutil.which("git") is None:
        pytest.skip("no git")
    root = make_project(tmp_path / "proj")
    if use_git:
        git_init(root)
    files = project_files(root, ["data/*.csv", "build/", ".venv/"], use_git=use_git).files
    assert set(files) == {*EXPECTED, "data/big.csv", "build/out.bin"}


def test_nested_gitignore_without_git(tmp_path):
    root = tmp_path / "proj"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / ".gitignore").write_text("*.tmp\n/only-here.txt\n")
    for rel in ("a.tmp", "sub/b.tmp", "sub/only-here.txt", "only-here.txt", "sub/deep/only-here.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    assert project_files(root, use_git=False).files == ["a.tmp", "only-here.txt", "sub/.gitignore",
                                                        "sub/deep/only-here.txt"]


SECRET = "aws_secret_access_key = do-not-ship-me"


def project_with_links(tmp_path):
    """A project with links out of it (a credentials file, a folder) and links within it."""
    outside = tmp_path / "outside"
    (outside / "keys").mkdir(parents=True)
    (outside / "credentials").write_text(SECRET + "\n")
    (outside / "keys" / "id").write_text(SECRET + "\n")
    root = tmp_path / "proj"
    (root / "lib").mkdir(parents=True)
    (root / "train.py").write_text("print('train')\n")
    (root / "lib" / "model.py").write_text("W = 1\n")
    (root / "credentials").symlink_to(outside / "credentials")  # absolute
    (root / "lib" / "keys").symlink_to("../../outside/keys", target_is_directory=True)  # relative, a folder
    (root / "lib" / "escape.py").symlink_to("../../outside/credentials")  # relative, a file
    (root / "alias.py").symlink_to("train.py")  # a file within the project
    (root / "models").symlink_to(root / "lib", target_is_directory=True)  # a folder within the project
    return root


@pytest.mark.parametrize("use_git", [False, pytest.param(True, marks=pytest.mark.skipif(
    shutil.which("git") is None, reason="no git"))])
def test_links_out_of_the_project_are_skipped_and_named(tmp_path, use_git):
    root = project_with_links(tmp_path)
    if use_git:
        git_init(root)
    listed = project_files(root, use_git=use_git)
    assert listed.skipped_links == ["credentials", "lib/escape.py", "lib/keys"]
    # Links within the project behave as before: a file link is a file, a folder link is
    # not followed (its files are listed where they are).
    assert listed.files == ["alias.py", "lib/model.py", "train.py"]


def test_an_upload_never_holds_what_a_link_out_of_the_project_points_at(tmp_path, local_store):
    root = project_with_links(tmp_path)
    result = upload_tree(local_store, root, ["lib/keys/", "credentials"], use_git=False)  # --include too
    for info in local_store.list():
        assert SECRET.encode() not in local_store.read(info.key).data, info.key
    assert result.skipped_links == ("credentials", "lib/escape.py", "lib/keys")
    assert result.file_count == 3
    built = materialize(local_store, result.tree_id, tmp_path / "cache")
    assert (built / "alias.py").read_text() == "print('train')\n" and not (built / "alias.py").is_symlink()
    assert not (built / "credentials").exists() and not (built / "lib" / "keys").exists()


def test_second_upload_sends_only_the_changed_file(tmp_path, any_store):
    root = make_project(tmp_path / "proj")
    store = CountingStore(any_store)
    first = upload_tree(store, root, use_git=False)
    assert (first.uploaded_count, first.file_count) == (len(EXPECTED), len(EXPECTED))
    assert len(store.blob_writes) == len(EXPECTED)

    again = upload_tree(store, root, use_git=False)
    assert again.tree_id == first.tree_id and again.uploaded_count == 0 and len(store.blob_writes) == len(EXPECTED)

    (root / "lib" / "model.py").write_text("W = 2\n")
    store.blob_writes.clear()
    changed = upload_tree(store, root, use_git=False)
    assert changed.tree_id != first.tree_id
    assert (changed.uploaded_count, changed.uploaded_bytes, changed.file_count) == (1, 6, len(EXPECTED))
    import hashlib

    assert store.blob_writes == [layout.code_blob_key(hashlib.sha256(b"W = 2\n").hexdigest())]


def test_the_checkpoint_folder_is_left_out(tmp_path, local_store):
    root = make_project(tmp_path / "proj")
    (root / "lib" / "data" / "last.pt").write_text("a local run's checkpoint\n")
    result = upload_tree(local_store, root, use_git=False, leave_out="lib/data")
    assert [f.path for f in read_tree(local_store, result.tree_id).files] == [
        p for p in EXPECTED if not p.startswith("lib/data/")]


def test_tree_id_is_the_hash_of_the_canonical_tree(tmp_path, local_store):
    root = make_project(tmp_path / "proj")
    result = upload_tree(local_store, root, use_git=False)
    stored = local_store.read(layout.code_tree_key(result.tree_id)).data
    import hashlib

    assert hashlib.sha256(stored).hexdigest() == result.tree_id
    assert build_tree(root, use_git=False).tree_id == result.tree_id
    assert [f["path"] for f in json.loads(stored)["files"]] == EXPECTED


def test_materialize_is_byte_exact_keeps_exec_bits_and_shares_blobs(tmp_path, any_store):
    root = make_project(tmp_path / "proj")
    (root / "same.py").write_text("W = 1\n")  # same content as lib/model.py: one blob
    first = upload_tree(any_store, root, use_git=False)
    cache = tmp_path / "cache"
    folder = materialize(any_store, first.tree_id, cache)
    assert folder == cache / "trees" / first.tree_id
    for f in read_tree(any_store, first.tree_id).files:
        assert (folder / f.path).read_bytes() == (root / f.path).read_bytes()
        assert bool((folder / f.path).stat().st_mode & stat.S_IXUSR) == (f.path == "run.sh")
    assert os.path.samefile(folder / "same.py", folder / "lib" / "model.py")
    assert subprocess.run([str(folder / "run.sh")], capture_output=True, text=True).stdout == "hi\n"

    # A second tree reuses the cached blobs: only the changed file is downloaded.
    (root / "train.py").write_text("print('v2')\n")
    second = upload_tree(any_store, root, use_git=False)
    downloads = []
    real = any_store.download
    any_store.download = lambda key, path, **kw: (downloads.append(key), real(key, path, **kw))[1]
    try:
        folder2 = materialize(any_store, second.tree_id, cache)
        assert downloads == [layout.code_blob_key(__import__("hashlib").sha256(b"print('v2')\n").hexdigest())]
        assert os.path.samefile(folder2 / "lib" / "model.py", folder / "lib" / "model.py")
        downloads.clear()
        assert materialize(any_store, first.tree_id, cache) == folder and downloads == []
    finally:
        del any_store.download


def test_materialize_repairs_a_damaged_tree_folder(tmp_path, local_store):
    root = make_project(tmp_path / "proj")
    tree_id = upload_tree(local_store, root, use_git=False).tree_id
    folder = materialize(local_store, tree_id, tmp_path / "cache")
    path = folder / "lib" / "model.py"
    os.chmod(path, 0o644)
    path.write_text("tampered\n")  # through the hard link: the cached blob is damaged too
    folder = materialize(local_store, tree_id, tmp_path / "cache")
    assert (folder / "lib" / "model.py").read_text() == "W = 1\n"


@pytest.mark.parametrize("bad", ["../evil.py", "/etc/passwd", "a/../../b", "a//b", "./a", ""])
def test_unsafe_tree_paths_are_refused(bad, local_store, tmp_path):
    data = json.dumps({"version": 1, "files": [{"path": bad, "sha256": "0" * 64, "size": 0, "mode": 420}]},
                      sort_keys=True, separators=(",", ":")).encode()
    import hashlib

    tree_id = hashlib.sha256(data).hexdigest()
    local_store.write(layout.code_tree_key(tree_id), data)
    with pytest.raises(IntegrityError):
        materialize(local_store, tree_id, tmp_path / "cache")
    assert not (tmp_path / "evil.py").exists()


def test_a_tree_that_does_not_match_its_id_is_refused(local_store, tmp_path):
    good = CodeTree(()).canonical()
    local_store.write(layout.code_tree_key("1" * 64), good)
    with pytest.raises(IntegrityError):
        materialize(local_store, "1" * 64, tmp_path / "cache")


def test_a_second_upload_hashes_only_changed_files_and_lists_no_blobs(tmp_path, any_store, monkeypatch):
    import os
    import time

    from runctl.codesync import tree as tree_module

    root = make_project(tmp_path / "proj")
    then = time.time() - 60  # old enough for the hash cache to trust the timestamps
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))
    cache = tmp_path / "proj" / ".runctl"
    first = upload_tree(any_store, root, use_git=False, cache_dir=cache)
    hashed, listed = [], []
    real_hash = tree_module.sha256_file
    monkeypatch.setattr(tree_module, "sha256_file", lambda p: hashed.append(p.name) or real_hash(p))
    store = CountingStore(any_store)
    store.list = lambda prefix="": listed.append(prefix) or any_store.list(prefix)

    again = upload_tree(store, root, use_git=False, cache_dir=cache)
    assert again.tree_id == first.tree_id and hashed == []

    (root / "lib" / "model.py").write_text("W = 2\n")
    changed = upload_tree(store, root, use_git=False, cache_dir=cache)
    assert hashed == ["model.py"] and listed == []  # only the new blob looked up, by name
    assert changed.uploaded_count == 1 and len(store.blob_writes) == 1
    (root / "lib" / "model.py").write_text("W = 1\n")  # back: its blob is there already
    back = upload_tree(store, root, use_git=False, cache_dir=cache)
    assert back.tree_id == first.tree_id and back.uploaded_count == 0 and listed == []
