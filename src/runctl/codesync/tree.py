"""Content-addressed code trees in the store: upload a project once, fetch it anywhere.

Store layout (``runctl.store.layout``)::

    code/blobs/<sha256>          a file's bytes, uploaded only when no blob has that hash
    code/trees/<tree-id>.json    {"files": [{"path", "sha256", "size", "mode"}, ...]}

The tree id is the sha256 of the tree JSON in its canonical form (sorted keys, no spaces,
files sorted by path), so the same code is the same tree. A changed file uploads one blob
and one small tree. ``materialize`` builds a folder per tree under a cache folder; blobs
are cached once (``<cache>/blobs/<sha256>``, read-only, verified by hash) and hard-linked
into every tree that holds them. Executable files are copies (a hard link shares its
mode). Paths that would leave the folder (absolute, ``..``) are refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from runctl.codesync.ignore import ProjectFiles, project_files
from runctl.errors import IntegrityError, NotFoundError, StoreError, UsageError
from runctl.store import layout
from runctl.store.hashing import FileState, HashCache, sha256_file

log = logging.getLogger(__name__)

TREE_VERSION = 1
READ_IN_MEMORY_MAX = 64 * 1024 * 1024  # larger files are streamed with Store.upload
#: Up to this many blobs that the last tree sent to the store lacks are looked up one by
#: one (a HEAD each); more, and every blob of the store is listed instead.
LOOKUP_MAX = 256
#: In ``upload_tree``'s ``cache_dir``: the hashes of the project's files (``HashCache``) and
#: the last tree uploaded to each store.
HASHES_NAME = "code-hashes.jsonl"
LAST_TREES_NAME = "code-trees.json"


@dataclass(frozen=True)
class TreeFile:
    path: str  # '/'-separated, relative to the project folder
    sha256: str
    size: int
    mode: int  # 0o755 or 0o644, as git keeps it

    @property
    def executable(self) -> bool:
        return bool(self.mode & 0o111)


@dataclass(frozen=True)
class CodeTree:
    files: tuple[TreeFile, ...]

    def canonical(self) -> bytes:
        data = {"version": TREE_VERSION,
                "files": [{"path": f.path, "sha256": f.sha256, "size": f.size, "mode": f.mode}
                          for f in sorted(self.files, key=lambda f: f.path)]}
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @property
    def tree_id(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @classmethod
    def parse(cls, data: bytes, tree_id: str | None = None) -> CodeTree:
        """A tree from its JSON; checks each path and, given ``tree_id``, the hash."""
        if tree_id is not None and hashlib.sha256(data).hexdigest() != tree_id:
            raise IntegrityError(f"code tree {tree_id} does not match its id")
        try:
            raw = json.loads(data)
            files = tuple(TreeFile(str(f["path"]), str(f["sha256"]), int(f["size"]), int(f["mode"]))
                          for f in raw["files"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"code tree {tree_id or ''} is malformed: {exc}") from exc
        for f in files:
            check_path(f.path)
            if len(f.sha256) != 64 or any(c not in "0123456789abcdef" for c in f.sha256):
                raise IntegrityError(f"code tree entry {f.path!r} has an invalid sha256")
        return cls(files)


@dataclass(frozen=True)
class TreeUpload:
    tree_id: str
    uploaded_count: int  # files whose blob was not in the store yet
    uploaded_bytes: int
    file_count: int
    total_bytes: int
    skipped_links: tuple[str, ...] = ()  # symlinks out of the project, not followed


def check_path(rel: str) -> str:
    """Refuse tree paths that would escape the folder they are written into."""
    parts = rel.split("/")
    if (not rel or rel.startswith("/") or "\\" in rel or "\0" in rel
            or any(part in ("", ".", "..") for part in parts)):
        raise IntegrityError(f"refusing code path {rel!r}: it must stay inside the project folder")
    return rel


def _listed(folder: Path, include: Iterable[str], use_git: bool) -> ProjectFiles:
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    return project_files(folder, include, use_git=use_git)


def build_tree(folder: Path, include: Iterable[str] = (), *, use_git: bool = True,
               workers: int = 8) -> CodeTree:
    """The tree of ``folder``'s code files (see ``runctl.codesync.ignore``)."""
    folder = Path(folder)
    return _tree_of(folder, _listed(folder, include, use_git).files, workers)


