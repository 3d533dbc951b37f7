"""The output store as an S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, GCS's S3 API), through boto3.

Why boto3 and not fsspec/s3fs: the two promises the pipeline makes need request-level control. A taken key is
refused by the store itself (`If-None-Match: *` on PutObject and CompleteMultipartUpload), not by a racy look
first; and a big video goes up as a multipart upload holding one part in memory at a time, which becomes
visible only when completed, so a kill at any moment leaves no final-looking object. boto3 also reads the
standard credential chain (environment, profile, web identity on Kubernetes) and AWS_ENDPOINT_URL.
"""

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from comfy_pipeline.storage import base
from comfy_pipeline.storage.base import ObjectExists, ObjectMissing, StoredObject, StoreError

PART_BYTES = 8 * 1024 * 1024  # one part in memory at a time; S3 wants parts of 5 MiB or more
MULTIPART_FROM = 16 * 1024 * 1024  # smaller files go up in one PutObject (atomic too)
CHUNK = 1024 * 1024
ENDPOINT_ENV = "AWS_ENDPOINT_URL"


class S3Store:
    local = False

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.location = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
        self._client = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None) -> "S3Store":
        parts = urlsplit(url)
        bucket = parts.netloc
        if not bucket or parts.query or parts.fragment or "@" in bucket:
            raise StoreError(f"output location {_safe_url(url)!r}: write it as s3://bucket/prefix (no credentials, "
                             "query or fragment: they come from the AWS credential chain)")
        return cls(bucket, parts.path, endpoint_url=endpoint_url)

    # --- keys ---------------------------------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/") or "\x00" in key:
            raise StoreError(f"refusing key {key!r}: it is not a plain path inside {self.location}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1:] if self.prefix else full_key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def key_of(self, uri: str) -> str | None:
        root = f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''}"
        return uri[len(root):] if isinstance(uri, str) and uri.startswith(root) and len(uri) > len(root) else None

    def path_of(self, key: str) -> Path | None:
        return None

    # --- the client -----------------------------------------------------------------------------------------------

    @property
    def client(self):
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                # A session per store: boto3's default session is not thread-safe to create clients from.
                session = boto3.session.Session()
                try:
                    self._client = session.client(
                        "s3", endpoint_url=self.endpoint_url,
                        config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=16,
                                      connect_timeout=10, read_timeout=120))
                except ValueError:  # botocore's "Invalid endpoint: <the URL>", which may hold a password
                    raise StoreError(f"{self.location}: the S3 endpoint {_safe_url(self.endpoint_url)!r} is not a "
                                     "URL; set AWS_ENDPOINT_URL (or s3_endpoint_url) to e.g. "
                                     "http://minio:9000") from None
            return self._client

    def _call(self, what: str, key: str, operation: Callable, **kwargs):
        """One S3 request, its failure turned into a StoreError that says what to fix (never a secret)."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return operation(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            raise _client_error(exc, what, self._where(key)) from None
        except NoCredentialsError:
            raise StoreError(f"{what} {self._where(key)}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a web identity (IRSA) for this process") from None
        except BotoCoreError as exc:
            raise StoreError(f"{what} {self._where(key)}: {type(exc).__name__}: {exc}"
                             f"{self._endpoint_hint()}") from None

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"

    def _endpoint_hint(self) -> str:
        return f" (endpoint {_safe_url(self.endpoint_url)})" if self.endpoint_url else ""

    # --- writing --------------------------------------------------------------------------------------------------

    def put_file(self, source: Path, key: str, *, free_name: bool = False) -> str:
        size = os.path.getsize(source)
        for attempt in range(10_000 if free_name else 1):
            name = base.free_name(key, attempt)
            try:
                if size < MULTIPART_FROM:
                    with open(source, "rb") as body:
                        self._put(name, body)
                else:
                    self._multipart(source, name)
                return name
            except ObjectExists:
                if not free_name:
                    raise
        raise ObjectExists(f"{self.uri(key)} and the next free names are all taken")

    def put_bytes(self, key: str, data: bytes, *, replace: bool = False) -> str:
        self._put(key, data, replace=replace)
        return key

    def _put(self, key: str, body, *, replace: bool = False) -> None:
        condition = {} if replace else {"IfNoneMatch": "*"}  # the store refuses a taken key: no race
        self._call("writing", self._key(key), self.client.put_object, Key=self._key(key), Body=body, **condition)

    def _multipart(self, source: Path, key: str) -> None:
        """A multipart upload, one part in memory at a time. It stays invisible until completed; on any failure
        (a kill's KeyboardInterrupt included) it is aborted, and a SIGKILL's is swept later (abort_uploads)."""
        full = self._key(key)
        upload = self._call("starting an upload to", full, self.client.create_multipart_upload, Key=full)
        upload_id, parts = upload["UploadId"], []
        try:
            with open(source, "rb") as body:
                while chunk := body.read(PART_BYTES):
                    number = len(parts) + 1
                    answer = self._call("uploading to", full, self.client.upload_part, Key=full,
                                        UploadId=upload_id, PartNumber=number, Body=chunk)
                    del chunk
                    parts.append({"ETag": answer["ETag"], "PartNumber": number})
            self._call("finishing the upload to", full, self.client.complete_multipart_upload, Key=full,
                       UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*")
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            except Exception:
                pass  # swept later
            raise

    # --- reading --------------------------------------------------------------------------------------------------

    def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        full = self._key(key)
        answer = self._call("reading", full, self.client.get_object, Key=full)
        if max_bytes is not None and answer.get("ContentLength", 0) > max_bytes:
            answer["Body"].close()
            raise StoreError(f"{self.uri(key)} is larger than {max_bytes} bytes")
        try:
            return answer["Body"].read()
        finally:
            answer["Body"].close()

    def get_file(self, key: str, folder: Path) -> Path:
        """Streamed into a temp file in `folder`, renamed to the key's name (name_1 ... if taken) when whole."""
        import tempfile

        full = self._key(key)
        folder.mkdir(parents=True, exist_ok=True)
        answer = self._call("reading", full, self.client.get_object, Key=full)
        name = key.rsplit("/", 1)[-1]
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        body = answer["Body"]
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in body.iter_chunks(CHUNK):
                    out.write(chunk)
            for attempt in range(10_000):
                target = folder / base.free_name(name, attempt)
                try:
                    os.link(tmp, target)
                    return target
                except FileExistsError:
                    continue
            raise StoreError(f"too many files named like {name} in {folder}")
        finally:
            body.close()
            Path(tmp).unlink(missing_ok=True)

    def stat(self, key: str) -> StoredObject | None:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise _client_error(exc, "looking at", self._where(full)) from None
        except BotoCoreError as exc:  # an endpoint that does not answer: a StoreError like every other request's
            raise StoreError(f"looking at {self._where(full)}: {type(exc).__name__}: {exc}"
                             f"{self._endpoint_hint()}") from None
        return StoredObject(key, head["ContentLength"], head["LastModified"].timestamp(), head.get("ETag", ""))

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def objects(self, prefix: str, *, recursive: bool = True, page_size: int = 1000) -> Iterator[StoredObject]:
        folder = self._key(prefix).rstrip("/") + "/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        options = {} if recursive else {"Delimiter": "/"}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=folder, PaginationConfig={"PageSize": page_size}, **options)
        for page in self._pages(pages, folder):
            for item in page.get("Contents", ()):
                yield StoredObject(self._relative(item["Key"]), item["Size"], item["LastModified"].timestamp(),
                                   item.get("ETag", ""))

    def _pages(self, pages, folder: str):
        from botocore.exceptions import BotoCoreError, ClientError

        iterator = iter(pages)
        while True:
            try:
                page = next(iterator)
            except StopIteration:
                return
            except ClientError as exc:
                raise _client_error(exc, "listing", self._where(folder)) from None
            except BotoCoreError as exc:
                raise StoreError(f"listing {self._where(folder)}: {exc}{self._endpoint_hint()}") from None
            yield page

    # --- moving and cleaning up -----------------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        self._call("deleting", self._key(key), self.client.delete_object, Key=self._key(key))

    def move(self, key: str, to_key: str) -> str:
        """Copy then delete (S3 has no rename): the source stays until the copy is whole."""
        if self.exists(to_key):
            raise ObjectExists(f"{self.uri(to_key)} already exists")
        source = {"Bucket": self.bucket, "Key": self._key(key)}
        self._call("copying to", self._key(to_key), self.client.copy_object, Key=self._key(to_key),
                   CopySource=source)
        self.delete(key)
        return to_key

    def abort_uploads(self, prefix: str, abandoned: Callable[[str], bool]) -> list[str]:
        """Abort the unfinished multipart uploads under `prefix` whose key `abandoned` says a dead run was
        writing (by key, not by age: some S3-compatible stores report no real start time)."""
        folder = self._key(prefix).rstrip("/") + "/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        aborted = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=folder)
        for page in self._pages(pages, folder):
            for upload in page.get("Uploads", ()):
                key = self._relative(upload["Key"])
                if abandoned(key):
                    self._call("aborting the upload to", upload["Key"], self.client.abort_multipart_upload,
                               Key=upload["Key"], UploadId=upload["UploadId"])
                    aborted.append(key)
        return aborted


def _client_error(exc, what: str, where: str) -> StoreError:
    """A ClientError as a StoreError naming the fix; ObjectExists/ObjectMissing for a taken/missing key."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in {"PreconditionFailed", "ConditionalRequestConflict"} or status == 412:
        return ObjectExists(f"{where} already exists; outputs are never overwritten")
    if code in {"NoSuchKey", "404", "NotFound"}:
        return ObjectMissing(f"{where} does not exist")
    if code == "NoSuchBucket":
        return StoreError(f"{what} {where}: the bucket does not exist; create it, or fix the output location "
                          "(COMFY_PIPELINE_OUTPUT_DIR / output_dir)")
    if code in {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
        return StoreError(f"{what} {where}: access denied ({code}); check the AWS credentials this process uses "
                          "and that they may read, write, list and delete under the output location")
    return StoreError(f"{what} {where}: {code or status}: {error.get('Message', '')}".rstrip(": "))


def _safe_url(url: str | None) -> str:
    """A URL without any user:password part."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.username or parts.password:
        return parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()
    return url
