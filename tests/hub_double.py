"""A loopback test double of the Hugging Face Hub's write API, and an olah mirror to read it back.

``HubDouble`` answers the endpoints ``HfApi`` uses to publish (create_repo, create_branch,
validate-yaml, preupload, paths-info, revision info, commit) on 127.0.0.1 and stores every repo
as a real git repository under ``root/models/ORG/NAME``: one commit per ``create_commit``, so the
revision it returns is a real git commit id. That folder is olah's ``mirrors-path``: ``Olah``
serves the same repos back with the Hub's download protocol, so a pushed file is downloaded by
the real ``hf_hub_download``, exactly as from huggingface.co.

Uploads are answered with upload mode "regular" (base64 in the commit payload); the Hub's LFS /
Xet upload protocols are not imitated.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

_GIT = ["git", "-c", "user.name=hub-double", "-c", "user.email=hub-double@localhost", "-c", "commit.gpgsign=false"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    result = subprocess.run([*_GIT, "-C", str(repo), *args], input=input, capture_output=True, check=True)
    return result.stdout.decode().strip()


class _Handler(BaseHTTPRequestHandler):
    server: "HubDouble"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:
            self.send_header("X-Error-Message", str(body.get("error", "")) if isinstance(body, dict) else "")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _route(self) -> tuple[str, list[str]]:
        parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
        return "/".join(parts), parts

    def do_GET(self) -> None:
        _, parts = self._route()
        # /api/models/ORG/NAME/revision/REV
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "revision":
            repo = self.server.repo_path(parts[2], parts[3])
            if repo is None:
                return self._send(404, {"error": "Repository not found"})
            sha = self.server.rev_parse(repo, "/".join(parts[5:]))
            if sha is None:
                return self._send(404, {"error": "Invalid rev id"})
            files = git(repo, "ls-tree", "-r", "--name-only", sha).splitlines()
            return self._send(200, {"id": f"{parts[2]}/{parts[3]}", "sha": sha, "siblings": [{"rfilename": f} for f in files]})
        self._send(404, {"error": f"not implemented in the hub double: GET {self.path}"})

    def do_POST(self) -> None:
        _, parts = self._route()
        body = self._body()
        with self.server.lock:
            if parts == ["api", "repos", "create"]:
                return self._create(json.loads(body))
            if parts == ["api", "validate-yaml"]:
                return self._send(200, {"errors": [], "warnings": []})
            if parts[:2] == ["api", "models"] and len(parts) >= 6:
                repo = self.server.repo_path(parts[2], parts[3])
                if repo is None:
                    return self._send(404, {"error": "Repository not found"})
                action, revision = parts[4], "/".join(parts[5:])
                handler = {"preupload": self._preupload, "paths-info": self._paths_info, "commit": self._commit, "branch": self._branch}.get(action)
                if handler:
                    return handler(repo, revision, body)
        self._send(404, {"error": f"not implemented in the hub double: POST {self.path}"})

    def _create(self, payload: dict) -> None:
        org, name = payload.get("organization"), payload["name"]
        repo_id = f"{org}/{name}" if org else name
        url = f"{self.server.url}/{repo_id}"
        if self.server.repo_path(org or "", name) is not None:
            return self._send(409, {"error": "You already created this model repo", "url": url})
        repo = self.server.root / "models" / (org or "") / name
        repo.mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        (repo / ".gitattributes").write_text("# created by the hub double\n")
        git(repo, "add", ".gitattributes")
        git(repo, "commit", "-q", "-m", "initial commit")
        self.server.log.append(("create", repo_id))
        self._send(200, {"url": url, "name": repo_id})

    def _blob_id(self, repo: Path, revision: str, path: str) -> str | None:
        try:
            return git(repo, "rev-parse", f"{revision}:{path}")
        except subprocess.CalledProcessError:
            return None

    def _preupload(self, repo: Path, revision: str, body: bytes) -> None:
        files = json.loads(body)["files"]
        answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": self._blob_id(repo, revision, f["path"])} for f in files]
        self._send(200, {"files": answer})

    def _paths_info(self, repo: Path, revision: str, body: bytes) -> None:
        if self.server.rev_parse(repo, revision) is None:
            return self._send(404, {"error": "Invalid rev id"})
        form = parse_qs(body.decode()) if body[:1] != b"{" else json.loads(body)
        found = []
        for path in form.get("paths", []):
            oid = self._blob_id(repo, revision, path)
            if oid is not None:
                size = int(git(repo, "cat-file", "-s", oid))
                found.append({"type": "file", "path": path, "oid": oid, "size": size})
        self._send(200, found)

    def _branch(self, repo: Path, branch: str, body: bytes) -> None:
        if self.server.rev_parse(repo, branch) is None:
            git(repo, "branch", branch, "main")
            return self._send(200, {})
        self._send(409, {"error": "Reference already exists"})

    def _commit(self, repo: Path, revision: str, body: bytes) -> None:
        if self.server.rev_parse(repo, revision) is None:
            return self._send(404, {"error": "Invalid rev id"})
        git(repo, "checkout", "-q", revision)
        summary = "commit"
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                summary = value.get("summary") or summary
            elif item["key"] == "file":
                target = repo / value["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(value["content"]))
                git(repo, "add", value["path"])
            elif item["key"] == "deletedFile":
                git(repo, "rm", "-q", value["path"])
            else:
                return self._send(400, {"error": f"the hub double does not take {item['key']} operations"})
        git(repo, "commit", "-q", "--allow-empty", "-m", summary)
        oid = git(repo, "rev-parse", "HEAD")
        self.server.log.append(("commit", oid))
        self._send(200, {"commitUrl": f"{self.server.url}/{repo.parent.name}/{repo.name}/commit/{oid}", "commitOid": oid})


class HubDouble(ThreadingHTTPServer):
    """Start with ``HubDouble(root).start()``; ``url`` is its HF_ENDPOINT; ``stop()`` ends it."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.lock = threading.Lock()
        self.log: list[tuple[str, str]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def start(self) -> "HubDouble":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def repo_path(self, org: str, name: str) -> Path | None:
        path = self.root / "models" / org / name
        return path if (path / ".git").is_dir() else None

    def rev_parse(self, repo: Path, revision: str) -> str | None:
        try:
            return git(repo, "rev-parse", "--verify", "-q", f"{revision}^{{commit}}")
        except subprocess.CalledProcessError:
            return None

    def write_file(self, repo_id: str, path: str, data: bytes, branch: str = "main") -> str:
        """Commit ``data`` at ``path`` directly (what a publisher replacing a file does); the new commit id."""
        repo = self.root / "models" / repo_id
        with self.lock:
            git(repo, "checkout", "-q", branch)
            (repo / path).write_bytes(data)
            git(repo, "add", path)
            git(repo, "commit", "-q", "-m", f"replace {path}")
            return git(repo, "rev-parse", "HEAD")


class Olah:
    """olah (the self-hosted HF mirror) in offline mode on 127.0.0.1, serving the git repos
    under ``mirrors`` with the Hub's download protocol. ``url`` is the HF_ENDPOINT to use."""

    def __init__(self, mirrors: Path, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "olah.toml"
        self.config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\n'
            f'repos-path = "{workdir / "cache"}"\nmirrors-path = ["{mirrors}"]\n'
            f'mirror-netloc = "127.0.0.1:{self.port}"\nmirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            "metadata-cache-ttl = 0\n"
            "[accessibility]\noffline = true\n"
        )
        self.log_file = open(workdir / "olah.out", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "olah.server", "-c", str(self.config), "--log-path", str(workdir / "logs")],
            stdout=self.log_file, stderr=subprocess.STDOUT, cwd=workdir,
            env={k: v for k, v in os.environ.items() if not k.startswith("HF_")},
        )

    def wait(self, timeout: float = 60.0) -> "Olah":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"olah exited with {self.process.returncode}; see {self.log_file.name}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"olah did not start within {timeout} s; see {self.log_file.name}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log_file.close()
