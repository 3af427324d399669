"""A small but real Kubernetes API server for custom resources, and KServe's part simulated.

`FakeKubeAPI` listens on 127.0.0.1 and serves, like kube-apiserver does for a CRD with a status
subresource:
- `POST   /apis/G/V/namespaces/NS/PLURAL`            create (409 if it exists)
- `GET    /apis/G/V/namespaces/NS/PLURAL[/NAME]`     list (fieldSelector metadata.name=) / read
- `GET    ...PLURAL?watch=true`                      watch: ADDED for what exists, then every
                                                     change as a JSON line, until timeoutSeconds
- `PATCH  ...PLURAL/NAME` with `application/merge-patch+json` (RFC 7386) or
  `application/json-patch+json` (RFC 6902, `test` included); other patch types get 415, like
  custom resources do. A patch cannot change `status`; `metadata.generation` goes up when `spec`
  changes; a `metadata.resourceVersion` in a merge patch that is not the current one gets 409.
- every write is checked by `validator(obj) -> [errors]` (422 Invalid), as the CRD schema would.
`kubeconfig(path)` writes a kubeconfig that points the kubernetes client at it.

`KServeSimulator` is what KServe's controller and Knative do, reduced to what a rollout sees.
After each write to an InferenceService it reconciles it, in the order the real ones do:
1. The predictor spec without `canaryTrafficPercent` is the revision template. A new template makes
   a new revision, `NAME-predictor-0000N`. Only changing the percent makes none.
2. A revision is ready when `backends` maps its model (`storageUri`, else the image) to a URL:
   the real predictor process that plays that revision. Unmapped models never become ready.
3. Traffic, when the latest revision is ready: without `canaryTrafficPercent` it gets 100% and
   becomes the latest rolled out revision (the one before becomes the previous); with it, the
   latest gets the percent and the latest rolled out revision the rest. When the latest revision
   is not ready, the rolled out one keeps 100% and Ready is False.
4. With `serving.kserve.io/enable-tag-routing: "true"` the entries are tagged `latest` and
   `prev` and get a URL: the backend's `http://127.0.0.1:PORT`, or with `tag_hosts=True` the
   host name Knative would give (`http://latest-NAME-predictor.NS.example.com`), reachable
   through `ingress_url`, a Host-routing proxy like an ingress gateway.
5. Status written: observedGeneration, url, conditions (PredictorReady, Ready) and
   components.predictor (latestCreated/latestReady/latestRolledout/previousRolledout revisions,
   traffic, url).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

PATH = re.compile(
    r"^/(?:apis/(?P<group>[^/]+)/(?P<version>[^/]+)|api/v1)/namespaces/(?P<namespace>[^/]+)"
    r"/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?/?$"
)
# The API server's proxy to a Service: /api/v1/namespaces/NS/services/NAME[:PORT]/proxy/PATH
SERVICE_PROXY = re.compile(
    r"^/api/v1/namespaces/(?P<namespace>[^/]+)/services/(?P<service>[^/:]+)(?::(?P<port>[^/]+))?"
    r"/proxy(?P<path>/.*)?$"
)
TOKEN = "test-token"  # the bearer token kubeconfig() writes
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> dict:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: object, parts: list[str]) -> tuple[object, str]:
    node = doc
    for part in parts[:-1]:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
        except (KeyError, IndexError, ValueError, TypeError) as err:
            raise ApiError(422, "Invalid", f"path not found at {part!r}") from err
    return node, parts[-1]


def json_patch(doc: dict, operations: list) -> dict:
    """RFC 6902 add, remove, replace and test (what rollouts use)."""
    doc = copy.deepcopy(doc)
    for op in operations:
        kind, parts = op.get("op"), _pointer(op.get("path", ""))
        if not parts:
            raise ApiError(422, "Invalid", "operations on the whole document are not supported")
        node, key = _parent(doc, parts)
        exists = (
            (key in node)
            if isinstance(node, dict)
            else (isinstance(node, list) and key.isdigit() and int(key) < len(node))
        )
        if kind == "test":
            actual = node[key if isinstance(node, dict) else int(key)] if exists else None
            if not exists or actual != op.get("value"):
                raise ApiError(
                    422, "Invalid", f"the server rejected our request: test failed for {op['path']}"
                )
        elif kind in ("remove", "replace") and not exists:
            raise ApiError(422, "Invalid", f"cannot {kind} missing {op['path']}")
        elif kind == "remove":
            del node[key if isinstance(node, dict) else int(key)]  # type: ignore[union-attr]
        elif kind == "replace":
            node[key if isinstance(node, dict) else int(key)] = op["value"]  # type: ignore[index]
        elif kind == "add":
            if isinstance(node, list):
                node.insert(len(node) if key == "-" else int(key), op["value"])
            else:
                node[key] = op["value"]  # type: ignore[index]
        else:
            raise ApiError(422, "Invalid", f"unsupported JSON patch op {kind!r}")
    return doc


class FakeKubeAPI:
    def __init__(self, validator: Callable[[dict], list[str]] | None = None):
        self.validator = validator
        self.objects: dict[tuple[str, str], dict] = {}  # (collection path, name) -> object
        self.events: list[tuple[int, str, str, dict]] = []  # (rv, collection, type, object)
        self.patches: list[tuple[str, object]] = []  # (content type, body) of every PATCH
        self.on_write: list[Callable[[str, str], None]] = []  # (collection, name) after writes
        self.errors: list[str] = []  # exceptions of the on_write hooks
        # (namespace, service, port) -> the URL the service proxy forwards to, or None when the
        # Service has no ready endpoints; set by a controller simulator.
        self.service_backend: Callable[[str, str, str | None], str | None] = lambda *a: None
        self.proxied: list[tuple[str, str]] = []  # (service, path) of every proxied request
        self._rv = 0
        self._changed = threading.Condition()
        self._stopping = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": TOKEN}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "tester", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    def __enter__(self) -> FakeKubeAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # --- the store -----------------------------------------------------------------------------

    def get(self, collection: str, name: str) -> dict:
        with self._changed:
            return copy.deepcopy(self.objects[(collection, name)])

    def _store(self, collection: str, obj: dict, event: str) -> dict:
        with self._changed:
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self.objects[(collection, obj["metadata"]["name"])] = obj
            self.events.append((self._rv, collection, event, copy.deepcopy(obj)))
            self._changed.notify_all()
            return copy.deepcopy(obj)

    def delete(self, collection: str, name: str) -> None:
        with self._changed:
            obj = self.objects.pop((collection, name))
            self._rv += 1
            self.events.append((self._rv, collection, "DELETED", obj))
            self._changed.notify_all()

    def list(self, collection: str) -> list[dict]:
        with self._changed:
            return [copy.deepcopy(o) for (c, _), o in self.objects.items() if c == collection]

    def put(self, collection: str, obj: dict) -> dict:
        """What a controller's create-or-update of an object it owns does (no validation: not
        an InferenceService); `generation` goes up when `spec` changes, and an update that
        changes nothing writes nothing."""
        obj = copy.deepcopy(obj)
        name = obj["metadata"]["name"]
        with self._changed:
            current = self.objects.get((collection, name))
            if current is None:
                obj["metadata"].update(uid=str(uuid.uuid4()), generation=1)
                return self._store(collection, obj, "ADDED")
            generation = current["metadata"]["generation"]
            if obj.get("spec") != current.get("spec"):
                generation += 1
            obj["metadata"].update(
                uid=current["metadata"]["uid"],
                generation=generation,
                resourceVersion=current["metadata"]["resourceVersion"],
            )
            if obj == current:
                return copy.deepcopy(current)
            return self._store(collection, obj, "MODIFIED")

    def _validate(self, obj: dict) -> None:
        errors = self.validator(obj) if self.validator else []
        if errors:
            raise ApiError(422, "Invalid", "; ".join(errors))

    def create(self, collection: str, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        name = obj.get("metadata", {}).get("name")
        with self._changed:
            if (collection, name) in self.objects:
                raise ApiError(409, "AlreadyExists", f"{name!r} already exists")
            meta = obj["metadata"]
            meta.update(uid=str(uuid.uuid4()), generation=1, namespace=collection.split("/")[5])
            meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self._validate(obj)
            return self._store(collection, obj, "ADDED")

    def patch(self, collection: str, name: str, content_type: str, body: object) -> dict:
        with self._changed:
            if (collection, name) not in self.objects:
                raise ApiError(404, "NotFound", f"{name!r} not found")
            self.patches.append((content_type, copy.deepcopy(body)))
            current = self.objects[(collection, name)]
            if content_type == MERGE_PATCH and isinstance(body, dict):
                wanted = body.get("metadata", {}).get("resourceVersion")
                if wanted is not None and wanted != current["metadata"]["resourceVersion"]:
                    raise ApiError(409, "Conflict", f"the object {name!r} has been modified")
                new = merge_patch(current, body)
            elif content_type == JSON_PATCH and isinstance(body, list):
                new = json_patch(current, body)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch: {content_type}")
            assert isinstance(new, dict)
            meta = new["metadata"]
            for key in ("name", "namespace", "uid", "creationTimestamp", "generation"):
                meta[key] = current["metadata"][key]
            new["status"] = copy.deepcopy(current.get("status"))  # status is a subresource
            if new.get("status") is None:
                new.pop("status")
            if new.get("spec") != current.get("spec"):
                meta["generation"] = current["metadata"]["generation"] + 1
            self._validate(new)
            return self._store(collection, new, "MODIFIED")

    def _after_write(self, collection: str, name: str) -> None:
        """Run the controllers before the write's reply, so that a client that got the reply
        finds them done (the real ones take a while; KServeSimulator(delay=...) does too)."""
        for hook in list(self.on_write):
            try:
                hook(collection, name)
            except Exception as err:  # a test asserts `errors` is empty
                self.errors.append(f"{type(err).__name__}: {err}")

    def update_status(self, collection: str, name: str, status: dict) -> dict:
        """What a controller's write to the status subresource does."""
        with self._changed:
            obj = copy.deepcopy(self.objects[(collection, name)])
            obj["status"] = status
            self._validate(obj)
            return self._store(collection, obj, "MODIFIED")

    # --- HTTP ----------------------------------------------------------------------------------

    def _watch(self, handler: BaseHTTPRequestHandler, collection: str, query: dict) -> None:
        name = _field_name(query)
        timeout = min(float(query.get("timeoutSeconds", ["30"])[0]), 300.0)
        deadline = time.monotonic() + timeout
        since = int(query.get("resourceVersion", ["0"])[0] or 0)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Transfer-Encoding", "chunked")  # each event reaches the client now
        handler.end_headers()
        handler.close_connection = True
        with self._changed:
            if since:
                pending = [(t, o) for rv, c, t, o in self.events if rv > since and c == collection]
            else:
                pending = [
                    ("ADDED", copy.deepcopy(o))
                    for (c, _), o in self.objects.items()
                    if c == collection
                ]
            seen = self._rv
        while True:
            for kind, obj in pending:
                if name is None or obj["metadata"]["name"] == name:
                    line = (json.dumps({"type": kind, "object": obj}) + "\n").encode()
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            handler.wfile.flush()
            with self._changed:
                self._changed.wait_for(
                    lambda seen=seen: self._rv > seen or self._stopping,
                    timeout=max(0.0, deadline - time.monotonic()),
                )
                pending = [(t, o) for rv, c, t, o in self.events if rv > seen and c == collection]
                seen = self._rv
                if self._stopping or (not pending and time.monotonic() >= deadline):
                    break
        handler.wfile.write(b"0\r\n\r\n")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _proxy(self, method: str, match: re.Match, data: bytes) -> None:
                """The API server's service proxy: authenticated, to a ready endpoint."""
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    raise ApiError(401, "Unauthorized", "Unauthorized")
                service = match["service"]
                backend = api.service_backend(match["namespace"], service, match["port"])
                if backend is None:
                    raise ApiError(
                        503, "ServiceUnavailable", f'no endpoints available for service "{service}"'
                    )
                path = match["path"] or "/"
                query = urlsplit(self.path).query
                api.proxied.append((service, path))
                answer = requests.request(
                    method,
                    backend + path + (f"?{query}" if query else ""),
                    data=data,
                    headers={"Content-Type": self.headers.get("Content-Type", "")},
                    timeout=30,
                )
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def _serve(self, method: str) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                match = PATH.match(url.path)
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else b""
                try:
                    proxy = SERVICE_PROXY.match(url.path)
                    if proxy:
                        return self._proxy(method, proxy, data)
                    if not match:
                        raise ApiError(404, "NotFound", f"no route for {url.path}")
                    collection = url.path[: match.start("plural")] + match["plural"]
                    name = match["name"]
                    try:
                        body = json.loads(data) if data else None
                    except ValueError as err:
                        raise ApiError(400, "BadRequest", f"invalid JSON: {err}") from err
                    watching = query.get("watch", [""])[0].lower() in ("true", "1")
                    if method == "GET" and name is None and watching:
                        return api._watch(self, collection, query)
                    if method == "GET" and name is None:
                        wanted = _field_name(query)
                        with api._changed:
                            items = [
                                copy.deepcopy(o)
                                for (c, n), o in api.objects.items()
                                if c == collection and wanted in (None, n)
                            ]
                            version = str(api._rv)
                        kind = "List"
                        return self._reply(
                            200,
                            {
                                "kind": kind,
                                "apiVersion": "v1",
                                "metadata": {"resourceVersion": version},
                                "items": items,
                            },
                        )
                    if method == "GET":
                        try:
                            return self._reply(200, api.get(collection, name))
                        except KeyError:
                            raise ApiError(
                                404,
                                "NotFound",
                                f"{match['plural']}.{match['group']} {name!r} not found",
                            ) from None
                    if method == "POST" and name is None:
                        reply = api.create(collection, body)
                        changed = (collection, reply["metadata"]["name"])
                    elif method == "PATCH" and name is not None:
                        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                        reply = api.patch(collection, name, kind, body)
                        changed = (collection, name)
                    else:
                        raise ApiError(405, "MethodNotAllowed", f"{method} {url.path}")
                    api._after_write(*changed)
                    self._reply(201 if method == "POST" else 200, reply)
                except ApiError as err:
                    return self._reply(err.code, err.body())
                except (BrokenPipeError, ConnectionResetError):
                    return
                except requests.RequestException as err:  # the proxied backend failed
                    return self._reply(503, ApiError(503, "ServiceUnavailable", str(err)).body())

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

        return Handler


