"""A stand-in for GitHub on loopback, answering for one repository from a local git repo.

GitHub is not reachable from CI, so the GitHub path of nixsnake (``nixpkgs_source =
"github:OWNER/REPO@BASE"``) is tested against this server. It serves the GitHub
Enterprise URL layout nixsnake uses for a ``@BASE``:

| request | answer (built from the git repo, in GitHub's JSON shape) |
|---|---|
| ``GET /api/v3/repos/O/R/commits?sha=REF&until=T&since=T&per_page=N&page=P`` | commits reachable from REF in ``git log`` order (newest committer date first, merged pull-request commits interleaved, like GitHub), each ``{sha, commit: {author: {date}, committer: {date}, message}, parents: [{sha}]}``; 404 for an unknown REF |
| ``GET /api/v3/repos/O/R/commits/REF`` | one commit; 422 for an unknown one |
| ``GET /O/R/archive/REV.tar.gz`` | ``git archive`` with GitHub's ``R-REV/`` prefix (or bytes set in ``tarballs``) |
| ``GET /O/R/raw/REV/PATH`` | the file at REV; 404 when there is none |

Every request path is recorded in ``requests`` (what a lock cost).
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import subprocess
import threading
import urllib.parse
from pathlib import Path


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=check)


class GitHubStandIn:
    def __init__(self, repo: Path, owner_repo: str = "NixOS/nixpkgs"):
        self.repo = repo
        self.owner_repo = owner_repo
        self.requests: list[str] = []
        #: rev -> tarball bytes served instead of ``git archive`` (a changed tarball)
        self.tarballs: dict[str, bytes] = {}
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                standin.requests.append(self.path)
                status, body, ctype = standin.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def source(self) -> str:
        """The ``nixpkgs_source`` setting naming this server."""
        return f"github:{self.owner_repo}@{self.base}"

    def __enter__(self) -> GitHubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def api_requests(self) -> list[str]:
        return [r for r in self.requests if r.startswith("/api/v3/")]

    # ------------------------------------------------------------------ answers

    def _commit(self, rev: str) -> dict:
        out = _git(self.repo, "show", "-s", "--format=%H%x00%ct%x00%at%x00%P%x00%s", rev).stdout.decode()
        sha, ct, at, parents, subject = out.rstrip("\n").split("\x00")

        def iso(ts: str) -> str:
            return dt.datetime.fromtimestamp(int(ts), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        return {
            "sha": sha,
            "commit": {"author": {"date": iso(at)}, "committer": {"date": iso(ct)}, "message": subject},
            "parents": [{"sha": p} for p in parents.split()],
        }

    def _rev(self, ref: str) -> str | None:
        r = _git(self.repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        return r.stdout.decode().strip() if r.returncode == 0 else None

    def answer(self, path: str) -> tuple[int, bytes, str]:
        url = urllib.parse.urlsplit(path)
        q = dict(urllib.parse.parse_qsl(url.query))
        api = f"/api/v3/repos/{self.owner_repo}/commits"
        web = f"/{self.owner_repo}/"
        if url.path == api:
            rev = self._rev(q.get("sha", "HEAD"))
            if rev is None:
                return 404, json.dumps({"message": "Not Found"}).encode(), "application/json"
            per_page, page = int(q.get("per_page", 30)), int(q.get("page", 1))
            argv = ["rev-list", f"--max-count={per_page}", f"--skip={(page - 1) * per_page}"]
            if "until" in q:
                argv.append(f"--before={q['until']}")
            if "since" in q:
                argv.append(f"--since={q['since']}")
            shas = _git(self.repo, *argv, rev, "--").stdout.decode().split()
            return 200, json.dumps([self._commit(s) for s in shas]).encode(), "application/json"
        if url.path.startswith(api + "/"):
            rev = self._rev(url.path[len(api) + 1 :])
            if rev is None:
                return 422, json.dumps({"message": "No commit found for SHA"}).encode(), "application/json"
            return 200, json.dumps(self._commit(rev)).encode(), "application/json"
        if url.path.startswith(web + "archive/") and url.path.endswith(".tar.gz"):
            ref = url.path[len(web + "archive/") : -len(".tar.gz")]
            rev = self._rev(ref)
            if rev is None:
                return 404, b"Not Found", "text/plain"
            if rev in self.tarballs:
                return 200, self.tarballs[rev], "application/x-gzip"
            name = self.owner_repo.split("/")[1]
            data = _git(self.repo, "archive", "--format=tar.gz", f"--prefix={name}-{rev}/", rev).stdout
            return 200, data, "application/x-gzip"
        if url.path.startswith(web + "raw/"):
            rev, _, file = url.path[len(web + "raw/") :].partition("/")
            r = _git(self.repo, "show", f"{rev}:{file}", check=False)
            if r.returncode != 0:
                return 404, b"404: Not Found", "text/plain"
            return 200, r.stdout, "text/plain; charset=utf-8"
        return 404, b"Not Found", "text/plain"
