"""An environment archive unpacked as it downloads: the GET's body is hashed and inflated
(zlib, in this process) as it comes and piped into the extraction, so download,
decompression and writing overlap and no archive file is written. The hash is known only
at the end: a mismatch then fails the restore and the caller removes the folder (all of it
written here).

The extraction is GNU tar reading the pipe (``tar -xf -``) where there is one: it writes
the files in a process of its own while this one downloads and inflates; Python's
``tarfile`` does all of it on one core. GNU's ``tar -xzf -`` was slower still: its gzip
inflates more slowly than zlib (figures in docs/PERFORMANCE.md). GNU tar keeps every
member inside the folder (it strips a leading ``/``, skips a name with ``..``, and
extracts a symlink that points out of the folder last, so no later member is written
through it), and its stripping or skipping is taken as a refusal of the archive. A
device, FIFO or socket is refused after the fact (found in the folder, which then goes),
as the ``tarfile`` path refuses it before.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO

from runctl.errors import IntegrityError, StoreError

_CHUNK = 1 << 20
_INFLATED_MAX = 8 << 20
#: What GNU tar says when it strips or skips a member that would land outside the folder:
#: runctl never packs one, so such an archive is refused as a whole, as by ``member_ok``.
_REFUSALS = ("Removing leading", "contains '..'", "contains `..'")


class HashingReader:
    """A file-like over ``body`` that counts and hashes every byte read through it."""

    def __init__(self, body: BinaryIO) -> None:
        self._body = body
        self._digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._body.read(size)
        self._digest.update(data)
        self.size += len(data)
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def unpack_stream(body: BinaryIO, folder: Path, name: str, *, expect_size: int | None,
                  expect_sha256: str | None) -> None:
    """Unpack the gzip'd tar ``body`` into ``folder`` (absent: made here), checking at the
    end that its bytes were ``expect_size`` long with sha256 ``expect_sha256``.
    IntegrityError on a mismatch or a refused member, StoreError when the stream or the
    archive is broken; ``folder`` may then hold part of it (the caller removes it)."""
    reader = HashingReader(body)
    folder.mkdir(parents=True)
    if gnu_tar() is not None:
        _with_gnu_tar(reader, folder, name)
    else:
        _with_tarfile(reader, folder, name)
    while reader.read(_CHUNK):  # the end-of-archive padding tar need not read
        pass
    if reader.size != expect_size or reader.hexdigest() != expect_sha256:
        raise IntegrityError(f"{name} does not match its record (size {reader.size}, expected {expect_size}); "
                             "delete it and its record to rebuild the environment")


@functools.cache
def gnu_tar() -> str | None:
    """GNU tar's path, or None (no tar, or another one whose safety defaults differ)."""
    found = shutil.which("tar")
    if found is None:
        return None
    try:
        said = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return found if "GNU tar" in said else None


def _with_gnu_tar(reader: HashingReader, folder: Path, name: str) -> None:
    said_file = tempfile.TemporaryFile()  # not a pipe: tar could fill one and stop while we write to it
    tar = subprocess.Popen([gnu_tar(), "-x", "-f", "-", "-C", str(folder), "--no-same-owner"],
                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=said_file)
    try:
        try:
            for data in _inflated(reader):
                tar.stdin.write(data)
        except BrokenPipeError:
            pass  # tar stopped early: its exit status and message say why
        except zlib.error as exc:
            raise StoreError(f"cannot unpack the environment archive {name}: {exc}") from exc
        finally:
            with contextlib.suppress(BrokenPipeError):
                tar.stdin.close()
        tar.wait()
        said_file.seek(0)
        said = said_file.read().decode(errors="replace").strip().splitlines()
        refused = [line for line in said if any(sign in line for sign in _REFUSALS)]
        if refused:
            raise IntegrityError(f"environment archive {name}: refusing member ({refused[0]})")
        if tar.returncode != 0:
            raise StoreError(f"cannot unpack the environment archive {name}: "
                             f"{said[-1] if said else f'tar exited {tar.returncode}'}")
    except BaseException:
        _stop(tar)
        raise
    finally:
        said_file.close()
    _refuse_special_files(folder, name)


def _inflated(reader: HashingReader):
    """The gzip stream's bytes inflated, a bounded piece at a time (however well a piece
    compresses, it never takes more memory than that)."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
    while chunk := reader.read(_CHUNK):
        while chunk:
            yield inflate.decompress(chunk, _INFLATED_MAX)
            chunk = inflate.unconsumed_tail
    yield inflate.flush()


def _stop(tar: subprocess.Popen) -> None:
    if tar.poll() is None:
        tar.kill()
    tar.wait()


def _refuse_special_files(folder: Path, name: str) -> None:
    for root, dirs, files in os.walk(folder):
        for entry in (*dirs, *files):
            mode = os.lstat(os.path.join(root, entry)).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                raise IntegrityError(f"environment archive {name}: refusing member "
                                     f"{os.path.relpath(os.path.join(root, entry), folder)!r}")


def _with_tarfile(reader: HashingReader, folder: Path, name: str) -> None:
    """One pass, refusing members that would land outside ``folder`` or are devices.
    Symlinks stay as they are: a venv's ``bin/python`` names the interpreter it was made
    with, the same path on every instance of the AMI."""
    extract = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
    try:
        with tarfile.open(fileobj=reader, mode="r|gz") as tar:
            for member in tar:
                if not member_ok(member):
                    raise IntegrityError(f"environment archive {name}: refusing member {member.name!r}")
                tar.extract(member, folder, **extract)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise StoreError(f"cannot unpack the environment archive {name}: {exc}") from exc


def member_ok(member: tarfile.TarInfo) -> bool:
    parts = Path(member.name).parts
    if member.name.startswith("/") or ".." in parts:
        return False
    if member.islnk() and (member.linkname.startswith("/") or ".." in Path(member.linkname).parts):
        return False
    return member.isfile() or member.isdir() or member.issym() or member.islnk()
