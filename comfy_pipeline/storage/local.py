"""The output store as a local folder: the files are the objects."""

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from comfy_pipeline.comfyui.files import FILE_MODE
from comfy_pipeline.storage import base
from comfy_pipeline.storage.base import ObjectExists, ObjectMissing, StoredObject, StoreError

STALE_PART_S = 3600  # a hidden .part file untouched this long belongs to a writer that died


def write_atomic(path: Path, data: bytes, *, replace: bool = False) -> Path:
    """Write `data` to `path` via a temp file + rename; never replaces an existing file unless `replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp makes it 0600; an output follows the umask like any file
        # os.link fails if the target exists, unlike os.replace: that is the no-overwrite guarantee.
        os.replace(tmp, path) if replace else os.link(tmp, path)
    except FileExistsError:
        raise ObjectExists(f"{path} already exists; outputs are never overwritten") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return path


class LocalStore:
    local = True

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        path = self.root / key
        if not key or key.startswith("/") or ".." in Path(key).parts or "\x00" in key:
            raise StoreError(f"refusing key {key!r}: it is not a plain path inside {self.root}")
        return path

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def key_of(self, uri: str) -> str | None:
        try:
            return Path(uri).absolute().relative_to(self.root).as_posix()
        except ValueError:
            return None

    def path_of(self, key: str) -> Path | None:
        return self._path(key)

    def put_file(self, source: Path, key: str, *, free_name: bool = False) -> str:
        target = self._path(key)
        if Path(source).absolute() == target:
            return key  # written in place (a local run's downloads are)
        for attempt in range(10_000 if free_name else 1):
            name = base.free_name(key, attempt)
            path = self._path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                    shutil.copyfileobj(src, out, 1024 * 1024)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, FILE_MODE)
                os.link(tmp, path)
                return name
            except FileExistsError:
                continue
            finally:
                Path(tmp).unlink(missing_ok=True)
        raise ObjectExists(f"{self.uri(key)} already exists; outputs are never overwritten")

    def put_bytes(self, key: str, data: bytes, *, replace: bool = False) -> str:
        write_atomic(self._path(key), data, replace=replace)
        return key

    def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        path = self._path(key)
        try:
            if max_bytes is not None and path.stat().st_size > max_bytes:
                raise StoreError(f"{path} is larger than {max_bytes} bytes")
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(f"{path} does not exist") from None
        except IsADirectoryError:
            raise ObjectMissing(f"{path} is a folder, not a file") from None

    def get_file(self, key: str, folder: Path) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise ObjectMissing(f"{path} does not exist")
        return path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def stat(self, key: str) -> StoredObject | None:
        try:
            info = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _object(key, info)

    def objects(self, prefix: str, *, recursive: bool = True, page_size: int = 1000) -> Iterator[StoredObject]:
        folder = self._path(prefix) if prefix else self.root
        if not folder.is_dir():
            return
        with os.scandir(folder) as entries:
            found = sorted(entries, key=lambda e: e.name)
        for entry in found:
            key = f"{prefix.rstrip('/')}/{entry.name}" if prefix else entry.name
            if entry.is_file(follow_symlinks=False):
                yield _object(key, entry.stat(follow_symlinks=False))
            elif recursive and entry.is_dir(follow_symlinks=False):
                yield from self.objects(key, recursive=True)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def move(self, key: str, to_key: str) -> str:
        source, target = self._path(key), self._path(to_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except FileExistsError:
            raise ObjectExists(f"{target} already exists") from None
        except FileNotFoundError:
            raise ObjectMissing(f"{source} does not exist") from None
        source.unlink()
        return to_key

    def abort_uploads(self, prefix: str, abandoned: Callable[[str], bool]) -> list[str]:
        """The hidden `.part` files of dead writers: those whose final key `abandoned` names, and any untouched
        for STALE_PART_S. A live writer's are never touched."""
        removed, now = [], time.time()
        folder = self._path(prefix) if prefix else self.root
        for part in folder.rglob(".*.part") if folder.is_dir() else ():
            key = part.relative_to(self.root).as_posix()
            name = part.name[1:-len(".part")].rsplit(".", 1)[0]  # mkstemp's ".<name>.<random>.part"
            meant = f"{key.rsplit('/', 1)[0]}/{name}" if "/" in key else name
            try:
                if now - part.stat().st_mtime > STALE_PART_S or abandoned(meant):
                    part.unlink()
                    removed.append(key)
            except FileNotFoundError:
                continue  # finished and renamed meanwhile
        return removed


def _object(key: str, info: os.stat_result) -> StoredObject:
    return StoredObject(key, info.st_size, info.st_mtime, f"{info.st_size}-{info.st_mtime_ns}")
