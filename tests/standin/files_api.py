"""The stand-in workspace's Files API: what databricks-sdk's `WorkspaceClient().files` (FilesExt) calls.

Paths are `/Volumes/<catalog>/<schema>/<volume>/…` (every volume exists) and
`/Models/<catalog>/<schema>/<model>/<version>/…` (the files of a Unity Catalog model version, which
exist only while the version does and can be written only while it is PENDING_REGISTRATION). Files
live under `root`, a directory of the stand-in that no test client is given.

Besides the plain endpoints (`/api/2.0/fs/files{path}`, `/api/2.0/fs/directories{path}`), the SDK
(0.156) asks first for a presigned download URL for every download (`create-download-url`), and
for files of 50 MiB or more uploads in parts (`?action=initiate-upload`, `create-upload-part-urls`,
`?action=complete-upload`). A workspace hands out cloud-storage URLs for those; here they point at
`/standin-cloud-storage/<signed token>` on the stand-in itself, which checks the signature and expiry
instead of a bearer token, as a presigned URL does. MLflow's `PresignedUrlArtifactRepository` (a
workspace that answers false to `is-databricks-sdk-models-artifact-repository-enabled`, default
storage: cloud_storage.py) asks `create-upload-url` and `create-download-url` with a JSON body, one
file at a time, and lists with `GET /api/2.0/fs/directories/Models/…`; an upload URL carries a header
it must be sent with, and is refused once its model version is finalized.

Grants (grants.py, once a test enforces them), checked before anything is read or written: a
volume's files take USE CATALOG, USE SCHEMA and READ VOLUME to read or list (GET, HEAD, a download
URL), WRITE VOLUME to write (PUT, DELETE, a directory, a multipart upload); a model version's files
follow the model's rules (unity_catalog.py). A presigned URL is its own grant.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.standin.errors import ApiError, invalid
from tests.standin.grants import Grants

FILES = "/api/2.0/fs/files"
DIRECTORIES = "/api/2.0/fs/directories"
CLOUD_STORAGE = "/standin-cloud-storage/"
LIST_PAGE_LIMIT = 1000  # the API's own maximum page size
PRESIGNED_TTL_SECONDS = 3600
CHUNK = 1024 * 1024


class ModelFiles(Protocol):
    """Where a model version's files are (unity_catalog.UnityCatalogRegistry)."""

    def version_storage(self, name: str, version: str, write: bool) -> Path: ...

    def require_file_access(self, principal: str, name: str, write: bool) -> None: ...


def file_not_found(path: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"The file being accessed is not found: {path}")


