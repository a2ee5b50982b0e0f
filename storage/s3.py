"""S3 object store (MinIO, AWS, LocalStack, moto server) through boto3.

Uploads larger than one part go as a sequential multipart upload, so memory stays
at about one part (``PART_BYTES``) whatever the object's size; downloads stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bricks.errors import BadInput, NotFound, Transient
from storage.keys import BUCKETS, validate_bucket, validate_key, validate_metadata, validate_prefix
from storage.objects import (
    CHUNK_BYTES,
    DEFAULT_CONTENT_TYPE,
    HashedSource,
    ObjectData,
    ObjectInfo,
    ObjectPage,
    ObjectStore,
)
from storage.settings import StorageSettings

#: size of one multipart part, in bytes (S3 requires at least 5 MiB)
PART_BYTES = 8 * 1024 * 1024
_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


class S3ObjectStore(ObjectStore):
    """Objects in S3 buckets.

    Parameters
    ----------
    endpoint_url
        S3 endpoint (None: AWS).
    access_key, secret_key
        Credentials; None falls back to boto3's usual chain (AWS variables, profiles).
    region
        Region name used for signing.
    bucket_prefix
        Prepended to the system's bucket names, so several stacks (or test runs)
        can share one S3 account.
    """

    backend = "s3"

    def __init__(
        self,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        bucket_prefix: str = "",
    ) -> None:
        self.bucket_prefix = bucket_prefix
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
        )

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> S3ObjectStore:
        """Endpoint from ``MXT_S3_ENDPOINT``; credentials from the secret files if present."""
        return cls(
            endpoint_url=settings.s3_endpoint,
            access_key=settings.secret("s3-access-key"),
            secret_key=settings.secret("s3-secret-key"),
            region=settings.s3_region,
        )

    def _bucket(self, bucket: str) -> str:
        return self.bucket_prefix + validate_bucket(bucket)

    def ensure_buckets(self, buckets: tuple[str, ...] = BUCKETS) -> None:
        """Create each bucket unless it exists already (owned by us)."""
        for bucket in buckets:
            name = self._bucket(bucket)
            with _s3_errors(f"create bucket {name}"):
                try:
                    self.client.head_bucket(Bucket=name)
                except ClientError as exc:
                    if _code(exc) not in _MISSING:
                        raise
                    self.client.create_bucket(Bucket=name)

    def put(
        self,
        bucket: str,
        key: str,
        data: ObjectData,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        """Hash first (S3 metadata is fixed when the upload starts), then upload."""
        name = self._bucket(bucket)
        validate_key(key)
        metadata = validate_metadata(metadata)
        with HashedSource(data) as source, _s3_errors(f"write {bucket}/{key}"):
            full_metadata = {**metadata, "sha256": source.sha256}
            args = {"Bucket": name, "Key": key, "ContentType": content_type}
            if source.size <= PART_BYTES:
                self.client.put_object(Body=source.file.read(), Metadata=full_metadata, **args)
            else:
                self._multipart(source, full_metadata, args)
        return self.head(bucket, key)

    def _multipart(self, source: HashedSource, metadata: dict[str, str], args: dict) -> None:
        upload = self.client.create_multipart_upload(Metadata=metadata, **args)
        upload_id = upload["UploadId"]
        parts = []
        try:
            number = 1
            while chunk := source.file.read(PART_BYTES):
                part = self.client.upload_part(
                    Bucket=args["Bucket"],
                    Key=args["Key"],
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                )
                parts.append({"ETag": part["ETag"], "PartNumber": number})
                number += 1
            self.client.complete_multipart_upload(
                Bucket=args["Bucket"],
                Key=args["Key"],
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # an abandoned upload is invisible but holds storage until aborted
            self.client.abort_multipart_upload(
                Bucket=args["Bucket"], Key=args["Key"], UploadId=upload_id
            )
            raise

    def stream(self, bucket: str, key: str, chunk_size: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The body of a GET, read in chunks."""
        name = self._bucket(bucket)
        validate_key(key)
        with _s3_errors(f"read {bucket}/{key}", bucket, key):
            body = self.client.get_object(Bucket=name, Key=key)["Body"]
        return _iter_body(body, chunk_size, f"{bucket}/{key}")

    def get_range(self, bucket: str, key: str, start: int, length: int) -> bytes:
        """A ranged GET; an empty result when ``start`` is past the end."""
        if start < 0 or length < 0:
            raise BadInput("range start and length must be non-negative")
        if length == 0:
            return b""
        name = self._bucket(bucket)
        validate_key(key)
        with _s3_errors(f"read {bucket}/{key}", bucket, key):
            try:
                response = self.client.get_object(
                    Bucket=name, Key=key, Range=f"bytes={start}-{start + length - 1}"
                )
            except ClientError as exc:
                if _code(exc) == "InvalidRange":
                    self.head(bucket, key)  # NotFound wins over an empty range
                    return b""
                raise
            return response["Body"].read()

    def head(self, bucket: str, key: str) -> ObjectInfo:
        """A HEAD request; ``sha256`` is None for objects written without it."""
        name = self._bucket(bucket)
        validate_key(key)
        with _s3_errors(f"head {bucket}/{key}", bucket, key):
            response = self.client.head_object(Bucket=name, Key=key)
        return _info(bucket, key, response)

    def list(
        self, bucket: str, prefix: str = "", *, after: str | None = None, limit: int = 1000
    ) -> ObjectPage:
        """ListObjectsV2 with ``StartAfter``; each item completed by a HEAD for its metadata."""
        name = self._bucket(bucket)
        validate_prefix(prefix)
        limit = max(1, min(limit, 1000))
        args: dict[str, Any] = {"Bucket": name, "Prefix": prefix, "MaxKeys": limit}
        if after:
            args["StartAfter"] = after
        with _s3_errors(f"list {bucket}/{prefix}"):
            response = self.client.list_objects_v2(**args)
        items = []
        for entry in response.get("Contents", []):
            try:
                items.append(self.head(bucket, entry["Key"]))
            except NotFound:  # deleted while listing
                continue
        keys = [entry["Key"] for entry in response.get("Contents", [])]
        next_after = keys[-1] if response.get("IsTruncated") and keys else None
        return ObjectPage(items=items, next_after=next_after)

    def delete(self, bucket: str, key: str) -> None:
        """DeleteObject (S3 does not fail on a missing key)."""
        name = self._bucket(bucket)
        validate_key(key)
        with _s3_errors(f"delete {bucket}/{key}"):
            self.client.delete_object(Bucket=name, Key=key)

    def download_url(self, bucket: str, key: str, expires: int = 3600) -> str:
        """A presigned GET URL valid ``expires`` seconds."""
        name = self._bucket(bucket)
        validate_key(key)
        with _s3_errors(f"presign {bucket}/{key}"):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": name, "Key": key}, ExpiresIn=expires
            )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def _s3_errors(action: str, bucket: str | None = None, key: str | None = None) -> Iterator[None]:
    """Missing objects → NotFound; anything else from S3 or the network → Transient."""
    try:
        yield
    except ClientError as exc:
        code = _code(exc)
        if code in _MISSING and key is not None:
            raise NotFound(f"object {bucket}/{key} not found", bucket=bucket, key=key) from exc
        raise Transient(f"cannot {action}: S3 error {code}") from exc
    except BotoCoreError as exc:
        raise Transient(f"cannot {action}: {exc}") from exc


def _iter_body(body: Any, chunk_size: int, what: str) -> Iterator[bytes]:
    with _s3_errors(f"read {what}"):
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()


def _info(bucket: str, key: str, response: dict) -> ObjectInfo:
    metadata = dict(response.get("Metadata", {}))
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=response["ContentLength"],
        sha256=metadata.get("sha256"),
        etag=response.get("ETag", "").strip('"'),
        content_type=response.get("ContentType", DEFAULT_CONTENT_TYPE),
        metadata=metadata,
        mtime=response["LastModified"],
    )
