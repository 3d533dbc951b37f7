"""Where the outputs live: a local folder or an S3-compatible object store, behind one small interface.

`open_store("/data/out")` is a LocalStore, `open_store("s3://bucket/prefix")` an S3Store. Keys are `/`-separated
paths under the store's root (`runs/<run>/images/00_fox.png`); `store.uri(key)` is what reports and metadata show
(an absolute path, or `s3://bucket/prefix/key`). Both keep the same promises: an object appears whole or not at
all, and an existing one is never replaced unless asked (state that describes, rather than is, an output).
No Dagster here.
"""

import os
from pathlib import Path

from comfy_pipeline.storage.base import (
    ObjectExists,
    ObjectMissing,
    Store,
    StoredObject,
    StoreError,
    is_store_url,
    join_key,
)
from comfy_pipeline.storage.local import LocalStore


def open_store(location: str, *, endpoint_url: str | None = None) -> Store:
    """The store at `location`: `s3://bucket/prefix` (credentials from the standard AWS chain; `endpoint_url`, or
    AWS_ENDPOINT_URL, for an S3-compatible service), else a local folder."""
    if is_store_url(location):
        from comfy_pipeline.storage.s3 import S3Store  # boto3 is imported only when a bucket is used

        return S3Store.from_url(location, endpoint_url=endpoint_url)
    return LocalStore(location)


def open_uri(uri: str, *, endpoint_url: str | None = None) -> tuple[Store, str]:
    """The store holding one object and its key: `s3://bucket/a/b.png` -> (the bucket, "a/b.png"); a local
    path -> (its folder, its name)."""
    if is_store_url(uri):
        from comfy_pipeline.storage.s3 import S3Store

        bucket_url, _, key = uri[len("s3://"):].partition("/")
        if not key:
            raise StoreError(f"{uri} names a bucket, not an object: give s3://bucket/path/to/file")
        return S3Store.from_url(f"s3://{bucket_url}", endpoint_url=endpoint_url), key
    path = Path(uri).expanduser().absolute()
    return LocalStore(path.parent), path.name


def as_store(where: "Store | str | os.PathLike") -> Store:
    """A store from a store (as is), a local folder or an `s3://` location: for functions that took a folder."""
    if isinstance(where, (str, os.PathLike)):
        return open_store(os.fspath(where))
    return where


__all__ = ["LocalStore", "ObjectExists", "ObjectMissing", "Store", "StoreError", "StoredObject", "as_store",
           "is_store_url", "join_key", "open_store", "open_uri"]