def dir_not_found(path: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", f"The directory being accessed is not found: {path}")


def conflict(message: str) -> ApiError:
    return ApiError(409, "ALREADY_EXISTS", message)


def http_date(mtime: float) -> str:
    return email.utils.formatdate(mtime, usegmt=True)


@dataclass
class Located:
    """A Files API path and the local file or directory it names."""

    path: str  # as the client wrote it, normalised (no trailing slash)
    local: Path
    root: Path  # the volume's or model version's directory: nothing resolves outside it


@dataclass
class MultipartUpload:
    target: Located
    overwrite: bool
    parts_dir: Path


class FilesApi:
    """Files under `root/volumes/…`, model versions' files where `models` keeps them."""

    def __init__(self, root: Path, models: ModelFiles | None, workspace_url: Callable[[], str], grants: Grants | None = None):
        self.root = root
        self.grants = grants or Grants()  # open unless the workspace's grants are enforced
        self.models = models
        self.workspace_url = workspace_url
        self._signing_key = secrets.token_bytes(32)
        self.presigned_ttl_seconds = PRESIGNED_TTL_SECONDS  # a test may shorten it to see expiry refused
        self._uploads: dict[str, MultipartUpload] = {}

    # -- HTTP ------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        """The workspace endpoints: behind the bearer-token check."""
        return [
            Route(FILES + "{path:path}", self.file, methods=["GET", "HEAD", "PUT", "DELETE", "POST"]),
            Route(DIRECTORIES + "{path:path}", self.directory, methods=["GET", "HEAD", "PUT", "DELETE"]),
            Route("/api/2.0/fs/create-download-url", self.create_download_url, methods=["POST"]),
            Route("/api/2.0/fs/create-upload-url", self.create_upload_url, methods=["POST"]),
            Route("/api/2.0/fs/create-upload-part-urls", self.create_upload_part_urls, methods=["POST"]),
            Route("/api/2.0/fs/create-abort-upload-url", self.create_abort_upload_url, methods=["POST"]),
        ]

    def storage_routes(self) -> list[Route]:
        """The "cloud storage" the presigned URLs point at: a signature instead of a bearer token."""
        return [Route(CLOUD_STORAGE + "{token}", self.cloud_storage, methods=["GET", "HEAD", "PUT", "DELETE"])]

    async def file(self, request: Request) -> Response:
        path = request.path_params["path"]
        self.authorize(request, path, write=request.method not in ("GET", "HEAD"))
        if request.method == "POST":
            return await self.multipart_action(request, path)
        if request.method in ("GET", "HEAD"):
            located = self.locate(path, write=False)
            if not located.local.is_file():
                raise file_not_found(located.path)
            return file_response(request, located.local)
        located = self.locate(path, write=True)
        if located.local == located.root:
            raise invalid(f"'{located.path}' is a directory, not a file path.")
        if request.method == "DELETE":
            if not located.local.is_file():
                raise file_not_found(located.path)
            located.local.unlink()
            return Response(status_code=204)
        overwrite = request.query_params.get("overwrite", "true").lower() != "false"
        await self.write(located, request.stream(), overwrite)
        return Response(status_code=204)

    async def directory(self, request: Request) -> Response:
        self.authorize(request, request.path_params["path"], write=request.method in ("PUT", "DELETE"))
        located = self.locate(request.path_params["path"], write=request.method in ("PUT", "DELETE"))
        local = located.local
        if request.method == "PUT":
            self.check_parents(located)
            if local.exists() and not local.is_dir():
                raise conflict(f"A file exists at '{located.path}'.")
            local.mkdir(parents=True, exist_ok=True)
            return Response(status_code=204)
        if not local.is_dir():
            raise dir_not_found(located.path)
        if request.method == "HEAD":
            return Response(status_code=200)
        if request.method == "DELETE":
            if local == located.root:
                raise invalid(f"'{located.path}' cannot be deleted through the Files API.")
            if any(local.iterdir()):
                raise ApiError(409, "DIRECTORY_NOT_EMPTY", f"The directory '{located.path}' is not empty.")
            local.rmdir()
            return Response(status_code=204)
        return JSONResponse(self.listing(located, request.query_params))

    def listing(self, located: Located, query) -> dict:
        entries = sorted(located.local.iterdir(), key=lambda p: p.name)
        try:
            size = min(int(query.get("page_size", LIST_PAGE_LIMIT)), LIST_PAGE_LIMIT)
            start = int(base64.urlsafe_b64decode(query["page_token"]).decode()) if query.get("page_token") else 0
        except ValueError:
            raise invalid("Invalid page_size or page_token.") from None
        if size < 1:
            raise invalid("page_size must be positive.")
        page = entries[start : start + size]
        contents = []
        for entry in page:
            stat = entry.stat()
            item = {"path": f"{located.path}/{entry.name}", "name": entry.name, "is_directory": entry.is_dir()}
            if not entry.is_dir():
                item["file_size"] = stat.st_size
                item["last_modified"] = int(stat.st_mtime * 1000)
            contents.append(item)
        body: dict = {"contents": contents}
        if start + size < len(entries):
            body["next_page_token"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return body

    # -- presigned URLs and multipart upload -----------------------------------------------

    async def create_download_url(self, request: Request) -> Response:
        path = await path_parameter(request)
        self.authorize(request, path, write=False)
        located = self.locate(path, write=False)
        if not located.local.is_file():
            raise file_not_found(located.path)
        return JSONResponse({"url": self.presign({"op": "download", "path": located.path}), "headers": []})

    async def create_upload_url(self, request: Request) -> Response:
        # What MLflow's PresignedUrlArtifactRepository asks for each file of a model version in
        # default storage. Refused once the version is finalized, as is the PUT of a URL issued before.
        path = await path_parameter(request)
        self.authorize(request, path, write=True)
        located = self.locate(path, write=True)
        if located.local == located.root:
            raise invalid(f"'{located.path}' is a directory, not a file path.")
        # Signed with the URL, as S3 signs headers: a PUT without them is refused.
        headers = [{"name": "Content-Type", "value": "application/octet-stream"}]
        return JSONResponse({"url": self.presign({"op": "upload", "path": located.path, "headers": headers}), "headers": headers})

    async def multipart_action(self, request: Request, path: str) -> Response:
        action = request.query_params.get("action")
        if action == "initiate-upload":
            located = self.locate(path, write=True)
            self.check_parents(located)
            overwrite = request.query_params.get("overwrite", "true").lower() != "false"
            if located.local.exists() and (not overwrite or located.local.is_dir()):
                raise conflict(f"The file '{located.path}' already exists.")
            session = secrets.token_urlsafe(24)
            parts_dir = self.root / ".uploads" / session
            parts_dir.mkdir(parents=True)
            self._uploads[session] = MultipartUpload(located, overwrite, parts_dir)
            return JSONResponse({"multipart_upload": {"session_token": session}})
        if action == "complete-upload":
            upload = self.upload_session(request.query_params.get("session_token"), path)
            parts = (await request.json()).get("parts") or []
            await self.complete(upload, parts)
            del self._uploads[request.query_params["session_token"]]
            return Response(status_code=200)
        raise invalid(f"Unsupported action '{action}'.")

    async def create_upload_part_urls(self, request: Request) -> Response:
        body = await request.json()
        self.upload_session(body.get("session_token"), body.get("path", ""))
        start, count = int(body.get("start_part_number", 1)), int(body.get("count", 1))
        if start < 1 or not 1 <= count <= 100:
            raise invalid("start_part_number must be positive and count between 1 and 100.")
        urls = [{"part_number": n, "url": self.presign({"op": "part", "session": body["session_token"], "part": n}), "headers": []} for n in range(start, start + count)]
        return JSONResponse({"upload_part_urls": urls})

    async def create_abort_upload_url(self, request: Request) -> Response:
        body = await request.json()
        self.upload_session(body.get("session_token"), body.get("path", ""))
        return JSONResponse({"abort_upload_url": {"url": self.presign({"op": "abort", "session": body["session_token"]}), "headers": []}})

    async def cloud_storage(self, request: Request) -> Response:
        grant = self.verify(request.path_params["token"])
        if grant is None:
            return Response("SignatureDoesNotMatch or expired", status_code=403, media_type="text/plain")
        if grant["op"] == "upload" and request.method == "PUT":
            return await self.presigned_upload(request, grant)
        if grant["op"] == "download" and request.method in ("GET", "HEAD"):
            located = self.locate(grant["path"], write=False)
            if not located.local.is_file():
                return Response("NoSuchKey", status_code=404, media_type="text/plain")
            return file_response(request, located.local)
        upload = self._uploads.get(grant.get("session", ""))
        if upload is None:
            return Response("NoSuchUpload", status_code=404, media_type="text/plain")
        if grant["op"] == "part" and request.method == "PUT":
            digest = hashlib.md5()
            with open(upload.parts_dir / str(grant["part"]), "wb") as out:
                async for chunk in request.stream():
                    digest.update(chunk)
                    out.write(chunk)
            return Response(status_code=200, headers={"ETag": f'"{digest.hexdigest()}"'})
        if grant["op"] == "abort" and request.method == "DELETE":
            shutil.rmtree(upload.parts_dir, ignore_errors=True)
            self._uploads.pop(grant["session"], None)
            return Response(status_code=200)
        return Response("MethodNotAllowed", status_code=405, media_type="text/plain")

    async def presigned_upload(self, request: Request, grant: dict) -> Response:
        if any(request.headers.get(h["name"]) != h["value"] for h in grant.get("headers", [])):
            return Response("SignatureDoesNotMatch: a signed header is missing or differs", status_code=403, media_type="text/plain")
        try:
            located = self.locate(grant["path"], write=True)  # a version finalized since the URL was issued: 403
        except ApiError as refused:
            return Response(f"AccessDenied: {refused.message}", status_code=refused.status, media_type="text/plain")
        await self.write(located, request.stream(), overwrite=True)
        return Response(status_code=200, headers={"ETag": f'"{md5_of(located.local)}"'})

    def presign(self, grant: dict) -> str:
        payload = base64.urlsafe_b64encode(json.dumps({**grant, "exp": time.time() + self.presigned_ttl_seconds}).encode()).decode()
        signature = hmac.new(self._signing_key, payload.encode(), hashlib.sha256).hexdigest()
        return f"{self.workspace_url()}{CLOUD_STORAGE}{payload}.{signature}"

    def verify(self, token: str) -> dict | None:
        payload, _, signature = token.rpartition(".")
        expected = hmac.new(self._signing_key, payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return None
        grant = json.loads(base64.urlsafe_b64decode(payload))
        return grant if grant["exp"] > time.time() else None

    def upload_session(self, session: object, path: str) -> MultipartUpload:
        upload = self._uploads.get(session) if isinstance(session, str) else None
        if upload is None or normalised(path) != upload.target.path:
            raise invalid("Unknown upload session for this path.")
        return upload

    async def complete(self, upload: MultipartUpload, parts: list[dict]) -> None:
        numbers = [int(p.get("part_number", 0)) for p in parts]
        if not numbers or numbers != list(range(1, len(numbers) + 1)):
            raise invalid("Parts must be numbered 1, 2, … without gaps.")
        for part in parts:
            local = upload.parts_dir / str(part["part_number"])
            if not local.is_file() or f'"{md5_of(local)}"' != part.get("etag"):
                raise invalid(f"Part {part['part_number']} is missing or its ETag does not match.")

        async def joined() -> AsyncIterator[bytes]:
            for number in numbers:
                with open(upload.parts_dir / str(number), "rb") as part_file:
                    while chunk := part_file.read(CHUNK):
                        yield chunk

        await self.write(upload.target, joined(), upload.overwrite)
        shutil.rmtree(upload.parts_dir, ignore_errors=True)

    # -- grants ----------------------------------------------------------------------------

    def authorize(self, request: Request, path: str, write: bool) -> None:
        """Raise the workspace's 403 unless the caller may read (or write) `path`; a path that is
        not a volume's or a model version's is left to `locate`'s 400."""
        principal = getattr(request.state, "principal", None)
        if principal is None:
            return
        parts = normalised(path).split("/")[1:]
        if parts[0] == "Volumes" and len(parts) >= 4:
            volume = ".".join(parts[1:4])
            self.grants.require_use(principal, volume)
            self.grants.require(principal, "WRITE VOLUME" if write else "READ VOLUME", "volume", volume)
        elif parts[0] == "Models" and len(parts) >= 5 and self.models is not None:
            self.models.require_file_access(principal, ".".join(parts[1:4]).lower(), write)

    # -- paths -----------------------------------------------------------------------------

    def locate(self, path: str, write: bool) -> Located:
        """The local file a Files API path names; refuses anything outside /Volumes and /Models."""
        path = normalised(path)
        parts = path.split("/")[1:]
        if parts[0] == "Volumes" and len(parts) >= 4:
            root = self.root / "volumes" / parts[1] / parts[2] / parts[3]
            root.mkdir(parents=True, exist_ok=True)  # every volume exists here
            rest = parts[4:]
        elif parts[0] == "Models" and len(parts) >= 5 and self.models is not None:
            root = self.models.version_storage(".".join(parts[1:4]), parts[4], write)
            rest = parts[5:]
        else:
            raise invalid(f"Path '{path}' is not under /Volumes/<catalog>/<schema>/<volume> or /Models/<catalog>/<schema>/<model>/<version>.")
        local = root.joinpath(*rest)
        if not local.resolve().is_relative_to(root.resolve()):
            raise invalid(f"Path '{path}' leaves its volume or model version.")
        return Located(path, local, root)

    @staticmethod
    def check_parents(located: Located) -> None:
        for parent in located.local.parents:
            if parent == located.root:
                return
            if parent.exists() and not parent.is_dir():
                raise conflict(f"A parent of '{located.path}' is a file.")

    async def write(self, located: Located, chunks: AsyncIterator[bytes], overwrite: bool) -> None:
        """Writes the whole body to a temporary file, then puts it in place at once."""
        self.check_parents(located)
        if located.local.is_dir():
            raise conflict(f"A directory exists at '{located.path}'.")
        if located.local.exists() and not overwrite:
            raise conflict(f"The file '{located.path}' already exists.")
        located.local.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=located.local.parent, prefix=".upload-")
        try:
            with os.fdopen(handle, "wb") as out:
                async for chunk in chunks:
                    out.write(chunk)
            os.replace(temporary, located.local)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def normalised(path: str) -> str:
    """`/a/b` from the request's path; refuses empty, `.` and `..` segments (no traversal)."""
    if not path.startswith("/"):
        raise invalid(f"Path '{path}' must be absolute.")
    path = path[:-1] if path.endswith("/") and len(path) > 1 else path
    segments = path.split("/")[1:]
    if any(s in ("", ".", "..") or "\x00" in s or "\\" in s for s in segments):
        raise invalid(f"Path '{path}' has an empty, '.' or '..' segment.")
    return path


async def path_parameter(request: Request) -> str:
    """`path` of a create-*-url call: a query parameter (databricks-sdk) or the JSON body (MLflow)."""
    if value := request.query_params.get("path"):
        return value
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ApiError(400, "MALFORMED_REQUEST", "Request body is not valid JSON.") from None
    if not isinstance(body, dict) or not isinstance(body.get("path"), str) or not body["path"]:
        raise invalid("Missing required parameter 'path'.")
    return body["path"]


def required_query(request: Request, key: str) -> str:
    value = request.query_params.get(key)
    if not value:
        raise invalid(f"Missing required parameter '{key}'.")
    return value


def md5_of(local: Path) -> str:
    digest = hashlib.md5()
    with open(local, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_response(request: Request, local: Path) -> Response:
    """A file's bytes with Content-Length and Last-Modified; `Range: bytes=a-[b]` gives 206."""
    stat = local.stat()
    size = stat.st_size
    headers = {"Last-Modified": http_date(stat.st_mtime), "Accept-Ranges": "bytes"}
    if since := request.headers.get("if-unmodified-since"):
        parsed = email.utils.parsedate_to_datetime(since)
        if parsed and int(stat.st_mtime) > parsed.timestamp():
            return JSONResponse({"error_code": "PRECONDITION_FAILED", "message": "The file was modified."}, status_code=412)
    start, end, status = 0, size - 1, 200
    if wanted := request.headers.get("range"):
        first, _, last = wanted.removeprefix("bytes=").partition("-")
        try:
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
        except ValueError:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        if not wanted.startswith("bytes=") or start > end or start >= size:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type="application/octet-stream")

    def chunks():
        with open(local, "rb") as f:
            f.seek(start)
            remaining = end - start + 1
            while remaining > 0 and (chunk := f.read(min(CHUNK, remaining))):
                remaining -= len(chunk)
                yield chunk

    return StreamingResponse(chunks(), status_code=status, headers=headers, media_type="application/octet-stream")
