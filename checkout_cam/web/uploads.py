"""Reading uploaded photos: size-limited, in memory only, multipart or a raw image body.

Starlette's own form parsing spools files over 1 MB to a temporary file on
disk; a store photo must never touch the disk, so the body is streamed
through python-multipart's push parser here, counted as it arrives, and
refused (413) the moment it passes the limit, before the rest is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

FIELD = "image"   # the source material's multipart field name
MAX_PARTS = 300


class UploadError(Exception):
    """A request the client must fix; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Upload:
    name: str        # the file name the client gave (for messages), or "body"
    data: bytes


def too_large(limit: int) -> UploadError:
    return UploadError(413, f"request body is larger than the {limit:,} byte limit (http.max_upload_bytes); "
                            f"send a smaller photo")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing it (413) by Content-Length or once it passes ``limit`` while streaming."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise UploadError(400, f"Content-Length is not a number: {declared[:40]!r}")
        if int(declared) > limit:
            raise too_large(limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise UploadError(400, "the client went away before the body was complete") from None
    return b"".join(chunks)


def parse_multipart(body: bytes, content_type: str, max_files: int) -> list[Upload]:
    """The files of the ``image`` field(s), in order. 400 for a malformed body or no file."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(400, "multipart body without a boundary in its Content-Type")
    parts: list[dict] = []
    state: dict = {}

    def on_part_begin():
        if len(parts) >= MAX_PARTS:
            raise UploadError(413, f"more than {MAX_PARTS} parts in one request")
        state.clear()
        state.update(headers={}, data=[], field=b"", value=b"")

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_part_data(data, start, end):
        state["data"].append(data[start:end])

    def on_part_end():
        disposition, options = parse_options_header(state["headers"].get(b"content-disposition", b""))
        parts.append({"name": options.get(b"name", b"").decode("utf-8", "replace"),
                      "filename": options.get(b"filename"), "data": b"".join(state["data"])})

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        parser.write(body)
        parser.finalize()
    except UploadError:
        raise
    except (MultipartParseError, ValueError, KeyError, IndexError) as exc:
        raise UploadError(400, f"malformed multipart body ({exc})") from None
    files = [p for p in parts if p["name"] == FIELD]
    if not files:
        got = sorted({p["name"] for p in parts if p["name"]})
        raise UploadError(400, f"no file in the multipart field '{FIELD}'"
                               + (f" (the body has: {', '.join(got)})" if got else "")
                               + "; send it as -F image=@photo.jpg")
    if len(files) > max_files:
        raise UploadError(413, f"{len(files)} images in one request; at most {max_files} (http.max_images)")
    out = []
    for i, p in enumerate(files, 1):
        name = p["filename"].decode("utf-8", "replace") if p["filename"] else f"image {i}"
        out.append(Upload(name[:200], p["data"]))
    return out


async def read_uploads(request: Request, limit: int, max_files: int) -> list[Upload]:
    """The photos of a /predict request: multipart field ``image`` (one or several), or a raw image body."""
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";")[0].strip().lower()
    if kind in ("application/x-www-form-urlencoded", "application/json", "text/plain"):
        raise UploadError(415, f"Content-Type {kind} is not an image upload; send multipart/form-data "
                               f"with the field '{FIELD}', or the image itself as the body (image/jpeg, image/png)")
    body = await read_body(request, limit)
    if kind == "multipart/form-data":
        return parse_multipart(body, content_type, max_files)
    if not body:
        raise UploadError(400, f"no file: the body is empty; send -F {FIELD}=@photo.jpg or the image as the body")
    return [Upload("body", body)]
