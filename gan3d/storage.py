"""Run storage that any node can reach: a local or shared path, or an object-store URI (s3://, gs://, ...).

Ray Train writes the checkpoints there itself (RunConfig(storage_path=URI)). gan3d's own run files
(metrics.parquet, workers.jsonl, samples/, wandb/) are written to a local working directory on rank 0's node
and mirrored to `{URI}/{run name}/` after every tick, so a run restarted on another node, `gan3d eval`,
`render` and `report` find them there. Everything goes through pyarrow filesystems, which read credentials and
endpoints the way the cloud SDKs do (AWS_* variables incl. AWS_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterable, Optional

import pyarrow.fs as pafs

from gan3d.config import uri_scheme
from gan3d.errors import Gan3dError

def cache_root() -> Path:
    """gan3d's one cache directory: $GAN3D_CACHE, else ~/.cache/gan3d (read at call time). Downloads, imported
    snapshots, real-image statistics and detector / LPIPS weights live under it."""
    return Path(os.environ.get("GAN3D_CACHE", "~/.cache/gan3d")).expanduser()


def is_uri(path) -> bool:
    """An object-store URI (file:// is a local path)."""
    return isinstance(path, str) and uri_scheme(path) not in ("", "file")


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a local file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *[p.strip("/") for p in parts]])


def with_scheme(path: str, like: str) -> str:
    """A path inside a store (as Ray and pyarrow report them, without a scheme) as a URI of `like`'s scheme."""
    return f"{like.split('://')[0]}://{path}"


def upload(local_file: str | Path, uri: str) -> str:
    """One local file to `uri` (an object store's put is atomic: readers see the old or the new file)."""
    fs, path = filesystem(uri)
    pafs.copy_files(str(local_file), path, destination_filesystem=fs)
    return uri


def filesystem(path: str | Path, error: type[Gan3dError] = Gan3dError):
    """(pyarrow filesystem, path inside it) for a URI or a local path, with a clear `error` when it cannot be
    reached."""
    if not uri_scheme(path):
        return pafs.LocalFileSystem(), str(Path(path).resolve())
    try:
        return pafs.FileSystem.from_uri(str(path))
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError depending on the scheme
        raise error(f"{path}: cannot open this storage URI ({type(e).__name__}: {str(e)[:200]})") from None


def _files(fs, root: str) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime ns)} of the files under root (empty if root does not exist)."""
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        return {}
    out = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type == pafs.FileType.File:
            out[info.path[len(root):].lstrip("/")] = (info.size, info.mtime_ns or 0)
    return out


class RunMirror:
    """Mirror of a local run directory at a URI: `push` uploads files that changed since the last push,
    `pull` makes named local files match the store (a run restarted on this or another node)."""

    # Train owns the checkpoint directories at the URI (and a direct run's checkpoints/); the driver lock is this
    # machine's (orchestrate/lock.py)
    SKIP = ("checkpoint", ".gan3d.lock")

    def __init__(self, local_dir: str | Path, uri: str):
        self.local, self.uri = Path(local_dir), uri
        self.fs, self.root = filesystem(uri)
        self._pushed: dict[str, tuple[int, int]] = {}

    def pull(self, names: Iterable[str]) -> list[str]:
        """The store wins: a local copy left from an older run of the same name would otherwise be continued
        (and pushed back over the run's real files). Names the store lacks are removed locally."""
        got = []
        for name in names:
            dest = self.local / name
            src = f"{self.root}/{name}"
            if self.fs.get_file_info(src).type != pafs.FileType.File:
                dest.unlink(missing_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(download(f"{self.uri.rstrip('/')}/{name}", dest.with_name(f".{dest.name}.part")), dest)
            got.append(name)
        return got

    def push(self) -> list[str]:
        local = pafs.LocalFileSystem()
        root = self.local.resolve()
        changed = [rel for rel, stamp in _files(local, str(root)).items()
                   if not rel.split("/")[0].startswith(self.SKIP) and not rel.endswith((".tmp", ".part"))
                   and (root / rel).resolve() == root / rel  # not through a link (wandb/latest-run)
                   and self._pushed.get(rel) != stamp]
        for rel in changed:  # one object per file: an object store's put is atomic, so readers never see halves
            pafs.copy_files(str(self.local / rel), f"{self.root}/{rel}", source_filesystem=local,
                            destination_filesystem=self.fs)
            self._pushed[rel] = self._stamp(rel)
        return changed

    def _stamp(self, rel: str) -> tuple[int, int]:
        st = (self.local / rel).stat()
        return st.st_size, st.st_mtime_ns


def download(uri: str, dest: Path) -> Path:
    """A file or directory at a URI copied to the local path dest."""
    fs, root = filesystem(uri)
    is_dir = fs.get_file_info(root).type == pafs.FileType.Directory
    (dest if is_dir else dest.parent).mkdir(parents=True, exist_ok=True)  # copy_files makes only subdirectories
    pafs.copy_files(root, str(dest), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return dest


def local_copy(uri: str, cache: Optional[Path] = None) -> Path:
    """A run directory, checkpoint directory or file at a URI, downloaded once into the local cache
    (re-downloaded when its listing changes); returns the local path."""
    fs, root = filesystem(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise Gan3dError(f"{uri}: not found")
    listing = _files(fs, root) if info.type == pafs.FileType.Directory else {"": (info.size, info.mtime_ns or 0)}
    key = hashlib.sha1(f"{uri}\n{sorted(listing.items())}".encode()).hexdigest()[:16]
    dest = (cache or cache_root() / "storage") / key / Path(root).name
    if not dest.exists():
        tmp = download(uri, dest.with_name(f"{dest.name}.{os.getpid()}.part"))  # ranks on a node: one copy each
        try:
            os.replace(tmp, dest)  # complete or absent, never half-written
        except OSError:  # another rank got there first (a directory cannot replace a directory)
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve_local(path) -> Path:
    """A local Path for a user-given path or URI (URIs are downloaded to the cache)."""
    if is_uri(str(path)):
        return local_copy(str(path))
    return Path(str(path).removeprefix("file://")).expanduser()
