"""MLflow's UI build served from disk by the front process, without a round trip to MLflow."""

from __future__ import annotations

import ctypes
import ctypes.util
import gzip
import hashlib
import mimetypes
import os
import re
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
import brotli
from starlette.datastructures import Headers
from starlette.responses import FileResponse, Response

from proxy.errors import mlflow_error

_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".cjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
}
_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "no-cache"
# A dot-separated segment of 8+ hex chars before another dot: main.c2f5f8d4.js, x.d0f8ea2c83c08b63528f.worker.js.
_HASHED_NAME = re.compile(r"(?:^|\.)[0-9a-f]{8,}\.")
_MIN_COMPRESS_SIZE = 1024
# Measured on main.c2f5f8d4.js (4,443,475 B, one AMD EPYC core): brotli q6 0.23 s -> 1,065,504 B (24.0%),
# gzip 6 0.14 s -> 1,235,004 B (27.8%). brotli q7 takes 0.52 s for 1% less, so 6 is the knee.
# Both libraries release the GIL while compressing, so a worker thread does not stall the event loop.
_BROTLI_QUALITY = 6
_GZIP_LEVEL = 6
_ENCODINGS = ("br", "gzip")  # in order of preference


class UiAssetsMissing(ValueError):
    """The UI build directory is absent or incomplete."""


def _compress(data: bytes, encoding: str) -> bytes:
    if encoding == "br":
        return brotli.compress(data, quality=_BROTLI_QUALITY)
    return gzip.compress(data, compresslevel=_GZIP_LEVEL, mtime=0)  # mtime=0: same bytes every run


def release_free_memory() -> None:
    """Hand freed heap back to the system (glibc only; elsewhere a no-op).

    Compressing 26 MB leaves ~25 MiB of freed buffers in the worker thread's malloc arena, which
    glibc keeps: the front's idle RSS was 90 MiB instead of 66 (docs/benchmarks.md).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _digest_file(path: Path) -> str:
    hasher = hashlib.blake2b(digest_size=8)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


def _content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _CONTENT_TYPES:
        return _CONTENT_TYPES[suffix]
    guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


def _is_compressible(content_type: str) -> bool:
    base = content_type.split(";")[0]
    # json covers .map; xml covers svg
    return base.startswith("text/") or base == "application/wasm" or any(kind in base for kind in ("javascript", "json", "xml"))


def _accepted(accept_encoding: str) -> set[str]:
    """The codings an Accept-Encoding header allows (q > 0), with `*` standing for unnamed ones."""
    qualities: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if coding:
            qualities[coding.lower()] = q
    wildcard = qualities.get("*", 0.0)
    return {enc for enc in _ENCODINGS if qualities.get(enc, wildcard) > 0}


def _matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison, as RFC 9110 asks for If-None-Match."""
    if if_none_match.strip() == "*":
        return True
    return etag.removeprefix("W/") in (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))


def _not_found(relative_path: str) -> Response:
    shown = repr(relative_path[:200])[1:-1] + ("..." if len(relative_path) > 200 else "")
    return mlflow_error(404, f"No UI asset at '{shown}'")


@dataclass
class _FileVersion:
    """One file as it is on disk now; a change of mtime_ns or size makes a new version."""

    path: Path
    mtime_ns: int
    size: int
    digest: str
    content_type: str
    variants: dict[str, bytes] = field(default_factory=dict)  # encoding -> compressed bytes
    lock: threading.Lock = field(default_factory=threading.Lock)  # one compression per variant


