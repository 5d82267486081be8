"""The API server: aiohttp over HTTPS, Kubernetes REST conventions on top of the registry.

One catch-all route parses the URL the way the real server does
(`/api/v1/namespaces/<ns>/<resource>/<name>/<subresource>`, `/apis/<group>/<version>/...`,
the legacy `/watch/` prefix), authenticates the bearer token, authorizes, and hands the
verb to the registry. Errors of every layer come back as `Status` objects.

What kubectl needs from each endpoint, and why the odd details (Table rendering with the
age computed here, aggregated discovery only with its own Content-Type, the OpenAPI v3
PATCH entries that switch on server-side field validation) are as they are, is written
down in specs/kubectl.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import auth, kinds, protobuf
from . import validation as v
from .auth import TokenStore, User
from .errors import (
    APIError,
    bad_request,
    internal,
    invalid_object,
    method_not_allowed,
    not_found_path,
    unauthorized,
)
from .nodeproxy import NodeProxy
from .registry import PATCH_APPLY, PATCH_TYPES, Context, Registry
from .selectors import parse_field_selector, parse_label_selector
from .strategy import Strategy

log = logging.getLogger("kubeletpy.controlplane.server")

MAX_BODY = 3 * 1024 * 1024
KUBE_MINOR = "32"
VERSION = {"major": "1", "minor": KUBE_MINOR, "gitVersion": f"v1.{KUBE_MINOR}.0",
           "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "python3", "compiler": "cpython",
           "platform": "linux/amd64"}
JSON = "application/json"
PROTOBUF = "application/vnd.kubernetes.protobuf"
AGG_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGG_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
NOT_FOUND_MSG = "the server could not find the requested resource"
HEALTH = ("/healthz", "/livez", "/readyz")
OPENAPI_V2_MSG = ("this server publishes OpenAPI v3 only (kubectl 1.29+ validates with it); with kubectl 1.27/1.28 "
                  "use --validate=false")
BOOKMARK_INTERVAL = 60.0
POD_PROXY_SUBRESOURCES = {"log": ("Pod", ["get"]), "exec": ("PodExecOptions", ["create", "get"]),
                          "attach": ("PodAttachOptions", ["create", "get"]),
                          "portforward": ("PodPortForwardOptions", ["create", "get"])}

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(obj: Any) -> bytes:
    return _dumps(obj).encode()


def _accept(request: web.Request) -> str:
    """What representation the client asked for first: table | meta | agg-v2 | agg-v2beta1 | json."""
    header = request.headers.get("Accept", "")
    if not header:
        return "json"
    for entry in header.split(","):
        params = {p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip()
                  for p in entry.split(";")[1:] if "=" in p}
        media = entry.split(";", 1)[0].strip()
        as_ = params.get("as", "")
        if as_ == "Table" and media == JSON:
            return "table"
        if as_ in ("PartialObjectMetadata", "PartialObjectMetadataList") and media == JSON:
            return "meta"
        if as_ == "APIGroupDiscoveryList" and media == JSON:
            if params.get("v") == "v2":
                return "agg-v2"
            if params.get("v") == "v2beta1":
                return "agg-v2beta1"
            continue
        if as_:
            continue
        if media in (JSON, "*/*", "application/*", "application/yaml", "application/json-patch+json"):
            return "json"
    if "protobuf" in header and "json" not in header and "*/*" not in header:
        raise APIError(406, "NotAcceptable", "only the following media types are accepted: application/json")
    return "json"


def _decode_protobuf(raw: bytes) -> dict[str, Any]:
    """kubectl 1.32+ typed clients send protobuf bodies: `create namespace|configmap|secret`,
    `debug --copy-to`/`debug node/` (a Pod), `certificate approve|deny` (a CSR)."""
    try:
        return protobuf.decode_object(raw)
    except protobuf.UnsupportedKind as e:
        kinds_ = ", ".join(k for _, k in sorted(protobuf.KINDS))
        raise APIError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                    f"{PROTOBUF} bodies are accepted for {kinds_} only, not "
                                                    f"{e.api_version}/{e.kind}; send application/json") from None
    except protobuf.NotEnvelope as e:
        raise APIError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - {e}") from None
    except protobuf.DecodeError as e:
        raise bad_request(f"couldn't decode the protobuf request body: {e}") from None


class _DuplicateField(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook for fieldValidation=Strict: a repeated key is an error, not last-wins."""
    out: dict[str, Any] = {}
    for k, val in pairs:
        if k in out:
            raise _DuplicateField(k)
        out[k] = val
    return out


