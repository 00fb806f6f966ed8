"""A local stand-in for the Hugging Face Hub's file endpoints, for the real ``huggingface_hub`` client.

Our machines reach no model hub, so tests point ``HF_ENDPOINT`` at this server on loopback. It
implements only what ``hf_hub_download``, ``snapshot_download``, ``model_info`` and
``list_repo_tree`` / ``list_repo_files`` call (read from huggingface_hub 2.4's code):

- ``GET /api/models/{org}/{repo}[/revision/{rev}]``: ``{"id", "sha", "siblings"}`` (repo_info;
  each sibling with its size, as the hub gives with ``blobs=true``);
- ``GET /api/models/{org}/{repo}/tree/{rev}[/{path}]?recursive=...``: file entries (one page);
- ``HEAD`` / ``GET /{org}/{repo}/resolve/{rev}/{path}``: the file, with ``X-Repo-Commit``, ``ETag``
  (the sha256, as the hub gives for LFS files), ``Content-Length``, and ``Range`` requests (206).

Repos are directories the test builds (``root/org/repo/...``; symlinks to the cached models keep
them cheap). ``cut_next_download`` makes the next file download stop after that many bytes
(the connection closes early), the one hub condition a test cannot otherwise produce on demand.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_API = re.compile(
    r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+)|/tree/(?P<tree>[^/]+)(?P<sub>/.*)?)?$"
)
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


class HubStub:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.tokens: list[str] = []  # the Authorization headers seen
        self.cut_next_download: int | None = None
        self._sha256: dict[Path, str] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def add_file(self, repo: str, name: str, source: Path | bytes) -> None:
        target = self.root / repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        else:
            target.symlink_to(source.resolve())

    def commit(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def _files(self, repo: str) -> list[Path]:
        base = self.root / repo
        return sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []

    def sha256(self, path: Path) -> str:
        with self._lock:
            if path not in self._sha256:
                digest = hashlib.sha256()
                with path.open("rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                self._sha256[path] = digest.hexdigest()
            return self._sha256[path]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, *, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                stub.requests.append((self.command, path, self.headers.get("Range")))
                if auth := self.headers.get("Authorization"):
                    stub.tokens.append(auth)
                if (m := _API.match(path)) and body:
                    self._api(m)
                elif m := _RESOLVE.match(path):
                    self._resolve(m["repo"], m["path"], body)
                else:
                    self._json(404, {"error": "not found"}, {"X-Error-Code": "RepoNotFound"})

            def _json(self, status: int, data: object, headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                sent = {"Content-Type": "application/json", "Content-Length": str(len(raw)), **(headers or {})}
                for k, v in sent.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def _api(self, m: re.Match[str]) -> None:
                repo = m["repo"]
                files = stub._files(repo)
                if not files:
                    self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    return
                names = [p.relative_to(stub.root / repo).as_posix() for p in files]
                if m["tree"] is None:
                    siblings = [{"rfilename": n, "size": p.stat().st_size} for n, p in zip(names, files, strict=True)]
                    self._json(200, {"id": repo, "sha": stub.commit(repo), "siblings": siblings})
                    return
                prefix = (m["sub"] or "").strip("/")
                entries = [
                    {"type": "file", "path": n, "size": p.stat().st_size, "oid": stub.commit(n)}
                    for n, p in zip(names, files, strict=True)
                    if n.startswith(prefix)
                ]
                self._json(200, entries)

            def _resolve(self, repo: str, name: str, body: bool) -> None:
                file = stub.root / repo / name
                if not file.is_file():
                    code = "EntryNotFound" if stub._files(repo) else "RepoNotFound"
                    self._json(404, {"error": f"{name} not found"}, {"X-Error-Code": code})
                    return
                size = file.stat().st_size
                start, status = 0, 200
                if (rng := self.headers.get("Range")) and (r := re.match(r"bytes=(\d+)-", rng)):
                    start, status = int(r[1]), 206
                self.send_response(status)
                self.send_header("X-Repo-Commit", stub.commit(repo))
                self.send_header("ETag", f'"{stub.sha256(file)}"')
                self.send_header("Content-Length", str(size - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.end_headers()
                if not body:
                    return
                cut, stub.cut_next_download = stub.cut_next_download, None
                with file.open("rb") as f:
                    f.seek(start)
                    sent = 0
                    for block in iter(lambda: f.read(1 << 20), b""):
                        if cut is not None and sent + len(block) > cut:
                            self.wfile.write(block[: cut - sent])
                            self.close_connection = True
                            return
                        self.wfile.write(block)
                        sent += len(block)

        return Handler

    @contextmanager
    def running(self) -> Iterator[HubStub]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()