def _tree_of(folder: Path, names: list[str], workers: int, hashes: HashCache | None = None) -> CodeTree:
    """``hashes``: known hashes of the files, by (size, mtime, inode, ctime); a file whose
    hash is there is not read."""
    def entry(rel: str) -> TreeFile:
        path = folder / rel
        try:
            st = os.stat(path)
            state = FileState.of(st)
            digest = hashes.lookup(path, state) if hashes is not None else None
            if digest is None:
                digest = sha256_file(path)
                after = os.stat(path)
                if hashes is not None and FileState.of(after) == state:
                    hashes.remember(path, state, digest, ctime_ns=after.st_ctime_ns)
            return TreeFile(rel, digest, st.st_size, 0o755 if st.st_mode & stat.S_IXUSR else 0o644)
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        files = tuple(pool.map(entry, names))
    return CodeTree(files)


def upload_tree(store, folder: Path, include: Iterable[str] = (), *, use_git: bool = True,
                workers: int = 8, progress: Callable[[int], None] | None = None,
                leave_out: str | None = None, cache_dir: Path | None = None) -> TreeUpload:
    """Upload ``folder``'s code: the blobs the store lacks, then the tree. Returns what it did.
    ``leave_out``: a folder ('/'-separated, relative) none of whose files is sent: the job's
    checkpoint folder, whose files reach the instance from the store's snapshot, never as
    code (a local run's checkpoints there would be files runctl did not write for the job).

    ``cache_dir``: where runctl keeps what it learnt for the next upload (the project's
    ``.runctl``): the files' hashes, so that only changed files are read, and the last tree
    sent to each store, whose blobs are there: only the others are looked up."""
    folder = Path(folder)
    hashes = HashCache(file=Path(cache_dir) / HASHES_NAME) if cache_dir is not None else None
    listed = _listed(folder, include, use_git)
    skipped = tuple(listed.skipped_links)
    if skipped:
        log.info("code: not following %d symlinks out of %s: %s", len(skipped), folder, ", ".join(skipped))
    files = [rel for rel in listed.files if not (leave_out and (rel + "/").startswith(leave_out.rstrip("/") + "/"))]
    tree = _tree_of(folder, files, workers, hashes)
    if hashes is not None:
        hashes.save()
    tree_id = tree.tree_id
    tree_key = layout.code_tree_key(tree_id)
    if store.exists(tree_key):  # every blob of a stored tree is there: it was written last
        _remember_tree(cache_dir, store, tree_id)
        return TreeUpload(tree_id, 0, 0, len(tree.files), tree.total_bytes, skipped)
    have = _blobs_in_store(store, tree, _last_tree(cache_dir, store), workers)
    missing: dict[str, TreeFile] = {}
    for f in tree.files:
        if f.sha256 not in have:
            missing.setdefault(f.sha256, f)

    def send(f: TreeFile) -> int:
        path, key = folder / f.path, layout.code_blob_key(f.sha256)
        if f.size <= READ_IN_MEMORY_MAX:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != f.sha256:
                raise StoreError(f"{path} changed while being uploaded; run the command again")
            store.write(key, data)
        else:
            store.upload(path, key)
        if progress:
            progress(f.size)
        return f.size

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        sent = list(pool.map(send, missing.values()))
    store.write(tree_key, tree.canonical())
    _remember_tree(cache_dir, store, tree_id)
    log.info("code tree %s: uploaded %d of %d files (%d bytes)", tree_id, len(sent), len(tree.files), sum(sent))
    return TreeUpload(tree_id, len(sent), sum(sent), len(tree.files), tree.total_bytes, skipped)


def _blobs_in_store(store, tree: CodeTree, last_tree_id: str | None, workers: int) -> set[str]:
    """The hashes of ``tree``'s blobs that the store holds: those of the last tree sent there
    (a stored tree's blobs are all there: it was written last), and of the rest, looked up
    one by one when they are few, else from a listing of every blob."""
    known: set[str] = set()
    if last_tree_id is not None:
        try:
            known = {f.sha256 for f in read_tree(store, last_tree_id).files}
        except (NotFoundError, IntegrityError, UsageError):
            known = set()
    unknown = sorted({f.sha256 for f in tree.files} - known)
    if len(unknown) > LOOKUP_MAX:
        return known | {info.key.rsplit("/", 1)[-1] for info in store.list(layout.code_blob_key(""))}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        there = list(pool.map(lambda sha: store.exists(layout.code_blob_key(sha)), unknown))
    return known | {sha for sha, found in zip(unknown, there) if found}


