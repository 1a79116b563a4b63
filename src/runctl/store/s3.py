"""A checkpoint store in an S3 bucket under a prefix (``s3://bucket/prefix``).

boto3 is imported when a store is made, never when ``runctl.store`` is imported. The
standard credential chain applies; botocore itself honours ``AWS_ENDPOINT_URL`` (moto,
MinIO, LocalStack); an explicit ``endpoint_url`` overrides it. One client is created on
first use and shared by every thread (botocore clients are thread-safe).

Every AWS error is translated in ``_translate`` and nowhere else in the store: by
``runctl.errors.aws`` (the one translation of runctl), then in the store's terms.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from runctl.errors import AccessDenied, IntegrityError, NotFoundError, PreconditionFailed, StoreError
from runctl.errors.aws import aws_exceptions, cloud_error, error_class, store_error, transport_errors
from runctl.models import FileEntry
from runctl.store.base import Blob, ObjectInfo, ProgressCallback, content_mismatch, download_temp
from runctl.store.s3_create_only import CreateOnlyWrites
from runctl.store.s3_downloads import CheckedDownloads

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MULTIPART_THRESHOLD = 8 * MiB
MULTIPART_CHUNKSIZE = 8 * MiB
COPY_PART_THRESHOLD = 256 * MiB
COPY_PART_SIZE = 64 * MiB
TRANSFER_CONCURRENCY = 8
MAX_POOL_CONNECTIONS = 64  # parallel files (8) x parts per file (8)
DELETE_BATCH = 1000  # the most DeleteObjects accepts in one request

def _check_key(key: str) -> str:
    """The same rule as LocalStore: relative, '/'-separated, no empty, '.' or '..' parts."""
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise StoreError(f"invalid store key {key!r}")
    return key


def new_session(**kwargs):
    """A boto3 Session (standard credential chain), its errors translated: a missing
    AWS_PROFILE fails here already."""
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.session.Session(**kwargs)
    except BotoCoreError as exc:
        raise store_error(cloud_error(exc, "load the AWS configuration")) from exc


def _is_transport(exc: OSError) -> bool:
    from botocore.exceptions import BotoCoreError

    return isinstance(exc, (BotoCoreError, *transport_errors()))


class _TranslatedBody:
    """A GET's streaming body whose read errors (a reset, a timeout) become store errors."""

    def __init__(self, body, translate: Callable[[], contextlib.AbstractContextManager]) -> None:
        self._body = body
        self._translate = translate

    def read(self, size: int = -1) -> bytes:
        with self._translate():
            return self._body.read(None if size < 0 else size)

    def close(self) -> None:
        self._body.close()


