"""`ammkd serve`: the browser demo (web_demo/) and a bundle over local HTTP, read-only.

URL space, and nothing else:

    /                 web_demo/index.html
    /<file>           a top-level file of web_demo/ (.html, .js, .mjs, .css, .png, .svg, .ico)
    /ort/<file>       web_demo/node_modules/onnxruntime-web/dist/<file> (the WASM and WebGPU runtimes)
    /bundle/<path>    a file the bundle's manifest lists, the manifest itself, and the gallery's
                      embeddings and gallery.json (without the photo folder's path)
    /photos/<i>       the i-th photo of the bundle's gallery (gallery/gallery.json), when it has one
                      and it is a regular file inside the gallery's photo folder

Every path is decoded, stripped of `.`/`..`-style segments by refusal (not by normalisation),
resolved, and checked to lie inside its root; directories are never listed. Every response
carries the cross-origin isolation headers (COOP/COEP/CORP), so the page may use WASM threads.
"""

from __future__ import annotations

import ipaddress
import json
import mimetypes
import posixpath
import shutil
import socket
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ammkd.bundle.format import MANIFEST, BundleReader, listed_files
from ammkd.bundle.gallery_format import EMBEDDINGS, GALLERY_DIR, GALLERY_MANIFEST
from ammkd.common.errors import BundleError, ConfigError
from ammkd.mobile_runtime.gallery import open_gallery

MAX_INDEX_DIGITS = 9  # /photos/<i>: longer numbers are refused before parsing

WEB_DEMO = Path(__file__).resolve().parents[1] / "web_demo"
ORT_DIST = Path("node_modules") / "onnxruntime-web" / "dist"
INSTALL_HINT = "npm ci --prefix web_demo"
PAGE_SUFFIXES = {".html", ".js", ".mjs", ".css", ".png", ".svg", ".ico"}

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".ort": "application/octet-stream",
    ".bin": "application/octet-stream",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def check_web_demo(web_root: Path = WEB_DEMO) -> Path:
    """The page folder, with its onnxruntime-web installed; else an error naming the command."""
    if not (web_root / "index.html").is_file():
        raise ConfigError(f"{web_root}: the web demo page (index.html) is missing; run from a source checkout of ammkd")
    if not (web_root / ORT_DIST).is_dir():
        raise ConfigError(
            f"{web_root / 'node_modules' / 'onnxruntime-web'} is missing; "
            f"install the page's runtime with: {INSTALL_HINT}"
        )
    return web_root