def _last_tree(cache_dir: Path | None, store) -> str | None:
    if cache_dir is None:
        return None
    try:
        trees = json.loads((Path(cache_dir) / LAST_TREES_NAME).read_text())
        tree_id = trees.get(store.url) if isinstance(trees, dict) else None
    except (OSError, ValueError):
        return None
    return tree_id if isinstance(tree_id, str) else None


def _remember_tree(cache_dir: Path | None, store, tree_id: str) -> None:
    """Record ``tree_id`` as the last tree in ``store`` (a cache: a failure is only logged)."""
    if cache_dir is None:
        return
    path = Path(cache_dir) / LAST_TREES_NAME
    try:
        trees = json.loads(path.read_text())
        trees = trees if isinstance(trees, dict) else {}
    except (OSError, ValueError):
        trees = {}
    trees[store.url] = tree_id
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(json.dumps(trees, indent=1, sort_keys=True))
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        log.warning("could not record the last code tree in %s: %s", path, exc)


def read_tree(store, tree_id: str) -> CodeTree:
    if len(tree_id) != 64 or any(c not in "0123456789abcdef" for c in tree_id):
        raise UsageError(f"invalid code tree id {tree_id!r}")
    try:
        blob = store.read(layout.code_tree_key(tree_id))
    except NotFoundError as exc:
        raise NotFoundError(f"code tree {tree_id} is not in {store.url}") from exc
    return CodeTree.parse(blob.data, tree_id)


# -- the instance's side ---------------------------------------------------------------------
def _verified(path: Path, f: TreeFile) -> bool:
    try:
        return path.stat().st_size == f.size and sha256_file(path) == f.sha256
    except OSError:
        return False


def _cached_blob(store, f: TreeFile, blobs: Path) -> Path:
    """The blob in the local cache, downloaded and verified if it is not there (intact)."""
    path = blobs / f.sha256
    if _verified(path, f):
        return path
    temp = blobs / f".{f.sha256}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        store.download(layout.code_blob_key(f.sha256), temp)
        if not _verified(temp, f):
            raise IntegrityError(f"code blob {f.sha256} ({f.path}) does not match its hash")
        os.chmod(temp, 0o444)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def _intact(target: Path, tree: CodeTree) -> bool:
    """Whether a built tree folder still holds every file as the tree says."""
    for f in tree.files:
        path = target / f.path
        if path.is_symlink() or not path.is_file() or bool(path.stat().st_mode & stat.S_IXUSR) != f.executable:
            return False
        if not _verified(path, f):
            return False
    return True


def _place(blob: Path, dest: Path, f: TreeFile) -> None:
    if not f.executable:
        try:
            os.link(blob, dest)
            return
        except OSError:
            pass  # another file system, or no hard links: copy
    shutil.copyfile(blob, dest)
    os.chmod(dest, f.mode)


def materialize(store, tree_id: str, cache_dir: Path, *, workers: int = 8) -> Path:
    """``cache_dir/trees/<tree_id>``: the tree's files, byte-exact, executable bits kept.

    Reused when already built and intact (files added since, such as outputs, are left);
    blobs come from ``cache_dir/blobs`` when there, else from the store.
    """
    cache_dir = Path(cache_dir)
    tree = read_tree(store, tree_id)
    trees, blobs = cache_dir / "trees", cache_dir / "blobs"
    target = trees / tree_id
    if target.is_dir() and _intact(target, tree):
        log.info("code tree %s: reusing %s", tree_id, target)
        return target
    trees.mkdir(parents=True, exist_ok=True)
    blobs.mkdir(parents=True, exist_ok=True)
    building = trees / f".{tree_id}.{uuid.uuid4().hex[:8]}.building"
    building.mkdir()
    try:
        unique = {f.sha256: f for f in tree.files}
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            cached = dict(zip(unique, pool.map(lambda f: _cached_blob(store, f, blobs), unique.values())))
        for f in tree.files:
            dest = building / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            _place(cached[f.sha256], dest, f)
        if target.exists():
            shutil.rmtree(target)  # damaged: the rebuilt folder replaces it
        os.replace(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    log.info("code tree %s: %d files in %s", tree_id, len(tree.files), target)
    return target
