"""Local stand-ins for everything Renovate asks while it looks up the fleet's updates.

Started by generate.sh (nothing else uses it), on fixed ports of 127.0.0.1 so the fleet's
files can name them and regenerated fixtures stay comparable:

  registry  an OCI distribution API subset (Docker Registry v2): `/v2/`, tag lists,
            manifests by tag or digest (GET and HEAD, with `Docker-Content-Digest`) and
            config blobs: what Renovate 39's docker datasource calls
            (lib/modules/datasource/docker/{index,common}.ts). Plain HTTP: the Renovate
            config marks it `insecureRegistry`.
  helm      a Helm chart repository: `/charts/index.yaml` with `created` times, which
            Renovate's helm datasource turns into release timestamps.
  git       `git http-backend` over the bare repositories in --git-root (the tags the
            fleet's GitRepository follows; Renovate's git-tags datasource runs `git
            ls-remote`).
  gitea     a Gitea API subset for the named-repository run (what Renovate 39's gitea
            platform calls in lookup mode), with the fleet repository cloned over
            `git http-backend` from the same port.
  proxy     a deny-all HTTP(S) proxy: Renovate runs with HTTP_PROXY/HTTPS_PROXY pointing
            here, so any request it makes outside 127.0.0.1 gets 403 and is logged
            instead of reaching the internet.

Every request is logged, one JSON object a line, to --request-log, so the script can show
what Renovate asked and what was refused.

`python3 servers.py digest NAME TAG [BUILD]` prints the digest a manifest is served
under, for pinning it in the fleet's files.
"""

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))

REGISTRY_PORT = 45601
HELM_PORT = 45602
GIT_PORT = 45603
PROXY_PORT = 45604
GITEA_PORT = 45605

# The repository the named run looks at, as Gitea would name it (owner/name).
GITEA_REPOSITORY = "home/fleet"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"


def load_packages():
    with open(os.path.join(HERE, "packages.json"), encoding="utf-8") as f:
        return json.load(f)


