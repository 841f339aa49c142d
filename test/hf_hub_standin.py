"""A Hugging Face Hub stand-in for tests without network: one model repository served over local HTTP.

Point ``HF_ENDPOINT`` at ``HubStandin.url`` (before huggingface_hub is imported: it reads the variable once) and
``snapshot_download`` fetches the repository's files from here into an empty cache, as it would from the Hub on a
fresh machine. It answers only what ``snapshot_download`` asks: the revision's info, its file tree and each
file (HEAD and GET by commit). ``downloads`` counts the GETs of each file.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class HubStandin:
    """Serves ``files`` (name -> local path) as repository ``repo_id`` at one commit."""

    def __init__(self, repo_id: str, files: dict[str, Path]):
        self.repo_id = repo_id
        self.files = {name: Path(p) for name, p in files.items()}
        self.sha256 = {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in self.files.items()}
        self.commit = hashlib.sha1("".join(sorted(self.sha256.values())).encode()).hexdigest()
        self.downloads: Counter[str] = Counter()
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HubStandin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _tree(self) -> list[dict]:
        return [{"type": "file", "path": name, "size": p.stat().st_size, "oid": self.sha256[name][:40],
                 "lfs": {"oid": self.sha256[name], "size": p.stat().st_size, "pointerSize": 134}}
                for name, p in self.files.items()]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _json(self, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _file(self, name: str, head: bool) -> None:
                path = hub.files.get(name)
                if path is None:
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", hub.commit)
                self.send_header("ETag", f'"{hub.sha256[name]}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    hub.downloads[name] += 1
                    self.wfile.write(data)

            def _route(self, head: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                api = f"/api/models/{hub.repo_id}/"
                resolve = f"/{hub.repo_id}/resolve/"
                if path.startswith(api + "revision/"):
                    self._json({"id": hub.repo_id, "modelId": hub.repo_id, "sha": hub.commit,
                                "siblings": [{"rfilename": n} for n in hub.files]})
                elif path.startswith(api + "tree/"):
                    self._json(hub._tree())
                elif path.startswith(resolve):
                    self._file(path[len(resolve):].partition("/")[2], head)
                else:
                    self.send_error(404)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self._route(head=False)

            def do_HEAD(self) -> None:  # noqa: N802
                self._route(head=True)

        return Handler