def _bool(q: Any, name: str) -> bool:
    return str(q.get(name, "")).lower() in ("true", "1")


def _partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


class APIServer:
    def __init__(self, registry: Registry, tokens: TokenStore, ca_pem: bytes,
                 agent_client: tuple[Path, Path] | None = None, agent_ca_pem: bytes = b"") -> None:
        self.registry = registry
        self.tokens = tokens
        self.ca_pem = ca_pem
        self.node_proxy = NodeProxy(registry, agent_client, agent_ca_pem or ca_pem)
        self._build_discovery()
        self._build_openapi()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    # ------------------------------------------------------------------ plumbing

    def _response(self, obj: Any, status: int = 200, ctx: Context | None = None,
                  content_type: str = JSON) -> web.Response:
        resp = web.Response(body=dumps(obj), status=status)
        resp.headers["Content-Type"] = content_type
        if ctx is not None:
            for w in ctx.warnings:
                resp.headers.add("Warning", f'299 - "{w.replace(chr(34), chr(92) + chr(34))}"')
        return resp

    def _error(self, e: APIError) -> web.Response:
        resp = self._response(e.status(), e.code)
        for k, val in e.headers.items():
            resp.headers[k] = val
        return resp

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._handle(request)
        except APIError as e:
            return self._error(e)
        except web.HTTPRequestEntityTooLarge:
            return self._error(APIError(413, "RequestEntityTooLarge",
                                        f"Request entity too large: limit is {MAX_BODY}"))
        except RecursionError:
            return self._error(bad_request("the request body is nested too deeply"))
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as e:  # a bug: answer 500 as a Status, keep serving
            log.exception("internal error on %s %s", request.method, request.path_qs)
            return self._error(internal(f"{type(e).__name__}: {e}"))

    def _authenticate(self, request: web.Request) -> User | None:
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized()
        user = self.tokens.authenticate(token)
        if user is None:
            raise unauthorized()
        if request.headers.get("Impersonate-User"):
            if not user.is_admin:
                raise APIError(403, "Forbidden", f'users "{request.headers["Impersonate-User"]}" is forbidden: '
                                                 f'User "{user.name}" cannot impersonate resource "users" in API '
                                                 f'group "" at the cluster scope')
            name = request.headers["Impersonate-User"]
            groups = tuple(request.headers.getall("Impersonate-Group", ()))
            if name.startswith(auth.NODE_PREFIX) and not groups:
                groups = ("system:nodes",)
            user = User(name, groups + ("system:authenticated",))
        return user

    async def _read_body(self, request: web.Request, patch: bool = False) -> tuple[Any, str]:
        strict = request.query.get("fieldValidation") == "Strict"
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise APIError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY}")
        ctype = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        raw = await request.read()
        if "protobuf" in ctype:
            if patch or ctype != PROTOBUF:
                raise APIError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                            f"accepted media types include: application/json, "
                                                            f"application/yaml ({ctype} is not supported)")
            return _decode_protobuf(raw), ctype
        if patch and ctype not in PATCH_TYPES:
            raise APIError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                        f"accepted media types include: {', '.join(PATCH_TYPES)}")
        if not patch and ctype not in ("", JSON, "application/yaml", "text/yaml", "application/x-yaml"):
            raise APIError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                                        "accepted media types include: application/json, "
                                                        "application/yaml")
        if not raw.strip():
            raise bad_request("the request body is empty")
        if ctype in (PATCH_APPLY, "application/yaml", "text/yaml", "application/x-yaml"):
            try:
                return json.loads(raw), ctype
            except ValueError:
                pass
            try:
                return yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)), ctype
            except yaml.YAMLError as e:
                raise bad_request(f"error converting YAML to JSON: {e}") from None
        try:
            if strict:
                return json.loads(raw, object_pairs_hook=_no_duplicates), ctype
            return json.loads(raw), ctype
        except _DuplicateField as e:
            raise bad_request(f'strict decoding error: json: duplicate field "{e}"') from None
        except ValueError as e:
            raise bad_request(f"couldn't decode the request body as JSON: {e}") from None

    # ------------------------------------------------------------------ routing

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.rstrip("/") in HEALTH or any(path.startswith(h + "/") for h in HEALTH):
            return web.Response(text="ok", content_type="text/plain")
        user = self._authenticate(request)
        if path.rstrip("/") == "/version":
            return self._response(VERSION)
        if user is None:
            raise unauthorized()
        if path.rstrip("/") == "/kubeletpy/join":
            return await self._join(request, user)
        if user.name == auth.JOIN_USER:
            raise APIError(403, "Forbidden", f'User "{user.name}" may only call /kubeletpy/join')
        parts = [p for p in path.split("/") if p]
        if not parts:
            return self._response({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v3",
                                             "/readyz", "/version"] + sorted(f"/apis/{g}" for g in self._groups)})
        if parts[0] == "openapi":
            return self._openapi(request, parts)
        if parts[0] == "swagger-2.0.0.pb-v1":
            return web.Response(status=404, text=OPENAPI_V2_MSG, content_type="text/plain")
        if parts[0] == "api":
            group, rest = "", parts[1:]
        elif parts[0] == "apis":
            if len(parts) == 1:
                return self._discovery_root(request, core=False)
            group, rest = parts[1], parts[2:]
            if not rest:
                if group not in self._groups:
                    raise not_found_path(NOT_FOUND_MSG)
                return self._response(self._groups[group])
        else:
            raise not_found_path(NOT_FOUND_MSG)
        if not rest:
            return self._discovery_root(request, core=True)
        version, rest = rest[0], rest[1:]
        if not rest:
            doc = self._resource_lists.get((group, version))
            if doc is None:
                raise not_found_path(NOT_FOUND_MSG)
            return self._response(doc)
        watch_prefix = rest[0] == "watch"
        if watch_prefix:
            rest = rest[1:]
        if len(rest) >= 3 and rest[0] == "namespaces" and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            ns, resource, tail = rest[1], rest[2], rest[3:]
        elif rest:
            ns, resource, tail = "", rest[0], rest[1:]
        else:
            raise not_found_path(NOT_FOUND_MSG)
        if len(tail) > 2:
            raise not_found_path(NOT_FOUND_MSG)
        name = tail[0] if tail else ""
        sub = tail[1] if len(tail) > 1 else ""
        s = self.registry.lookup(group, version, resource)
        if s is None or (ns and not s.namespaced):
            raise not_found_path(NOT_FOUND_MSG)
        if s is kinds.POD and ns and name and sub in POD_PROXY_SUBRESOURCES and not watch_prefix:
            return await self._pod_proxy(request, user, ns, name, sub)
        if sub and sub not in s.subresources:
            if s is kinds.POD and sub == "proxy":
                raise not_found_path("pods/proxy is not served by this API server")
            raise not_found_path(NOT_FOUND_MSG)
        return await self._resource(request, user, s, ns, name, sub, watch_prefix)

    async def _pod_proxy(self, request: web.Request, user: User, ns: str, name: str,
                         sub: str) -> web.StreamResponse:
        """pods/log, exec, attach, portforward: authorized here, served by the pod's node agent."""
        if sub == "log":
            if request.method != "GET":
                raise method_not_allowed(f"method {request.method} is not supported on pods/log")
            verb = "get"
        else:
            if request.method not in ("GET", "POST"):
                raise method_not_allowed(f"method {request.method} is not supported on pods/{sub}")
            verb = "create"
        await auth.authorize(user, auth.Attributes(verb, "", "pods", sub, ns, name), self.registry)
        if sub == "log":
            return await self.node_proxy.logs(request, ns, name)
        return await self.node_proxy.stream(request, ns, name, sub)

    async def _resource(self, request: web.Request, user: User, s: Strategy, ns: str, name: str, sub: str,
                        watch_prefix: bool) -> web.StreamResponse:
        q = request.query
        method = request.method
        ctx = Context(user=user.name, groups=user.groups)
        dry = q.getall("dryRun", [])
        if any(d != "All" for d in dry):
            raise bad_request(f"invalid dry run option {dry!r}: only All is supported")
        ctx.dry_run = bool(dry)
        fv = q.get("fieldValidation", "Warn") or "Warn"
        if fv not in ("Strict", "Warn", "Ignore"):
            raise bad_request(f"fieldValidation must be one of Strict, Warn, Ignore; got {fv!r}")
        ctx.field_validation = fv
        ctx.field_manager = q.get("fieldManager", "")
        if len(ctx.field_manager) > 128:
            raise bad_request("fieldManager: Too long: must have at most 128 bytes")
        if not ctx.field_manager:
            ua = request.headers.get("User-Agent", "")
            ctx.field_manager = ua.split("/", 1)[0] if ua else "unknown"
        rt = self.registry

        if method == "GET":
            watching = watch_prefix or _bool(q, "watch")
            if name and not sub:
                verb = "watch" if watching else "get"  # a watch on one object is a watch with metadata.name=
            elif name:
                verb = "get"
            else:
                verb = "watch" if watching else "list"
            await auth.authorize(user, auth.Attributes(verb, s.group, s.resource, sub, ns, name), rt)
            if verb == "get":
                if sub == "binding":
                    raise method_not_allowed("the binding subresource only supports POST")
                obj = await rt.get(s, ns, name)
                return self._render_one(request, s, obj)
            label = parse_label_selector(q.get("labelSelector"))
            fields = parse_field_selector(q.get("fieldSelector"), s.field_selectors, s.resource)
            if name and verb == "watch":
                fields = [*fields, ("metadata.name", True, name)]
            if verb == "watch":
                return await self._watch(request, s, ns, label, fields)
            try:
                limit = int(q.get("limit") or 0)
            except ValueError:
                raise bad_request("limit must be an integer") from None
            items, rev, cont = await rt.list(s, ns, label=label, fields=fields, limit=max(limit, 0),
                                             continue_token=q.get("continue", ""))
            return self._render_list(request, s, items, rev, cont)

        if method == "POST":
            if name and sub == "binding":
                body, _ = await self._read_body(request)
                await auth.authorize(user, auth.Attributes("create", s.group, s.resource, sub, ns, name), rt)
                await rt.bind(ns, name, body, ctx)
                return self._response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                       "code": 201}, 201)
            if name:
                raise method_not_allowed(f"POST is not supported on a single {s.kind}; use PUT or PATCH")
            if s.namespaced and not ns:
                raise not_found_path(NOT_FOUND_MSG)
            body, _ = await self._read_body(request)
            body_name = ((body.get("metadata") or {}).get("name") or "") if isinstance(body, dict) else ""
            await auth.authorize(user, auth.Attributes("create", s.group, s.resource, "", ns, str(body_name), body), rt)
            obj = await rt.create(s, ns, body, ctx)
            return self._response(obj, 201, ctx)

        if method == "PUT":
            if not name:
                raise method_not_allowed(f"PUT needs the name of the {s.kind}")
            body, _ = await self._read_body(request)
            await auth.authorize(user, auth.Attributes("update", s.group, s.resource, sub, ns, name), rt)
            obj = await rt.update(s, ns, name, body, ctx, sub)
            return self._response(obj, 200, ctx)

        if method == "PATCH":
            if not name:
                raise method_not_allowed(f"PATCH needs the name of the {s.kind}")
            body, ctype = await self._read_body(request, patch=True)
            await auth.authorize(user, auth.Attributes("patch", s.group, s.resource, sub, ns, name), rt)
            if ctype == PATCH_APPLY and not q.get("fieldManager"):
                raise bad_request("PATCH, with apply, requires fieldManager to be set")
            obj, created = await rt.patch(s, ns, name, ctype, body, ctx, sub, force=_bool(q, "force"))
            return self._response(obj, 201 if created else 200, ctx)

        if method == "DELETE":
            opts: dict[str, Any] = {}
            if request.can_read_body:
                raw = await request.read()
                if raw.strip():
                    try:
                        opts = json.loads(raw)
                    except ValueError as e:
                        raise bad_request(f"couldn't decode DeleteOptions: {e}") from None
                    if not isinstance(opts, dict):
                        raise bad_request("DeleteOptions must be an object")
            for k in ("gracePeriodSeconds", "propagationPolicy"):
                if k in q:
                    opts[k] = q[k]
            if "gracePeriodSeconds" in opts and opts["gracePeriodSeconds"] is not None:
                try:
                    opts["gracePeriodSeconds"] = max(int(opts["gracePeriodSeconds"]), 0)
                except (TypeError, ValueError):
                    raise bad_request("gracePeriodSeconds must be an integer") from None
            pp = opts.get("propagationPolicy")
            if pp not in (None, "Orphan", "Background", "Foreground"):
                raise invalid_object("DeleteOptions", "", [v.invalid_cause("propagationPolicy", pp)])
            body_dry = opts.get("dryRun") or []
            if any(d != "All" for d in body_dry):
                raise bad_request(f"invalid dry run option {body_dry!r}: only All is supported")
            ctx.dry_run = ctx.dry_run or bool(body_dry)
            if sub:
                raise method_not_allowed(f"DELETE is not supported on {s.resource}/{sub}")
            if not name:
                await auth.authorize(user, auth.Attributes("deletecollection", s.group, s.resource, "", ns, ""), rt)
                label = parse_label_selector(q.get("labelSelector"))
                fields = parse_field_selector(q.get("fieldSelector"), s.field_selectors, s.resource)
                items = await rt.delete_collection(s, ns, opts, ctx, label=label, fields=fields)
                return self._response({"kind": s.list_kind, "apiVersion": s.api_version,
                                       "metadata": {"resourceVersion": str(rt.storage.revision)}, "items": items})
            await auth.authorize(user, auth.Attributes("delete", s.group, s.resource, "", ns, name), rt)
            obj, _gone = await rt.delete(s, ns, name, opts, ctx)
            return self._response(obj, 200, ctx)
        raise method_not_allowed(f"method {method} is not supported")

    # ------------------------------------------------------------------ rendering

    def _table(self, s: Strategy, objs: list[dict[str, Any]], rv: str, include: str, columns: bool = True,
               cont: str = "") -> dict[str, Any]:
        now = time.time()
        rows = []
        for o in objs:
            row: dict[str, Any] = {"cells": s.row(o, now)}
            if include == "Object":
                row["object"] = o
            elif include != "None":
                row["object"] = _partial(o)
            rows.append(row)
        meta: dict[str, Any] = {"resourceVersion": rv}
        if cont:
            meta["continue"] = cont
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
                "columnDefinitions": s.columns() if columns else None, "rows": rows}

    def _render_one(self, request: web.Request, s: Strategy, obj: dict[str, Any]) -> web.Response:
        fmt = _accept(request)
        if fmt == "table":
            return self._response(self._table(s, [obj], obj["metadata"].get("resourceVersion", ""),
                                              request.query.get("includeObject", "Metadata")))
        if fmt == "meta":
            return self._response(_partial(obj))
        return self._response(obj)

    def _render_list(self, request: web.Request, s: Strategy, items: list[dict[str, Any]], rev: int,
                     cont: str) -> web.Response:
        fmt = _accept(request)
        if fmt == "table":
            return self._response(self._table(s, items, str(rev), request.query.get("includeObject", "Metadata"),
                                              cont=cont))
        meta: dict[str, Any] = {"resourceVersion": str(rev)}
        if cont:
            meta["continue"] = cont
        if fmt == "meta":
            return self._response({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                   "metadata": meta, "items": [_partial(o) for o in items]})
        return self._response({"kind": s.list_kind, "apiVersion": s.api_version, "metadata": meta, "items": items})

    async def _watch(self, request: web.Request, s: Strategy, ns: str, label: Any,
                     fields: list[tuple[str, bool, str]]) -> web.StreamResponse:
        q = request.query
        rv = q.get("resourceVersion", "")
        if rv and not rv.isdigit():
            raise bad_request(f"invalid resource version: {rv!r}")
        try:
            timeout = float(q.get("timeoutSeconds") or 0) or random.uniform(1800, 3600)
        except ValueError:
            raise bad_request("timeoutSeconds must be a number") from None
        allow_bm = _bool(q, "allowWatchBookmarks")
        si = q.get("sendInitialEvents")
        send_initial = None if si is None else si.lower() == "true"
        fmt = _accept(request)
        include = q.get("includeObject", "Metadata")
        resp = web.StreamResponse(status=200)
        resp.headers["Content-Type"] = JSON
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        state: dict[str, Any] = {"rv": rv or str(self.registry.storage.revision), "first": True}
        lock = asyncio.Lock()

        def encode(typ: str, obj: dict[str, Any], ev: Any) -> bytes:
            if typ in ("ERROR", "BOOKMARK"):
                return b'{"type":"' + typ.encode() + b'","object":' + dumps(obj) + b"}\n"
            if fmt == "table":
                t = self._table(s, [obj], obj["metadata"].get("resourceVersion", ""), include,
                                columns=state["first"])
                state["first"] = False
                return b'{"type":"' + typ.encode() + b'","object":' + dumps(t) + b"}\n"
            if fmt == "meta":
                return b'{"type":"' + typ.encode() + b'","object":' + dumps(_partial(obj)) + b"}\n"
            if ev is not None:
                key = ("line", id(s), typ)
                line = ev.cache.get(key)
                if line is None:
                    line = ev.cache[key] = b'{"type":"' + typ.encode() + b'","object":' + dumps(obj) + b"}\n"
                return line
            return b'{"type":"' + typ.encode() + b'","object":' + dumps(obj) + b"}\n"

        async def bookmarks() -> None:
            while True:
                await asyncio.sleep(BOOKMARK_INTERVAL)
                line = encode("BOOKMARK", {"kind": s.kind, "apiVersion": s.api_version,
                                           "metadata": {"resourceVersion": state["rv"]}}, None)
                async with lock:
                    await resp.write(line)

        bm_task = asyncio.create_task(bookmarks()) if allow_bm else None
        gen = self.registry.watch(s, ns, rv, label=label, fields=fields, send_initial=send_initial,
                                  allow_bookmarks=allow_bm)
        try:
            async with asyncio.timeout(timeout), contextlib.aclosing(gen):
                async for typ, obj, ev in gen:
                    line = encode(typ, obj, ev)
                    async with lock:
                        await resp.write(line)
                    if typ == "ERROR":
                        break
                    state["rv"] = obj.get("metadata", {}).get("resourceVersion", state["rv"])
        except TimeoutError:
            pass
        except APIError as e:
            with contextlib.suppress(ConnectionError):
                await resp.write(encode("ERROR", e.status(), None))
        except ConnectionError:
            return resp
        finally:
            if bm_task is not None:
                bm_task.cancel()
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    # ------------------------------------------------------------------ discovery

    def _build_discovery(self) -> None:
        by_gv: dict[tuple[str, str], list[Strategy]] = {}
        for s in self.registry.strategies:
            by_gv.setdefault((s.group, s.version), []).append(s)
        self._resource_lists: dict[tuple[str, str], dict[str, Any]] = {}
        self._groups: dict[str, dict[str, Any]] = {}
        agg: dict[str, list[dict[str, Any]]] = {}
        for (group, version), strategies in sorted(by_gv.items()):
            gv = f"{group}/{version}" if group else version
            resources: list[dict[str, Any]] = []
            agg_resources = []
            for s in sorted(strategies, key=lambda x: x.resource):
                r: dict[str, Any] = {"name": s.resource, "singularName": s.singular, "namespaced": s.namespaced,
                                     "kind": s.kind, "verbs": list(s.verbs)}
                if s.short_names:
                    r["shortNames"] = list(s.short_names)
                if s.categories:
                    r["categories"] = list(s.categories)
                resources.append(r)
                a: dict[str, Any] = {"resource": s.resource,
                                     "responseKind": {"group": group, "version": version, "kind": s.kind},
                                     "scope": "Namespaced" if s.namespaced else "Cluster",
                                     "singularResource": s.singular, "verbs": list(s.verbs)}
                if s.short_names:
                    a["shortNames"] = list(s.short_names)
                if s.categories:
                    a["categories"] = list(s.categories)
                subs = []
                for sub in s.subresources:
                    kind = "Binding" if sub == "binding" else s.kind
                    verbs = ["create"] if sub == "binding" else (["update"] if sub == "finalize"
                                                                 else ["get", "patch", "update"])
                    resources.append({"name": f"{s.resource}/{sub}", "singularName": "", "namespaced": s.namespaced,
                                      "kind": kind, "verbs": verbs})
                    subs.append({"subresource": sub, "responseKind": {"group": group, "version": version,
                                                                      "kind": kind}, "verbs": verbs})
                if s is kinds.POD:
                    for sub, (kind, verbs) in sorted(POD_PROXY_SUBRESOURCES.items()):
                        resources.append({"name": f"{s.resource}/{sub}", "singularName": "", "namespaced": True,
                                          "kind": kind, "verbs": verbs})
                        subs.append({"subresource": sub, "responseKind": {"group": group, "version": version,
                                                                          "kind": kind}, "verbs": verbs})
                if subs:
                    a["subresources"] = subs
                agg_resources.append(a)
            self._resource_lists[(group, version)] = {"kind": "APIResourceList", "apiVersion": "v1",
                                                      "groupVersion": gv, "resources": resources}
            agg.setdefault(group, []).append({"version": version, "resources": agg_resources,
                                              "freshness": "Current"})
            if group:
                ver = {"groupVersion": gv, "version": version}
                self._groups[group] = {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": [ver],
                                       "preferredVersion": ver}
        self._api_versions = {"kind": "APIVersions", "versions": ["v1"],
                              "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}
        self._group_list = {"kind": "APIGroupList", "apiVersion": "v1", "groups": list(self._groups.values())}
        self._agg: dict[bool, list[dict[str, Any]]] = {
            True: [{"metadata": {}, "versions": agg.get("", [])}],
            False: [{"metadata": {"name": g}, "versions": vs} for g, vs in sorted(agg.items()) if g],
        }

    def _discovery_root(self, request: web.Request, core: bool) -> web.Response:
        fmt = _accept(request)
        if fmt in ("agg-v2", "agg-v2beta1"):
            ver = "v2" if fmt == "agg-v2" else "v2beta1"
            doc = {"kind": "APIGroupDiscoveryList", "apiVersion": f"apidiscovery.k8s.io/{ver}", "metadata": {},
                   "items": self._agg[core]}
            return self._response(doc, content_type=AGG_V2 if ver == "v2" else AGG_V2BETA1)
        return self._response(self._api_versions if core else self._group_list)

    # ------------------------------------------------------------------ OpenAPI v3

    def _build_openapi(self) -> None:
        """Per group-version, one path per kind with the operations and parameters kubectl checks for
        server-side field validation (an object-valued x-kubernetes-group-version-kind and a
        `fieldValidation` query parameter on PATCH)."""
        params = [{"name": n, "in": "query", "schema": {"type": "string"}} for n in
                  ("dryRun", "fieldManager", "fieldValidation")]
        docs: dict[str, dict[str, Any]] = {}
        for s in self.registry.strategies:
            gv_path = f"apis/{s.group}/{s.version}" if s.group else f"api/{s.version}"
            doc = docs.setdefault(gv_path, {"openapi": "3.0.0", "info": {"title": "Kubernetes",
                                                                         "version": VERSION["gitVersion"]},
                                            "paths": {}, "components": {"schemas": {}}})
            gvk = {"group": s.group, "version": s.version, "kind": s.kind}
            base = f"/{gv_path}/namespaces/{{namespace}}/{s.resource}" if s.namespaced else f"/{gv_path}/{s.resource}"
            schema_name = f"io.k8s.api.{s.group or 'core'}.{s.version}.{s.kind}"
            ref = {"content": {JSON: {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}}
            doc["components"]["schemas"][schema_name] = {
                "type": "object", "x-kubernetes-group-version-kind": [gvk],
                "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                               "metadata": {"type": "object"}}}

            def op(verb: str, extra: list[dict[str, Any]], gvk: dict[str, str] = gvk,
                   ref: dict[str, Any] = ref, s: Strategy = s) -> dict[str, Any]:
                return {"operationId": f"{verb}{s.kind}", "x-kubernetes-action": verb,
                        "x-kubernetes-group-version-kind": gvk, "parameters": params + extra,
                        "responses": {"200": {"description": "OK", **ref}}}

            doc["paths"][base] = {"get": op("list", []), "post": op("post", [])}
            doc["paths"][base + "/{name}"] = {
                "get": op("get", []), "put": op("put", []), "delete": op("delete", []),
                "patch": op("patch", [{"name": "force", "in": "query", "schema": {"type": "boolean"}}])}
        self._openapi_docs = {k: dumps(d) for k, d in docs.items()}
        self._openapi_hashes = {k: hashlib.sha512(b).hexdigest()[:32].upper() for k, b in self._openapi_docs.items()}
        self._openapi_root = {"paths": {k: {"serverRelativeURL": f"/openapi/v3/{k}?hash={h}"}
                                        for k, h in sorted(self._openapi_hashes.items())}}

    def _openapi(self, request: web.Request, parts: list[str]) -> web.Response:
        if len(parts) >= 2 and parts[1] == "v3":
            if len(parts) == 2:
                return self._response(self._openapi_root)
            key = "/".join(parts[2:])
            body = self._openapi_docs.get(key)
            if body is not None:
                resp = web.Response(body=body)
                resp.headers["Content-Type"] = JSON
                return resp
        if len(parts) >= 2 and parts[1] == "v2":
            # plain text on purpose: kubectl 1.27/1.28 then print their own hint to use --validate=false
            return web.Response(status=404, text=OPENAPI_V2_MSG, content_type="text/plain")
        raise not_found_path(NOT_FOUND_MSG)

    # ------------------------------------------------------------------ node join

    async def _join(self, request: web.Request, user: User) -> web.Response:
        if request.method != "POST":
            raise method_not_allowed("use POST")
        if user.name != auth.JOIN_USER and not user.is_admin:
            raise APIError(403, "Forbidden", f'User "{user.name}" may not join nodes')
        body, _ = await self._read_body(request)
        node = body.get("nodeName") if isinstance(body, dict) else None
        causes = v.dns1123_subdomain("nodeName", node)
        if causes or not isinstance(node, str):
            raise invalid_object("NodeJoin", str(node or ""), causes)
        node_user = auth.node_user(node)
        self.tokens.revoke_user(node_user.name)
        token = self.tokens.mint(node_user)
        log.info("node %s joined; minted a token for %s", node, node_user.name)
        return self._response({"kind": "NodeCredential", "apiVersion": "kubeletpy.io/v1", "nodeName": node,
                               "user": node_user.name, "token": token,
                               "caData": base64.b64encode(self.ca_pem).decode()}, 201)