class _Handler(BaseHTTPRequestHandler):
    server_version = "ammkd-serve"
    sys_version = ""
    routes: dict[str, tuple[Path, bool]] = {}  # URL prefix -> (folder, whether sub-folders are reachable)
    photos: tuple[Path, ...] = ()  # the gallery's photos, by row: the only files outside the two roots served
    photo_root: Path | None = None  # the gallery's photo folder (resolved): every photo must lie inside it
    bundle_files: frozenset[str] = frozenset()  # what /bundle/ serves: relative paths
    redacted: frozenset[str] = frozenset()  # /bundle/ files served without the photo folder (gallery.json)
    page_root: Path = WEB_DEMO
    quiet = True

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        if not self.quiet:
            super().log_message(format, *args)

    def _headers(self, status: int, length: int, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(length))
        for k, v in ISOLATION_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()

    def _refuse(self, status: HTTPStatus, head_only: bool, extra: dict | None = None) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        for k, v in {**(extra or {}), **ISOLATION_HEADERS}.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def resolve(self, raw: str) -> Path | None:
        """The file a request path names, or None if it names nothing servable."""
        path = unquote(urlsplit(raw).path, errors="strict")
        if path == "/":
            path = "/index.html"
        if not path.startswith("/") or "\\" in path or "\x00" in path:
            return None
        if path.startswith("/photos/"):
            return self._photo(path.removeprefix("/photos/"))
        if path.startswith("/bundle/") and path.removeprefix("/bundle/") not in self.bundle_files:
            return None
        for prefix, (root, nested) in self.routes.items():
            if not path.startswith(prefix):
                continue
            rel = path[len(prefix) :]
            parts = rel.split("/")
            if not rel or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
                return None  # empty segments, dot segments and hidden files: refused, not normalised
            if not nested and len(parts) != 1:
                return None
            if prefix == "/" and posixpath.splitext(rel)[1].lower() not in PAGE_SUFFIXES:
                return None
            target = (root / rel).resolve()
            if not target.is_relative_to(root) or not target.is_file():
                return None
            return target
        return None

    def _photo(self, i: str) -> Path | None:
        """Row `i` of the gallery if it is a regular file inside the photo folder (checked again
        on every request: the folder may have changed since the server started)."""
        if not (i.isascii() and i.isdigit() and len(i) <= MAX_INDEX_DIGITS) or int(i) >= len(self.photos):
            return None
        target = self.photos[int(i)].resolve()
        if self.photo_root is None or not target.is_relative_to(self.photo_root) or not target.is_file():
            return None
        return target

    def _serve(self, head_only: bool) -> None:
        try:
            target = self.resolve(self.path)
        except UnicodeDecodeError:
            target = None
        if target is None:
            self._refuse(HTTPStatus.NOT_FOUND, head_only)
            return
        if target.as_posix() in self.redacted:
            body = _public_gallery_json(target)
            if body is None:
                self._refuse(HTTPStatus.NOT_FOUND, head_only)
                return
            self._headers(HTTPStatus.OK, len(body), content_type(target))
            if not head_only:
                self.wfile.write(body)
            return
        try:
            with open(target, "rb") as f:
                size = f.seek(0, 2)
                f.seek(0)
                self._headers(HTTPStatus.OK, size, content_type(target))
                if not head_only:
                    shutil.copyfileobj(f, self.wfile, 1 << 20)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._serve(head_only=False)

    def do_HEAD(self):  # noqa: N802
        self._serve(head_only=True)

    def _read_only(self):
        self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, self.command == "HEAD", {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _read_only  # noqa: N815


def make_server(
    bundle: str | Path, host: str = "127.0.0.1", port: int = 8000, web_root: Path = WEB_DEMO, quiet: bool = True
) -> ThreadingHTTPServer:
    """A bound (not yet serving) server for `bundle` and the page; the bundle and the page's
    runtime are checked first. `port=0` picks a free port (see `server.server_address`)."""
    reader = BundleReader.open(bundle)  # format, version, schema; files are hash-checked by the page
    try:
        reader.target("image_encoder", "onnx")
    except BundleError as e:
        raise ConfigError(f"{e}; the page runs ONNX: export one with `ammkd export --model M --target onnx`") from None
    web_root = check_web_demo(Path(web_root)).resolve()
    routes = {
        "/bundle/": (reader.root.resolve(), True),
        "/ort/": ((web_root / ORT_DIST).resolve(), False),
        "/": (web_root, False),
    }
    gallery = open_gallery(reader.root)  # checked: image names are relative paths inside its folder
    attrs = {"routes": routes, "page_root": web_root, "quiet": quiet, "bundle_files": _bundle_files(reader)}
    if gallery is not None:
        root = gallery.source.resolve()
        attrs |= {"photos": tuple(root / name for name in gallery.images), "photo_root": root}
        attrs["redacted"] = frozenset({(reader.root.resolve() / GALLERY_DIR / GALLERY_MANIFEST).as_posix()})
    handler = type("Handler", (_Handler,), attrs)
    server_cls = ThreadingHTTPServer
    if ":" in host:  # an IPv6 literal
        server_cls = type("ThreadingHTTPServerV6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
    try:
        server = server_cls((host, port), handler)
    except OSError as e:
        why = e.strerror or e
        raise ConfigError(f"cannot listen on {host}:{port} ({why}); try another --port, or --port 0") from None
    server.daemon_threads = True
    return server


def _public_gallery_json(path: Path) -> bytes | None:
    """gallery.json as read now, without `source_dir` (the user's photo folder stays private), or
    None if it is unreadable."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(manifest, dict):
        return None
    return json.dumps({k: v for k, v in manifest.items() if k != "source_dir"}, ensure_ascii=False).encode()


def _bundle_files(reader: BundleReader) -> frozenset[str]:
    """The relative paths /bundle/ serves: the manifest, every file it lists and the gallery's two files."""
    listed = {e["path"] for e in listed_files(reader.manifest)}
    return frozenset(listed | {MANIFEST, f"{GALLERY_DIR}/{GALLERY_MANIFEST}", f"{GALLERY_DIR}/{EMBEDDINGS}"})


def _lan_address() -> str | None:
    """This machine's address on its local network (no packet is sent), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: picks the outgoing interface only
            addr = s.getsockname()[0]
    except OSError:
        try:
            addr = socket.gethostbyname(socket.gethostname())
        except OSError:
            return None
    return None if ipaddress.ip_address(addr).is_loopback else addr


def urls(server: ThreadingHTTPServer, host: str) -> list[str]:
    """The page's URL on this machine, and on the LAN when `host` listens on every interface."""
    port = server.server_address[1]
    local = "127.0.0.1" if host in ("0.0.0.0", "", "127.0.0.1") else ("[::1]" if host in ("::", "::1") else host)
    found = [f"http://{'localhost' if local == '127.0.0.1' else local}:{port}/"]
    if host in ("0.0.0.0", "", "::"):
        lan = _lan_address()
        if lan:
            found.append(f"http://{lan}:{port}/")
    return found


def serve(bundle: str | Path, host: str = "127.0.0.1", port: int = 8000, print_fn=print, quiet: bool = False) -> None:
    """Serve the page and `bundle` until interrupted (Ctrl-C)."""
    server = make_server(bundle, host, port, quiet=quiet)
    found = urls(server, host)
    print_fn(f"serving {Path(bundle)} and the web demo at {found[0]}")
    for url in found[1:]:
        print_fn(
            f"on the local network: {url} (not a secure context over plain HTTP: the page hashes in JS and "
            "runs on one thread there)"
        )
    print_fn("read-only (GET/HEAD); press Ctrl-C to stop")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


__all__ = ["INSTALL_HINT", "check_web_demo", "make_server", "serve", "urls"]