class S3Store(CreateOnlyWrites, CheckedDownloads):
    def __init__(self, bucket: str, prefix: str = "", *, session=None, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._session = session
        self._endpoint_url = endpoint_url
        self._client = None
        self._transfer_config = None
        self._copy_config = None
        self._lock = threading.Lock()
        self._bucket_seen = False  # a request on the bucket has succeeded once
        self._manager = None  # the transfer manager of large checked downloads (s3_downloads)
        self._manager_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Store({self.url})"

    # -- plumbing --------------------------------------------------------------------
    @property
    def client(self):
        """The boto3 S3 client, created on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self):
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        session = self._session or new_session()
        config = Config(
            # max_attempts is left to AWS_MAX_ATTEMPTS / the profile (default 3 in standard mode)
            retries={"mode": "standard"},
            signature_version="s3v4",  # presigned URLs that every region accepts
            max_pool_connections=MAX_POOL_CONNECTIONS,
            connect_timeout=10,
            read_timeout=60,
        )
        def transfer(threshold: int, part: int) -> TransferConfig:
            return TransferConfig(multipart_threshold=threshold, multipart_chunksize=part,
                                  max_concurrency=TRANSFER_CONCURRENCY, use_threads=True,
                                  preferred_transfer_client="classic")

        self._transfer_config = transfer(MULTIPART_THRESHOLD, MULTIPART_CHUNKSIZE)
        # Server-side copies: one CopyObject up to COPY_PART_THRESHOLD (no bytes cross the
        # network, so small parts would only add requests), parallel part copies above it.
        self._copy_config = transfer(COPY_PART_THRESHOLD, COPY_PART_SIZE)
        with self._translate("connect to S3"):
            return session.client("s3", endpoint_url=self._endpoint_url, config=config)

    @property
    def transfer_config(self):
        self.client  # noqa: B018 - creates both
        return self._transfer_config

    def _copy_settings(self):
        self.client  # noqa: B018 - creates the configs with the client
        return self._copy_config

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _full_prefix(self, prefix: str) -> str:
        """A listing prefix: '' means everything under the store's root."""
        if not self.prefix:
            return prefix
        return f"{self.prefix}/{prefix}"

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def _where(self, key: str | None) -> str:
        return f"{self.url}/{key}" if key else self.url

    @contextlib.contextmanager
    def _translate(self, action: str, key: str | None = None, *, permission: str | None = None):
        """Turn AWS errors into one-line store errors naming what failed (``runctl.errors.aws``).

        ``action`` says what was attempted ("read", "upload to" ...), ``permission`` the IAM
        action it needs, for the access-denied message. That message names no policy to
        print: the store runs on the user's machine and, with the instance role, on instances.
        """
        where = self._where(key)
        try:
            yield
        except aws_exceptions() as exc:
            error = cloud_error(exc, f"{action} {where}", permission=permission, service="S3",
                                subject=where if key is not None else None, endpoint=self._endpoint_desc(),
                                policy_hint=None)
            if error.code == "NoSuchBucket":
                raise self._no_bucket() from exc
            raise store_error(error) from exc

    def _endpoint_desc(self) -> str:
        if self._client is not None:
            return self._client.meta.endpoint_url
        return self._endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "(default AWS endpoint)"

    def _no_bucket(self) -> StoreError:
        return StoreError(
            f"bucket '{self.bucket}' does not exist; create it (runctl aws setup, or aws s3 mb "
            f"s3://{self.bucket}) or fix the store URL"
        )

    def _check_bucket_after_404(self) -> None:
        """HEAD requests answer a bare 404 for a missing bucket too: tell the two apart once."""
        if self._bucket_seen:
            return
        try:
            with self._translate("check", permission="s3:ListBucket"):
                self.client.head_bucket(Bucket=self.bucket)
        except NotFoundError as exc:
            raise self._no_bucket() from exc
        self._bucket_seen = True

    # -- the protocol ----------------------------------------------------------------
    def read(self, key: str) -> Blob:
        _check_key(key)
        with self._translate("read", key, permission="s3:GetObject"):
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
            data = response["Body"].read()
        self._bucket_seen = True
        return Blob(data, response["ETag"])

    def write(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        _check_key(key)
        extra = {}
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = if_match
        try:
            with self._translate("write", key, permission="s3:PutObject"):
                response = self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data, **extra)
        except NotFoundError as exc:
            # IfMatch on a missing key answers 404: for the caller the version did not match.
            if if_match is None:
                raise
            raise PreconditionFailed(f"{self._where(key)} changed since it was read (it no longer exists)") from exc
        self._bucket_seen = True
        return response["ETag"]

    def upload(self, path: Path, key: str, *, progress: ProgressCallback | None = None,
               if_none_match: bool = False) -> None:
        _check_key(key)
        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"{path} does not exist or is not a file")
        if if_none_match:
            self._upload_create_only(path, key, progress)
            return
        with self._translate("upload to", key, permission="s3:PutObject"):
            try:
                self.client.upload_file(
                    str(path), self.bucket, self._full(key), Callback=progress, Config=self.transfer_config
                )
            except FileNotFoundError as exc:  # removed between the check and the read
                raise NotFoundError(f"{path} does not exist") from exc
            except OSError as exc:
                if _is_transport(exc):
                    raise  # some botocore errors and every socket error are OSErrors too
                raise StoreError(f"cannot read {path}: {exc.strerror}") from exc

    def upload_checked(self, path: Path, key: str, *, expect: FileEntry,
                       progress: ProgressCallback | None = None) -> None:
        """A create-only upload of a file whose content ``expect`` describes (a snapshot's):
        its sha256 goes along, checked by S3 where one request carries the file and kept
        for later copies (``s3_create_only``)."""
        _check_key(key)
        if not Path(path).is_file():
            raise NotFoundError(f"{path} does not exist or is not a file")
        self._upload_create_only(Path(path), key, progress, sha256=expect.sha256)

    def download(self, key: str, path: Path, *, progress: ProgressCallback | None = None) -> None:
        _check_key(key)
        path = Path(path)
        temp = download_temp(path)
        try:
            try:
                with self._translate("download", key, permission="s3:GetObject"):
                    self.client.download_file(
                        self.bucket, self._full(key), str(temp), Callback=progress, Config=self.transfer_config
                    )
            except NotFoundError:
                self._check_bucket_after_404()
                raise
            os.replace(temp, path)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror}") from exc
        finally:
            with contextlib.suppress(OSError):
                temp.unlink()

    def open_read(self, key: str) -> BinaryIO:
        """The GET's body, its read errors translated (a body cut off is not resumed: the
        caller, which consumes it as it comes, cannot take the bytes again)."""
        _check_key(key)
        try:
            with self._translate("read", key, permission="s3:GetObject"):
                body = self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        except NotFoundError:
            self._check_bucket_after_404()
            raise
        self._bucket_seen = True
        return _TranslatedBody(body, lambda: self._translate("read", key, permission="s3:GetObject"))

    def copy(self, src_key: str, dst_key: str, *, expect: FileEntry | None = None,
             if_none_match: bool = False) -> None:
        _check_key(src_key)
        _check_key(dst_key)
        try:
            if if_none_match:
                problem = self._copy_create_only(src_key, dst_key, expect)
            elif expect is None:
                self._copy_managed(src_key, dst_key)
                return
            else:
                problem = self._copy_checked(src_key, dst_key, expect)
        except NotFoundError as exc:
            self._check_bucket_after_404()
            raise NotFoundError(f"{self._where(src_key)} does not exist") from exc
        if problem:
            raise IntegrityError(f"{self._where(src_key)} does not hold the expected content: {problem}")

    def _copy_managed(self, src_key: str, dst_key: str) -> None:
        source = {"Bucket": self.bucket, "Key": self._full(src_key)}
        with self._translate(f"copy {src_key} to", dst_key, permission="s3:GetObject on the source and s3:PutObject"):
            # A fresh full-object checksum for the copy: a multipart source's composite
            # checksum does not describe the copied object.
            self.client.copy(source, self.bucket, self._full(dst_key), ExtraArgs={"ChecksumAlgorithm": "CRC32"},
                             Config=self._copy_settings())

    def _copy_checked(self, src_key: str, dst_key: str, expect: FileEntry) -> str | None:
        """Copy, then how the copy differs from ``expect`` (None: it matches; a copy that
        does not is deleted again).

        Up to COPY_PART_THRESHOLD one CopyObject asks S3 for the copy's SHA256, which for a
        single-part object is the manifest's sha256 in base64: no bytes cross the network.
        Above it the parallel part copy leaves only a composite checksum (a hash of the
        parts' hashes), which no manifest entry can be compared with: the copy is read back
        and hashed instead, as costly as an upload, but only for files that large.
        """
        with self._translate("check", src_key, permission="s3:GetObject"):
            size = self.client.head_object(Bucket=self.bucket, Key=self._full(src_key))["ContentLength"]
        problem = content_mismatch(expect, size=size)
        if problem:
            return problem
        checksum = None
        if size <= COPY_PART_THRESHOLD:
            with self._translate(f"copy {src_key} to", dst_key,
                                 permission="s3:GetObject on the source and s3:PutObject"):
                result = self.client.copy_object(
                    CopySource={"Bucket": self.bucket, "Key": self._full(src_key)}, Bucket=self.bucket,
                    Key=self._full(dst_key), ChecksumAlgorithm="SHA256")["CopyObjectResult"]
            checksum = result.get("ChecksumSHA256")
        else:
            self._copy_managed(src_key, dst_key)
        # An S3-compatible store that computes no checksum gets the read-back check too.
        digest = base64.b64decode(checksum).hex() if checksum else self._sha256_of(dst_key)
        problem = content_mismatch(expect, size=size, sha256=digest)
        if problem:
            with self._translate("delete the bad copy", dst_key, permission="s3:DeleteObject"):
                self.client.delete_object(Bucket=self.bucket, Key=self._full(dst_key))
        return problem

    def _sha256_of(self, key: str) -> str:
        """The sha256 of the object's bytes, streamed (nothing written to disk)."""
        digest = hashlib.sha256()
        with self._translate("read", key, permission="s3:GetObject"):
            body = self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
            for chunk in body.iter_chunks(MiB):
                digest.update(chunk)
        return digest.hexdigest()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        with self._translate("list", prefix or None, permission="s3:ListBucket"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._full_prefix(prefix)):
                self._bucket_seen = True
                for item in page.get("Contents", ()):
                    yield ObjectInfo(self._relative(item["Key"]), item["Size"])

    def list_dirs(self, prefix: str) -> list[str]:
        full = self._full_prefix(prefix)
        if full and not full.endswith("/"):
            full += "/"
        names = []
        paginator = self.client.get_paginator("list_objects_v2")
        with self._translate("list", prefix or None, permission="s3:ListBucket"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full, Delimiter="/"):
                for common in page.get("CommonPrefixes", ()):
                    names.append(common["Prefix"][len(full) :].rstrip("/"))
        self._bucket_seen = True
        return sorted(name for name in names if name)

    def exists(self, key: str) -> bool:
        _check_key(key)
        try:
            with self._translate("check", key, permission="s3:GetObject (and s3:ListBucket)"):
                self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except NotFoundError:
            self._check_bucket_after_404()
            return False
        self._bucket_seen = True
        return True

    def delete(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            batch.append(self._full(_check_key(key)))
            if len(batch) == DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, full_keys: list[str]) -> None:
        with self._translate("delete objects in", None, permission="s3:DeleteObject"):
            response = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in full_keys], "Quiet": True},
            )
        errors = [e for e in response.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
        if errors:
            first = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            key, code = self._relative(first.get("Key", "")), str(first.get("Code", ""))
            if error_class(code) is AccessDenied:
                raise StoreError(f"access denied to delete {self._where(key)}; the credentials lack s3:DeleteObject{more}",
                                 code=code, operation="DeleteObjects")
            raise StoreError(f"cannot delete {self._where(key)}: {code}: {first.get('Message')}{more}", code=code,
                             operation="DeleteObjects")

    def presign(self, key: str, expires_s: int = 3600) -> str:
        _check_key(key)
        with self._translate("presign", key):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self._full(key)}, ExpiresIn=expires_s
            )