def canonical(document):
    """Byte-stable JSON, so a manifest's digest depends only on packages.json."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_registry(packages):
    """Every blob and manifest the registry serves, by repository.

    Returns {name: {"tags": {tag: digest}, "manifests": {digest: bytes},
    "blobs": {digest: bytes}}}. A tag with `builds: N` has N manifests; the tag points at
    the last, the older ones stay reachable by digest as they do on a real registry.
    """
    registry = {}
    for name, tags in packages["docker"].items():
        repo = {"tags": {}, "manifests": {}, "blobs": {}}
        for tag, meta in tags.items():
            for build in range(1, meta.get("builds", 1) + 1):
                manifest = manifest_for(name, tag, meta, build, repo["blobs"])
                digest = sha256(manifest)
                repo["manifests"][digest] = manifest
                repo["tags"][tag] = digest
        registry[name] = repo
    return registry


def manifest_for(name, tag, meta, build, blobs):
    short = name.rsplit("/", 1)[-1]
    if meta.get("chart"):
        config = canonical({"apiVersion": "v2", "name": short, "version": tag,
                            "type": "application"})
        config_type, layer_type = HELM_CONFIG, HELM_LAYER
    else:
        config = canonical({
            "architecture": "amd64", "os": "linux", "created": meta["created"],
            "config": {"Labels": {"org.opencontainers.image.version": tag,
                                  "dev.fluxgate.test.build": str(build)}},
            "rootfs": {"type": "layers", "diff_ids": []},
        })
        config_type, layer_type = OCI_CONFIG, OCI_LAYER
    blobs[sha256(config)] = config
    # Layers are never fetched by Renovate; a stable stand-in digest is enough.
    layer = f"{name}:{tag}:{build}".encode()
    return canonical({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": sha256(config),
                   "size": len(config)},
        "layers": [{"mediaType": layer_type, "digest": sha256(layer),
                    "size": len(layer)}],
        "annotations": {"org.opencontainers.image.created": meta["created"]},
    })


def helm_index(packages, base_url):
    """index.yaml as `helm repo index` writes it (the fields Renovate reads, and a few
    more), newest version first."""
    lines = ["apiVersion: v1", "entries:"]
    for chart, versions in sorted(packages["helm"].items()):
        lines.append(f"  {chart}:")
        for version, meta in sorted(versions.items(), key=lambda kv: kv[1]["created"],
                                    reverse=True):
            digest = hashlib.sha256(f"{chart}-{version}".encode()).hexdigest()
            lines += [
                "  - apiVersion: v2",
                f"    appVersion: {version}",
                f"    created: \"{meta['created']}\"",
                f"    description: The {chart} chart",
                f"    digest: {digest}",
                f"    name: {chart}",
                "    type: application",
                "    urls:",
                f"    - {base_url}/{chart}-{version}.tgz",
                f"    version: {version}",
            ]
    lines.append('generated: "2025-06-01T00:00:00Z"')
    return ("\n".join(lines) + "\n").encode()


class Log:
    """One JSON line per request, shared by every server's threads."""

    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8")
        self.lock = threading.Lock()

    def write(self, **record):
        with self.lock:
            self.file.write(json.dumps(record, sort_keys=True) + "\n")
            self.file.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_name_ = "?"
    log = None

    def log_message(self, format, *args):
        pass  # every request goes to the JSON request log instead

    def record(self, status):
        self.log.write(server=self.server_name_, method=self.command, path=self.path,
                       status=status)

    def reply(self, status, body=b"", content_type="application/json", headers=None):
        self.record(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def not_found(self):
        self.reply(404, canonical({"errors": [{"code": "NOT_FOUND",
                                               "message": self.path}]}))


class RegistryHandler(Handler):
    server_name_ = "registry"
    registry = None

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = urlsplit(self.path).path
        if path in ("/v2", "/v2/"):
            return self.reply(200, b"{}", headers={
                "Docker-Distribution-API-Version": "registry/2.0"})
        if not path.startswith("/v2/"):
            return self.not_found()
        rest = path[len("/v2/"):]
        for kind in ("/tags/list", "/manifests/", "/blobs/"):
            if kind in rest:
                name, _, ref = rest.partition(kind)
                break
        else:
            return self.not_found()
        repo = self.registry.get(name)
        if repo is None:
            return self.not_found()
        if kind == "/tags/list":
            return self.reply(200, canonical({"name": name, "tags": list(repo["tags"])}))
        if kind == "/manifests/":
            digest = repo["tags"].get(ref, ref)
            manifest = repo["manifests"].get(digest)
            if manifest is None:
                return self.not_found()
            return self.reply(200, manifest, OCI_MANIFEST,
                              {"Docker-Content-Digest": digest})
        blob = repo["blobs"].get(ref)
        if blob is None:
            return self.not_found()
        return self.reply(200, blob, "application/octet-stream",
                          {"Docker-Content-Digest": ref})


class HelmHandler(Handler):
    server_name_ = "helm"
    index = b""

    def do_GET(self):
        if urlsplit(self.path).path == "/charts/index.yaml":
            return self.reply(200, self.index, "application/x-yaml")
        self.not_found()


class GitHandler(Handler):
    """Git's smart HTTP through `git http-backend` (a CGI program), read-only."""

    server_name_ = "git"
    git_root = None

    def do_GET(self):
        self.git()

    def do_POST(self):
        self.git()

    def git(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": self.git_root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": url.path,
            "QUERY_STRING": url.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        result = subprocess.run(["git", "http-backend"], input=body, env=env,
                                capture_output=True, check=False)
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = result.stdout.partition(b"\n\n")
        status, headers = 200, {}
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.strip().split()[0])
            elif key:
                headers[key.strip()] = value.strip()
        content_type = headers.pop("Content-Type", "text/plain")
        self.reply(status, payload, content_type, headers)


class GiteaHandler(GitHandler):
    """The calls of Renovate 39's gitea platform in lookup mode (initPlatform: user and
    version; initRepo: the repository; then PRs and issues while it checks for an
    onboarding PR), and the repository itself over git http-backend on the same port,
    as Gitea serves it. Anything else is 404, logged, so a new call shows up."""

    server_name_ = "gitea"

    def do_GET(self):
        path = urlsplit(self.path).path
        if not path.startswith("/api/v1/"):
            return self.git()
        base = f"http://127.0.0.1:{GITEA_PORT}"
        owner, name = GITEA_REPOSITORY.split("/")
        user = {"id": 1, "login": "renovate", "username": "renovate",
                "full_name": "Renovate Bot", "email": "renovate@fleet.invalid"}
        repo_path = f"/api/v1/repos/{GITEA_REPOSITORY}"
        if path == "/api/v1/user":
            return self.reply(200, canonical(user))
        if path == "/api/v1/version":
            return self.reply(200, canonical({"version": "1.22.3"}))
        if path == repo_path:
            return self.reply(200, canonical({
                "id": 7, "name": name, "full_name": GITEA_REPOSITORY,
                "owner": {"id": 2, "login": owner, "username": owner},
                "default_branch": "main", "empty": False, "archived": False,
                "mirror": False, "fork": False, "private": True,
                "has_issues": True, "has_pull_requests": True,
                "external_tracker": None,
                "allow_merge_commits": True, "allow_rebase": False,
                "allow_rebase_explicit": False, "allow_squash_merge": True,
                "permissions": {"admin": False, "push": True, "pull": True},
                "clone_url": f"{base}/{GITEA_REPOSITORY}.git",
                "ssh_url": f"ssh://git@127.0.0.1:2222/{GITEA_REPOSITORY}.git",
                "html_url": f"{base}/{GITEA_REPOSITORY}",
            }))
        if path in (repo_path + "/pulls", repo_path + "/issues", repo_path + "/labels",
                    f"/api/v1/orgs/{owner}/labels"):
            return self.reply(200, b"[]")
        self.not_found()


class ProxyHandler(Handler):
    """Refuses everything: a request that reaches here would have left the machine."""

    server_name_ = "proxy"

    def deny(self):
        self.reply(403, b"denied by the fixture proxy: only 127.0.0.1 is reachable\n",
                   "text/plain", {"Connection": "close"})
        self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_CONNECT = deny
    do_OPTIONS = deny


def serve(handler, port):
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="start every server until SIGTERM/SIGINT")
    run.add_argument("--git-root", required=True,
                     help="directory of bare repositories served by git http-backend")
    run.add_argument("--request-log", required=True)
    digest = sub.add_parser("digest", help="print a manifest's digest")
    digest.add_argument("name")
    digest.add_argument("tag")
    digest.add_argument("build", nargs="?", type=int, default=1)
    args = parser.parse_args()

    packages = load_packages()
    if args.command == "digest":
        meta = packages["docker"][args.name][args.tag]
        print(sha256(manifest_for(args.name, args.tag, meta, args.build, {})))
        return

    log = Log(args.request_log)
    Handler.log = log
    RegistryHandler.registry = build_registry(packages)
    HelmHandler.index = helm_index(packages, f"http://127.0.0.1:{HELM_PORT}/charts")
    GitHandler.git_root = os.path.abspath(args.git_root)
    servers = [serve(RegistryHandler, REGISTRY_PORT), serve(HelmHandler, HELM_PORT),
               serve(GitHandler, GIT_PORT), serve(ProxyHandler, PROXY_PORT),
               serve(GiteaHandler, GITEA_PORT)]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    for server in servers:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
