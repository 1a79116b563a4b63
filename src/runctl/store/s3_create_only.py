"""Create-only writes to S3 (``if_none_match=True`` on ``S3Store.upload`` and ``copy``):
an object another writer already put at the key is never replaced; the write fails with
PreconditionFailed (412, or 409 ConditionalRequestConflict when a concurrent conditional
write won), translated by the store's ``_translate`` like every botocore error.

- Uploads below the multipart threshold: one PutObject with If-None-Match, the open file
  streamed as its body. At or above it: a multipart upload whose parts go up in parallel
  (at most the transfer config's max_concurrency) and whose completion carries
  If-None-Match. Either way with the checksum the transfer manager would ask for.
- Copies: UploadPartCopy parts in a multipart upload completed with If-None-Match (see
  ``_copy_create_only`` for why not CopyObject's own If-None-Match).
- A multipart upload that fails or is refused is aborted: none is left open.
- Each write carries a token of its own in the object's metadata (x-amz-meta-runctl-write):
  when a retry is refused because the first try landed (its answer lost), the object holds
  this write's token, and the write counts as done rather than refused.

A mixin of ``S3Store``, kept apart to keep that module small; it uses the store's client,
settings and error translation.
"""

from __future__ import annotations

import base64
import logging
import os
import uuid
from pathlib import Path

from runctl.errors import NotFoundError, PreconditionFailed, StoreError
from runctl.models import FileEntry
from runctl.store.base import ProgressCallback, content_mismatch

log = logging.getLogger(__name__)

#: The object metadata that names the write that created an object (see the module docstring).
WRITE_TOKEN = "runctl-write"
#: The object metadata holding the sha256 of the content a checked upload or copy wrote
#: (see ``_copy_create_only``).
SHA256_META = "runctl-sha256"


class _CopyMismatch(Exception):
    """A copy's part does not hold the expected content (the upload is aborted)."""


class _FilePart:
    """``length`` bytes of an open file from ``start``, as a seekable stream: the body of
    one part (botocore reads it, and seeks back to checksum or retry it)."""

    def __init__(self, f, start: int, length: int) -> None:
        self._f, self._start, self._length, self._pos = f, start, length, 0

    def read(self, amount: int | None = -1) -> bytes:
        left = self._length - self._pos
        count = left if amount is None or amount < 0 else min(amount, left)
        if count <= 0:
            return b""
        self._f.seek(self._start + self._pos)
        data = self._f.read(count)
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return self._length