class UiAssets:
    """MLflow's UI build served from disk: ETags, 304s, cache policy, compressed once."""

    def __init__(self, root: Path) -> None:
        """Serve files under `root`; raise UiAssetsMissing if it is not a UI build directory."""
        if not root.is_dir() or not (root / "index.html").is_file():
            raise UiAssetsMissing(
                f"MLflow UI build not found at {root} (expected a directory with index.html); reinstall the mlflow package, which ships the build under mlflow/server/js/build"
            )
        self._root = root.resolve()
        self._versions: dict[Path, _FileVersion] = {}
        self._versions_lock = threading.Lock()

    async def response(self, relative_path: str, request_headers: Headers, method: str = "GET") -> Response:
        """Answer a GET or HEAD for `relative_path` inside the build: 200, 304, 404 or 405."""
        if method not in ("GET", "HEAD"):
            return mlflow_error(405, f"Method {method!r} is not allowed on UI assets; use GET or HEAD", headers={"Allow": "GET, HEAD"})
        version = await anyio.to_thread.run_sync(self._version_of, relative_path)
        if version is None:
            return _not_found(relative_path)

        compressible = _is_compressible(version.content_type) and version.size > _MIN_COMPRESS_SIZE
        accepted = _accepted(request_headers.get("accept-encoding", "")) if compressible else set()
        encoding = next((enc for enc in _ENCODINGS if enc in accepted), None)
        headers = {
            "ETag": f'"{version.digest}-{encoding}"' if encoding else f'"{version.digest}"',
            # The URL's name decides, not the symlink target's: the browser caches by URL.
            "Cache-Control": _IMMUTABLE if _HASHED_NAME.search(relative_path.rpartition("/")[2]) else _REVALIDATE,
        }
        if _is_compressible(version.content_type):
            headers["Vary"] = "Accept-Encoding"  # even when small: one rule per type is easier on caches and CDNs
        if _matches(request_headers.get("if-none-match", ""), headers["ETag"]):
            return Response(status_code=304, headers=headers)

        body = await anyio.to_thread.run_sync(self._variant, version, encoding) if encoding else None
        if body is None:  # identity, streamed from disk in chunks
            headers["ETag"] = f'"{version.digest}"'
            return FileResponse(version.path, headers=headers, media_type=version.content_type)
        headers.update({"Content-Encoding": encoding, "Content-Length": str(len(body))})
        return Response(body if method == "GET" else b"", headers=headers, media_type=version.content_type)

    def precompress_all(self) -> None:
        """Compress every compressible file into every encoding once; blocking, safe beside requests."""
        for directory, _, names in os.walk(self._root):
            for name in names:
                relative = os.path.relpath(os.path.join(directory, name), self._root)
                version = self._version_of(relative)
                if version and _is_compressible(version.content_type) and version.size > _MIN_COMPRESS_SIZE:
                    for encoding in _ENCODINGS:
                        self._variant(version, encoding)
        release_free_memory()

    def _lookup(self, relative_path: str) -> tuple[Path, os.stat_result] | None:
        """The real path and stat of a regular file inside the root, or None for anything else."""
        if not relative_path or "\x00" in relative_path or "\\" in relative_path or os.path.isabs(relative_path):
            return None
        if ".." in relative_path.split("/"):
            return None
        try:
            real = (self._root / relative_path).resolve(strict=True)
            info = real.stat()
        except (OSError, RuntimeError):  # missing, unreadable, or a symlink loop
            return None
        if not real.is_relative_to(self._root) or not stat.S_ISREG(info.st_mode):
            return None
        return real, info

    def _version_of(self, relative_path: str) -> _FileVersion | None:
        """The file's current version, hashing it only when it is new or changed on disk."""
        found = self._lookup(relative_path)
        if found is None:
            return None
        path, info = found
        with self._versions_lock:
            known = self._versions.get(path)
        if known and (known.mtime_ns, known.size) == (info.st_mtime_ns, info.st_size):
            return known
        try:
            digest = _digest_file(path)
        except OSError:
            return None
        fresh = _FileVersion(path, info.st_mtime_ns, info.st_size, digest, _content_type(path))
        with self._versions_lock:
            known = self._versions.get(path)
            # Two first requests may both hash; keep the one already stored so its variants survive.
            if known and (known.mtime_ns, known.size) == (fresh.mtime_ns, fresh.size):
                return known
            self._versions[path] = fresh
        return fresh

    def _variant(self, version: _FileVersion, encoding: str) -> bytes | None:
        """The compressed bytes of `version`, compressed on first use; None if the file changed meanwhile."""
        with version.lock:
            if encoding not in version.variants:
                try:
                    data = version.path.read_bytes()
                except OSError:
                    return None
                if hashlib.blake2b(data, digest_size=8).hexdigest() != version.digest:
                    return None  # rewritten since it was hashed: never cache other bytes under this ETag
                version.variants[encoding] = _compress(data, encoding)
            return version.variants[encoding]