def _field_name(query: dict) -> str | None:
    for selector in query.get("fieldSelector", []):
        for term in selector.split(","):
            if term.startswith("metadata.name="):
                return term.split("=", 1)[1]
    return None


# --- KServe, simulated -------------------------------------------------------------------------

ISVC_COLLECTION = "/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices"


def backend_of(template: dict, backends: dict[str, str]) -> str | None:
    """The real predictor that plays a predictor spec: `backends` by its model (storageUri,
    the STORAGE_URI of its first container, else its image); None when nothing plays it."""
    model = template.get("model") or {}
    containers = template.get("containers") or [{}]
    env = {e.get("name"): e.get("value") for e in containers[0].get("env") or []}
    key = model.get("storageUri") or env.get("STORAGE_URI") or model.get("image")
    return backends.get(key or containers[0].get("image") or "")


class KServeSimulator:
    """KServe + Knative for Serverless InferenceServices; see the module docstring."""

    def __init__(
        self,
        api: FakeKubeAPI,
        backends: dict[str, str],
        tag_hosts: bool = False,
        delay: float = 0.0,
    ):
        self.api = api
        self.delay = delay  # > 0: reconcile in a thread that long after the write
        self.backends = backends  # model (storageUri or image) -> base URL of a real predictor
        self.tag_hosts = tag_hosts
        self.revisions: dict[str, list[tuple[str, dict]]] = {}  # isvc -> [(revision, template)]
        self.rolled_out: dict[str, tuple[str | None, str | None]] = {}  # isvc -> (latest, prev)
        self.routes: dict[str, str] = {}  # tag host -> backend URL, for the ingress proxy
        self._lock = threading.Lock()
        self._ingress: ThreadingHTTPServer | None = None
        api.on_write.append(self._on_write)

    def _backend(self, template: dict) -> str | None:
        return backend_of(template, self.backends)

    def _on_write(self, collection: str, name: str) -> None:
        if self.delay <= 0:
            return self.reconcile(collection, name)

        def later() -> None:
            try:
                self.reconcile(collection, name)
            except Exception as err:
                self.api.errors.append(f"{type(err).__name__}: {err}")

        timer = threading.Timer(self.delay, later)
        timer.daemon = True
        timer.start()

    def reconcile(self, collection: str, name: str) -> None:
        if not collection.endswith("/inferenceservices"):
            return
        with self._lock:
            obj = self.api.get(collection, name)
            namespace = obj["metadata"]["namespace"]
            predictor = obj["spec"]["predictor"]
            template = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
            revisions = self.revisions.setdefault(name, [])
            if not revisions or revisions[-1][1] != template:  # 1. a new revision
                revisions.append((f"{name}-predictor-{len(revisions) + 1:05d}", template))
            ready = {rev for rev, tmpl in revisions if self._backend(tmpl)}  # 2.
            latest = revisions[-1][0]
            rolled, previous = self.rolled_out.get(name, (None, None))
            percent = predictor.get("canaryTrafficPercent")
            if latest in ready and (percent is None or rolled is None):  # 3.
                if rolled != latest:
                    rolled, previous = latest, rolled
                split = [(latest, 100, "latest", True)]
            elif latest in ready:
                split = [(latest, percent, "latest", True), (rolled, 100 - percent, "prev", False)]
            else:
                split = [(rolled, 100, "prev", False)] if rolled else []
            self.rolled_out[name] = (rolled, previous)
            tagged = (
                obj["metadata"].get("annotations", {}).get("serving.kserve.io/enable-tag-routing")
                == "true"
            )
            host = f"{name}-predictor.{namespace}.example.com"
            traffic = []
            for revision, share, tag, is_latest in split:  # 4.
                entry = {"revisionName": revision, "percent": share, "latestRevision": is_latest}
                if tagged:
                    backend = self._backend(dict(revisions)[revision]) or ""
                    entry["tag"] = tag
                    entry["url"] = f"http://{tag}-{host}" if self.tag_hosts else backend
                    self.routes[f"{tag}-{host}"] = backend
                traffic.append(entry)
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            ok = latest in ready
            conditions = [
                {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": now}
                | (
                    {}
                    if ok
                    else {
                        "reason": "RevisionMissing",
                        "message": f"Revision {latest!r} is not ready",
                    }
                )
                for kind in ("PredictorReady", "Ready")
            ]
            status = {  # 5.
                "observedGeneration": obj["metadata"]["generation"],
                "deploymentMode": "Knative",
                "url": f"http://{name}.{namespace}.example.com",
                "conditions": conditions,
                "components": {
                    "predictor": {
                        "latestCreatedRevision": latest,
                        "latestReadyRevision": max(ready, default=None),
                        "latestRolledoutRevision": rolled,
                        "previousRolledoutRevision": previous,
                        "traffic": traffic,
                        "url": f"http://{host}",
                    }
                },
            }
            status["components"]["predictor"] = {
                k: v for k, v in status["components"]["predictor"].items() if v is not None
            }
            self.api.update_status(collection, name, status)

    # --- an ingress gateway: routes by Host header, like Knative's behind istio/kourier --------

    @property
    def ingress_url(self) -> str:
        if self._ingress is None:
            self._ingress = ThreadingHTTPServer(("127.0.0.1", 0), self._proxy())
            self._ingress.daemon_threads = True
            threading.Thread(target=self._ingress.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._ingress.server_address[1]}"

    def close(self) -> None:
        if self._ingress is not None:
            self._ingress.shutdown()
            self._ingress.server_close()

    def _proxy(self) -> type[BaseHTTPRequestHandler]:
        routes = self.routes

        class Proxy(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                backend = routes.get((self.headers.get("Host") or "").split(":")[0])
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not backend:
                    status, data, kind = 404, b"no route for this host", "text/plain"
                else:
                    answer = requests.request(
                        self.command,
                        backend + self.path,
                        data=body,
                        timeout=30,
                        headers={"Content-Type": self.headers.get("Content-Type", "")},
                    )
                    status, data = answer.status_code, answer.content
                    kind = answer.headers.get("Content-Type", "")
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        return Proxy


# --- KServe in Standard (RawDeployment) mode, simulated ---------------------------------------

DEPLOYMENTS = "/apis/apps/v1/namespaces/{namespace}/deployments"
SERVICES = "/api/v1/namespaces/{namespace}/services"
HTTPROUTES = "/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes"
STANDARD_MODES = ("Standard", "RawDeployment")
# Predictor fields that shape replicas and autoscaling, not the pods.
SCALING_FIELDS = ("minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "autoScaling")
CANARY_AUTOSCALING_FIELDS = ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling")


def _mode(obj: dict) -> str:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    return annotations.get("serving.kserve.io/deploymentMode") or "Standard"


def kserve_webhook(obj: dict) -> list[str]:
    """KServe 0.21's validating webhook for `spec.canary` (inference_service_validation.go),
    with its messages."""
    canaries = (obj.get("spec") or {}).get("canary") or []
    if not canaries:
        return []
    if _mode(obj) not in STANDARD_MODES:
        return ["canary is only supported in Standard deployment mode"]
    stable = obj["spec"].get("predictor") or {}
    errors, seen = [], set()
    for index, canary in enumerate(canaries):
        predictor = canary.get("predictor") or {}
        name = predictor.get("name")
        if not name:
            errors.append(f"canary[{index}] predictor.name is required")
            continue
        if name in seen:
            errors.append(f"canary predictor.name {name!r} is duplicated")
        seen.add(name)
        if name == stable.get("name"):
            errors.append(f"canary predictor.name {name!r} conflicts with stable predictor name")
        if not 0 <= int(canary.get("trafficPercent", -1)) <= 100:
            errors.append("trafficPercent must be between 0 and 100")
        if predictor.get("workerSpec"):
            errors.append("must not set workerSpec (multi-node is not yet supported for canary)")
        for field_name in CANARY_AUTOSCALING_FIELDS:
            value = predictor.get(field_name)
            refused = (value or 0) > 0 if field_name == "maxReplicas" else bool(value)
            if refused:
                errors.append(
                    f"canary {name!r} must not set {field_name} (canary uses fixed replicas)"
                )
        stable_min = stable.get("minReplicas", 1)
        if predictor.get("minReplicas", 0) > stable_min:
            errors.append(
                f"canary {name!r} minReplicas ({predictor['minReplicas']}) must not exceed stable "
                f"predictor minReplicas ({stable_min})"
            )
    total = sum(int(c.get("trafficPercent") or 0) for c in canaries)
    if total > 100:
        errors.append(f"sum of canary trafficPercent values ({total}) must be <= 100")
    return errors


def _overlaid(stable: dict, canary: dict) -> dict:
    """mergo.Merge(stable, canary, WithOverride): objects merge, anything else is replaced."""
    result = copy.deepcopy(stable)
    for key, value in canary.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _overlaid(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


class KServeStandardSimulator:
    """KServe's controller for Standard-mode InferenceServices with `spec.canary`, reduced to
    what a rollout sees. After each write it reconciles, as the real one does:
    1. A Deployment and a Service per predictor: `{isvc}-predictor` (or `{isvc}-{name}-predictor`
       when `spec.predictor.name` is set) for the stable one, `{isvc}-{name}-predictor` for each
       canary, whose spec is the stable's with the canary's fields laid over it. The pod template
       is that spec less its name and scaling fields; a Deployment whose template is unchanged
       is left alone (no rollout, no restart), and Deployments and Services of the isvc that no
       predictor names any more are deleted.
    2. A Deployment is available when `backends` maps its model (`storageUri`, else the image)
       to the URL of a real predictor process and it has replicas: a canary's are its
       `minReplicas`, else ceil(stable minReplicas x percent / 100) (at least 1 unless the
       autoscaler class is `none`); the stable's minReplicas less the ready canaries', at least 1.
    3. The HTTPRoute `{isvc}-predictor`: the stable Service weighted 100 less the ready canaries'
       percents, each ready canary its percent.
    4. Status: observedGeneration, deploymentMode Standard, url, conditions (PredictorReady,
       IngressReady, Ready, and CanaryPredictorReady while there are canaries), canaryStatuses
       and components.predictor.url.
    The API server's service proxy reaches a Service's backend while its Deployment is available.
    """

    def __init__(self, api: FakeKubeAPI, backends: dict[str, str]):
        self.api = api
        self.backends = backends
        self.available: dict[tuple[str, str], str] = {}  # (namespace, service) -> backend URL
        self._lock = threading.Lock()
        api.on_write.append(self.reconcile)
        api.service_backend = lambda namespace, service, port: self.available.get(
            (namespace, service)
        )

    def _backend(self, template: dict) -> str | None:
        return backend_of(template, self.backends)

    def reconcile(self, collection: str, name: str) -> None:
        if not collection.endswith("/inferenceservices"):
            return
        with self._lock:
            obj = self.api.get(collection, name)
            if _mode(obj) not in STANDARD_MODES:
                return
            namespace = obj["metadata"]["namespace"]
            annotations = obj["metadata"].get("annotations") or {}
            fixed = annotations.get("serving.kserve.io/autoscalerClass") == "none"
            stable = obj["spec"]["predictor"]
            stable_min = stable.get("minReplicas")
            predictors = []  # (service name, role, spec, replicas, canary entry)
            for entry in obj["spec"].get("canary") or []:
                canary = entry["predictor"]
                replicas = canary.get("minReplicas")
                if replicas is None:
                    replicas = math.ceil((stable_min or 1) * int(entry["trafficPercent"]) / 100)
                if not fixed:
                    replicas = max(replicas, 1)  # an HPA's minimum
                service = f"{name}-{canary['name']}-predictor"
                predictors.append((service, "canary", _overlaid(stable, canary), replicas, entry))
            ready_canaries = [p for p in predictors if p[3] > 0 and self._backend(p[2]) is not None]
            stable_replicas = stable_min or 1
            if stable_min is not None:
                stable_replicas = max(1, stable_min - sum(p[3] for p in ready_canaries))
            stable_service = (
                f"{name}-{stable['name']}-predictor" if stable.get("name") else f"{name}-predictor"
            )
            predictors.insert(0, (stable_service, "stable", stable, stable_replicas, None))

            ready: dict[str, bool] = {}
            for service, _, predictor_spec, replicas, _ in predictors:  # 1. and 2.
                backend = self._backend(predictor_spec)
                ready[service] = backend is not None and replicas > 0
                self._apply(namespace, name, service, predictor_spec, replicas, ready[service])
                if ready[service]:
                    self.available[(namespace, service)] = backend
                else:
                    self.available.pop((namespace, service), None)
            self._delete_orphans(namespace, name, {p[0] for p in predictors})

            weights = [(stable_service, 0)]  # 3.
            for service, _, _, _, entry in predictors[1:]:
                if ready[service]:
                    weights.append((service, int(entry["trafficPercent"])))
            weights[0] = (stable_service, 100 - sum(w for _, w in weights[1:]))
            self.api.put(
                HTTPROUTES.format(namespace=namespace),
                {
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "HTTPRoute",
                    "metadata": {"name": f"{name}-predictor", "namespace": namespace},
                    "spec": {
                        "hostnames": [f"{name}-predictor-{namespace}.example.com"],
                        "rules": [
                            {
                                "backendRefs": [
                                    {"name": service, "port": 80, "weight": weight}
                                    for service, weight in weights
                                ]
                            }
                        ],
                    },
                },
            )
            self.api.update_status(collection, name, self._status(obj, predictors, ready))

    def _apply(
        self, namespace: str, isvc: str, service: str, spec: dict, replicas: int, ready: bool
    ) -> None:
        labels = {
            "serving.kserve.io/inferenceservice": isvc,
            "component": "predictor",
            "app": f"isvc.{service}",
        }
        pod_spec = {k: v for k, v in spec.items() if k not in (*SCALING_FIELDS, "name")}
        pod_spec.pop("canaryTrafficPercent", None)
        self.api.put(
            DEPLOYMENTS.format(namespace=namespace),
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": service, "namespace": namespace, "labels": labels},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": f"isvc.{service}"}},
                    "template": {"metadata": {"labels": labels}, "spec": pod_spec},
                },
                "status": {"availableReplicas": replicas if ready else 0},
            },
        )
        self.api.put(
            SERVICES.format(namespace=namespace),
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": service, "namespace": namespace, "labels": labels},
                "spec": {
                    "selector": {"app": f"isvc.{service}"},
                    "ports": [{"name": "http1", "port": 80, "targetPort": 8080}],
                },
            },
        )

    def _delete_orphans(self, namespace: str, isvc: str, wanted: set[str]) -> None:
        for template in (DEPLOYMENTS, SERVICES):
            collection = template.format(namespace=namespace)
            for owned in self.api.list(collection):
                labels = owned["metadata"].get("labels") or {}
                mine = labels.get("serving.kserve.io/inferenceservice") == isvc
                if mine and owned["metadata"]["name"] not in wanted:
                    self.api.delete(collection, owned["metadata"]["name"])
                    self.available.pop((namespace, owned["metadata"]["name"]), None)

    def _status(self, obj: dict, predictors: list, ready: dict[str, bool]) -> dict:
        name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        stable_service = predictors[0][0]

        def condition(kind: str, ok: bool, reason: str = "", message: str = "") -> dict:
            entry = {"type": kind, "status": "True" if ok else "False", "lastTransitionTime": now}
            if reason:
                entry["reason"] = reason
            if message:
                entry["message"] = message
            return entry

        stable_ok = ready[stable_service]
        conditions = [
            condition("IngressReady", True),
            condition(
                "PredictorReady",
                stable_ok,
                *(() if stable_ok else ("MinimumReplicasUnavailable", "no available replicas")),
            ),
            condition("Ready", stable_ok),
        ]
        canary_statuses = [
            {
                "name": entry["predictor"]["name"],
                "ready": ready[service],
                "trafficPercent": int(entry["trafficPercent"]),
            }
            for service, _, _, _, entry in predictors[1:]
        ]
        if canary_statuses:
            all_ready = all(c["ready"] for c in canary_statuses)
            conditions.append(
                condition(
                    "CanaryPredictorReady",
                    all_ready,
                    "AllCanariesReady" if all_ready else "CanariesNotReady",
                )
            )
        status: dict = {
            "observedGeneration": obj["metadata"]["generation"],
            "deploymentMode": "Standard",
            "url": f"http://{name}-{namespace}.example.com",
            "conditions": conditions,
            "components": {"predictor": {}},
        }
        if stable_ok:
            status["components"]["predictor"]["url"] = (
                f"http://{stable_service}-{namespace}.example.com"
            )
        if canary_statuses:
            status["canaryStatuses"] = canary_statuses
        return status


# --- running the CLI as the delivery workflow does ---------------------------------------------


def rollout_cli(kubeconfig: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m predictor.rollout ARGS` in a child process, against the fake API server."""
    return subprocess.run(
        [sys.executable, "-m", "predictor.rollout", *args],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