class CreateOnlyWrites:
    def _checksum_args(self) -> dict:
        """The checksum the transfer manager asks for on uploads (CRC32 unless the client is
        configured to send checksums only when required), so create-only uploads get the same."""
        if self.client.meta.config.request_checksum_calculation == "when_supported":
            return {"ChecksumAlgorithm": "CRC32"}
        return {}

    def _upload_create_only(self, path: Path, key: str, progress: ProgressCallback | None,
                            sha256: str | None = None) -> None:
        """Upload only if ``key`` does not exist: one PutObject with If-None-Match below the
        multipart threshold, else a multipart upload completed with If-None-Match.

        ``sha256``: the file's content hash, known already (a snapshot's manifest entry):
        kept in the object's metadata, for later copies to trust the object without reading
        it back; a PutObject also sends it as the request's checksum, which S3 checks
        against the bytes it receives (BadDigest when the file changed since it was hashed).
        """
        config = self.transfer_config
        token = uuid.uuid4().hex
        metadata = {WRITE_TOKEN: token, **({SHA256_META: sha256} if sha256 else {})}
        checksum = ({"ChecksumSHA256": base64.b64encode(bytes.fromhex(sha256)).decode()} if sha256
                    else self._checksum_args())
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < config.multipart_threshold:
                    try:
                        with self._translate("upload to", key, permission="s3:PutObject"):
                            self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=f,
                                                   ContentLength=size, IfNoneMatch="*", Metadata=metadata,
                                                   **checksum)
                    except PreconditionFailed:
                        if not self._written_by(key, token):
                            raise
                    if progress:
                        progress(size)
                    return
        except FileNotFoundError as exc:
            raise NotFoundError(f"{path} does not exist") from exc
        except OSError as exc:  # the file (a failed request is a StoreError already, from _translate)
            raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
        part = config.multipart_chunksize
        ranges = [(number, start, min(part, size - start)) for number, start in enumerate(range(0, size, part), 1)]

        def send(upload_id: str, item: tuple[int, int, int]) -> dict:
            number, start, length = item
            try:
                with open(path, "rb") as f, self._translate("upload to", key, permission="s3:PutObject"):
                    response = self.client.upload_part(  # streamed from the file, never whole in memory
                        Bucket=self.bucket, Key=self._full(key), UploadId=upload_id, PartNumber=number,
                        Body=_FilePart(f, start, length), ContentLength=length, **self._checksum_args())
            except FileNotFoundError as exc:
                raise NotFoundError(f"{path} does not exist") from exc
            except OSError as exc:  # the file (a failed request is a StoreError already)
                raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
            if progress:
                progress(length)
            return {"PartNumber": number, "ETag": response["ETag"],
                    **{k: v for k, v in response.items() if k.startswith("Checksum") and k != "ChecksumType"}}

        self._multipart_create_only(key, ranges, send, permission="s3:PutObject",
                                    extra={**self._checksum_args(), "Metadata": metadata}, token=token)

    def _written_by(self, key: str, token: str) -> bool:
        """Whether the object at ``key`` is the one the write of ``token`` created: after a
        refusal, tells a retry that met our own landed write from another writer's object."""
        try:
            with self._translate("check", key, permission="s3:GetObject"):
                metadata = self.client.head_object(Bucket=self.bucket, Key=self._full(key)).get("Metadata", {})
        except StoreError:
            return False
        return metadata.get(WRITE_TOKEN) == token

    def _multipart_create_only(self, key: str, items: list, send, *, permission: str, extra: dict, token: str,
                               before_complete=None) -> None:
        """One multipart upload of ``items`` (``send(upload_id, item)`` puts one part and
        returns its entry for the completion), in parallel, completed with If-None-Match;
        ``before_complete(parts)`` may raise to give up. Aborted on any failure. ``extra``
        holds ``token`` in its Metadata."""
        from concurrent.futures import ThreadPoolExecutor

        full = self._full(key)
        with self._translate("upload to", key, permission=permission):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=full, **extra)["UploadId"]
        try:
            workers = max(1, min(self.transfer_config.max_concurrency, len(items)))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="runctl-s3-part") as pool:
                futures = [pool.submit(send, upload_id, item) for item in items]
                try:
                    parts = [future.result() for future in futures]
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
            if before_complete is not None:
                before_complete(parts)
            try:
                with self._translate("upload to", key, permission=permission):
                    self.client.complete_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id,
                                                          MultipartUpload={"Parts": parts}, IfNoneMatch="*")
            except PreconditionFailed:
                if not self._written_by(key, token):
                    raise
        except BaseException:
            try:
                with self._translate("abort the upload to", key, permission="s3:AbortMultipartUpload"):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            except StoreError as exc:
                log.warning("could not abort the multipart upload %s to %s: %s", upload_id, self._where(key), exc)
            raise
        self._bucket_seen = True

    def _copy_create_only(self, src_key: str, dst_key: str, expect: FileEntry | None) -> str | None:
        """Copy only if ``dst_key`` does not exist, then how the copy differs from ``expect``.

        CopyObject's own If-None-Match is in botocore's model, but moto (the emulator every
        test runs on) ignores it and copies over the existing object, as an S3-compatible
        store could: the copy is made of UploadPartCopy parts in a multipart upload completed
        with If-None-Match instead, which both honour. Up to COPY_PART_THRESHOLD that is one
        part, whose SHA256 S3 returns: checked before completing, so a copy that does not
        match ``expect`` is never published. Above it (parallel parts), or where no part
        checksum comes back (moto, some S3-compatible stores), the copy is read back and
        hashed after completing, and deleted again if it does not match, unless the source
        names ``expect``'s sha256 in its metadata (SHA256_META, written by a checked upload
        or copy that hashed that content on the way in; an object replaced since carries
        its new writer's metadata, not ours). The copy carries the sha256 on.
        """
        with self._translate("check", src_key, permission="s3:GetObject"):
            head = self.client.head_object(Bucket=self.bucket, Key=self._full(src_key))
        size = head["ContentLength"]
        if expect is not None:
            problem = content_mismatch(expect, size=size)
            if problem:
                return problem
        vouched = expect is not None and head.get("Metadata", {}).get(SHA256_META) == expect.sha256
        config = self._copy_settings()
        if size <= config.multipart_threshold:
            ranges = [(1, None)]  # the whole object, whatever its size (0 too)
        else:
            part = config.multipart_chunksize
            ranges = [(n, f"bytes={start}-{min(start + part, size) - 1}") for n, start in enumerate(range(0, size, part), 1)]
        source = {"Bucket": self.bucket, "Key": self._full(src_key)}
        permission = "s3:GetObject on the source and s3:PutObject"

        def send(upload_id: str, item: tuple[int, str | None]) -> dict:
            number, byte_range = item
            with self._translate(f"copy {src_key} to", dst_key, permission=permission):
                result = self.client.upload_part_copy(
                    Bucket=self.bucket, Key=self._full(dst_key), UploadId=upload_id, PartNumber=number,
                    CopySource=source, **({"CopySourceRange": byte_range} if byte_range else {}))["CopyPartResult"]
            entry = {"PartNumber": number, "ETag": result["ETag"]}
            if result.get("ChecksumSHA256"):
                entry["ChecksumSHA256"] = result["ChecksumSHA256"]
            return entry

        checked: list[str | None] = [None]  # the digest checked before completing, if any

        def check(parts: list[dict]) -> None:
            if expect is None or len(parts) != 1 or "ChecksumSHA256" not in parts[0]:
                return
            digest = base64.b64decode(parts[0]["ChecksumSHA256"]).hex()
            problem = content_mismatch(expect, size=size, sha256=digest)
            if problem:
                raise _CopyMismatch(problem)
            checked[0] = digest

        token = uuid.uuid4().hex
        metadata = {WRITE_TOKEN: token, **({SHA256_META: expect.sha256} if expect is not None else {})}
        try:
            # A vouched source needs no checksum of the copy: S3 would compute one for nothing.
            checksum = {} if vouched else {"ChecksumAlgorithm": "SHA256"}
            self._multipart_create_only(dst_key, ranges, send, permission=permission, token=token,
                                        extra={**checksum, "Metadata": metadata}, before_complete=check)
        except _CopyMismatch as mismatch:  # aborted: nothing was published
            return str(mismatch)
        if expect is None or checked[0] is not None or vouched:
            return None
        problem = content_mismatch(expect, size=size, sha256=self._sha256_of(dst_key))
        if problem:
            with self._translate("delete the bad copy", dst_key, permission="s3:DeleteObject"):
                self.client.delete_object(Bucket=self.bucket, Key=self._full(dst_key))
        return problem
