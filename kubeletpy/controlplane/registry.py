"""The generic registry: one storage path for every kind.

Every verb goes through here -- create, get, list, update (PUT), patch (four flavours),
delete (graceful, finalizers), deletecollection, watch, and the pod binding -- and the
kind-specific parts are asked of the kind's `Strategy`. The registry works on the *stored*
form of an object (`Strategy.to_storage`), so one kind can be served in two API groups.

Concurrency is optimistic: a write is conditional on the mod_revision it read. When the
client gave no resourceVersion the registry simply re-reads and retries (that is what
"unconditional update" and "patch" mean in Kubernetes); with one, a mismatch is a 409.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import copy
import json
import logging
import random
import secrets
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import kinds, managed
from . import validation as v
from .errors import (
    APIError,
    Cause,
    bad_request,
    conflict,
    expired,
    forbidden_error,
    invalid_object,
    not_found,
    required,
    stale,
)
from .patch import json_patch, merge_patch, strategic_merge
from .selectors import match_fields
from .storage import (
    CompactedError,
    ConflictError,
    KeyExistsError,
    KeyNotFoundError,
    Storage,
    WatchEvent,
    WatchOverflowError,
)
from .strategy import Strategy, rfc3339

log = logging.getLogger("kubeletpy.controlplane.registry")

_GEN_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_SYSTEM_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds",
                "name", "namespace")
_RETRIES = 64  # optimistic-concurrency retries of an unconditional write before giving up with 409


async def _backoff(attempt: int) -> None:
    """After a lost race, wait a little (jittered) so a hot key's writers spread out."""
    if attempt >= 2:
        await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))

PATCH_JSON = "application/json-patch+json"
PATCH_MERGE = "application/merge-patch+json"
PATCH_STRATEGIC = "application/strategic-merge-patch+json"
PATCH_APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (PATCH_JSON, PATCH_MERGE, PATCH_STRATEGIC, PATCH_APPLY)


@dataclass(slots=True)
class Context:
    """Per-request options that change how a write is done."""

    user: str = "system:admin"
    groups: tuple[str, ...] = ("system:masters", "system:authenticated")
    uid: str = ""
    dry_run: bool = False
    field_manager: str = ""
    field_validation: str = "Warn"  # Strict | Warn | Ignore
    warnings: list[str] = field(default_factory=list)


def encode(obj: dict[str, Any]) -> bytes:
    """Stored bytes: compact JSON without resourceVersion (the store's revision is the truth)."""
    meta = obj.get("metadata") or {}
    rv = meta.pop("resourceVersion", None)
    try:
        return json.dumps(obj, separators=(",", ":")).encode()
    finally:
        if rv is not None:
            meta["resourceVersion"] = rv


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: val for k, val in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """The object minus what changes on every write (resourceVersion, managedFields times): equal means no-op."""
    meta = {k: val for k, val in (obj.get("metadata") or {}).items() if k not in ("resourceVersion", "managedFields")}
    meta["managedFields"] = [{k: val for k, val in e.items() if k != "time"}
                             for e in (obj.get("metadata") or {}).get("managedFields") or []]
    return {**obj, "metadata": meta}


class Registry:
    def __init__(self, storage: Storage, strategies: tuple[Strategy, ...] = kinds.ALL) -> None:
        self.storage = storage
        self.strategies = strategies
        self._by_gvr = {(s.group, s.version, s.resource): s for s in strategies}
        self._schemas = {id(s): s.full_schema() for s in strategies}
        self._ns_tasks: dict[str, asyncio.Task] = {}

    def lookup(self, group: str, version: str, resource: str) -> Strategy | None:
        return self._by_gvr.get((group, version, resource))

    # -- keys and decoding

    @staticmethod
    def key(s: Strategy, ns: str, name: str) -> str:
        return f"/registry/{s.store_name}/{ns}/{name}" if s.namespaced else f"/registry/{s.store_name}/{name}"

    @staticmethod
    def prefix(s: Strategy, ns: str) -> str:
        return f"/registry/{s.store_name}/{ns}/" if s.namespaced and ns else f"/registry/{s.store_name}/"

    @staticmethod
    def _decode(value: bytes, rev: int) -> dict[str, Any]:
        obj = json.loads(value)
        obj.setdefault("metadata", {})["resourceVersion"] = str(rev)
        return obj

    # -- startup

    async def bootstrap(self) -> None:
        """Create the system namespaces; resume finalizing namespaces left Terminating."""
        ctx = Context(field_manager="kube-apiserver")
        for ns in kinds.SYSTEM_NAMESPACES:
            if not await self.exists(kinds.NAMESPACE, "", ns):
                try:
                    await self.create(kinds.NAMESPACE, "", {"metadata": {"name": ns}}, ctx)
                except APIError as e:
                    if e.code != 409:
                        raise
        for kv in (await self.storage.list(self.prefix(kinds.NAMESPACE, ""))).items:
            obj = self._decode(kv.value, kv.mod_revision)
            if obj["metadata"].get("deletionTimestamp"):
                self._start_ns_finalizer(obj["metadata"]["name"])

    async def close(self) -> None:
        for t in self._ns_tasks.values():
            t.cancel()

    # -- reads

    async def exists(self, s: Strategy, ns: str, name: str) -> bool:
        return await self.storage.get(self.key(s, ns, name)) is not None

    async def get(self, s: Strategy, ns: str, name: str) -> dict[str, Any]:
        kv = await self.storage.get(self.key(s, ns, name))
        if kv is None:
            raise not_found(s.resource, name, s.group)
        return s.from_storage(self._decode(kv.value, kv.mod_revision))

    async def list(self, s: Strategy, ns: str, *, label: Callable[[Mapping[str, str]], bool] | None = None,
                   fields: list[tuple[str, bool, str]] | None = None, limit: int = 0,
                   continue_token: str = "") -> tuple[builtins.list[dict[str, Any]], int, str]:
        """Matching objects, the list's revision, and a continue token when `limit` cut it short."""
        prefix = self.prefix(s, ns)
        start_after = ""
        rev = self.storage.revision
        if continue_token:
            try:
                tok = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start_after, rev = str(tok["start"]), int(tok["rv"])
                if not start_after.startswith(prefix):
                    raise ValueError("token is for another list")
            except (ValueError, KeyError, TypeError):
                raise bad_request("continue key is not valid: the continue token is malformed") from None
            if rev < self.storage.compacted_revision:
                raise expired("The provided continue parameter is too old to display a consistent list result. "
                              "You can start a new list without the continue parameter.")
        items: builtins.list[dict[str, Any]] = []
        page = max(limit, 500) if limit else 0
        last_key = ""
        more = False
        while True:
            res = await self.storage.list(prefix, start_after=start_after, limit=page)
            if not continue_token and not items and not last_key:
                rev = res.revision
            for n, kv in enumerate(res.items):
                obj = s.from_storage(self._decode(kv.value, kv.mod_revision))
                last_key = kv.key
                if label is not None and not label((obj.get("metadata") or {}).get("labels") or {}):
                    continue
                if fields and not match_fields(fields, s.fields(obj)):
                    continue
                items.append(obj)
                if limit and len(items) >= limit:
                    more = n + 1 < len(res.items) or res.more
                    break
            if (limit and len(items) >= limit) or not res.more:
                break
            start_after = res.items[-1].key
        token = ""
        if more:
            token = base64.urlsafe_b64encode(json.dumps({"rv": rev, "start": last_key}).encode()).decode()
        return items, rev, token

    # -- request body checks

    def check_body(self, s: Strategy, body: Any, ns: str, name: str | None) -> dict[str, Any]:
        """Shape checks every write body gets: an object, of this kind, for this URL."""
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request was not a {s.kind} object")
        kind, api = body.get("kind"), body.get("apiVersion")
        if kind is not None and kind != s.kind:
            raise bad_request(f"the kind in the request body ({kind}) does not match the resource in the URL "
                              f"({s.resource}, kind {s.kind})")
        if api is not None and api != s.api_version:
            raise bad_request(f"the API version in the data ({api}) does not match the expected API version "
                              f"({s.api_version})")
        body["apiVersion"], body["kind"] = s.api_version, s.kind
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request(f"{s.kind} in version \"{s.version}\" cannot be handled as a {s.kind}: "
                              "metadata: expected object")
        if s.namespaced:
            if meta.get("namespace") and meta["namespace"] != ns:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  "request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if name is not None:
            if meta.get("name") and meta["name"] != name:
                raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL "
                                  f"({name})")
            meta["name"] = name
        return body

    def check_fields(self, s: Strategy, obj: dict[str, Any], ctx: Context) -> None:
        unknown: builtins.list[str] = []
        bad: builtins.list[str] = []
        v.check_fields(obj, self._schemas[id(s)], "", unknown, bad, prune=ctx.field_validation != "Strict")
        head = f'{s.kind} in version "{s.version}" cannot be handled as a {s.kind}: '
        if bad:
            raise bad_request(head + "; ".join(bad))
        if unknown:
            if ctx.field_validation == "Strict":
                raise bad_request(head + "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown),
                                  [Cause("FieldValueInvalid", u, "unknown field") for u in unknown])
            if ctx.field_validation == "Warn":
                ctx.warnings += [f'unknown field "{u}"' for u in unknown]

    def validate_meta(self, s: Strategy, obj: dict[str, Any]) -> builtins.list[Cause]:
        meta = obj["metadata"]
        name = meta.get("name")
        out: builtins.list[Cause] = []
        if not name:
            out.append(required("metadata.name", "name or generateName is required"))
        elif s.name_validator == "label":
            out += v.dns1123_label("metadata.name", name)
        else:
            out += v.dns1123_subdomain("metadata.name", name)
        out += v.labels("metadata.labels", meta.get("labels"))
        out += v.annotation_map("metadata.annotations", meta.get("annotations"))
        for i, f in enumerate(meta.get("finalizers") or []):
            out += v.qualified_name(f"metadata.finalizers[{i}]", f) if isinstance(f, str) and f else [
                required(f"metadata.finalizers[{i}]")]
        for i, ref in enumerate(meta.get("ownerReferences") or []):
            for k in ("apiVersion", "kind", "name", "uid"):
                if not ref.get(k):
                    out.append(required(f"metadata.ownerReferences[{i}].{k}"))
        return out

    async def _check_namespace(self, s: Strategy, ns: str, name: str) -> None:
        kv = await self.storage.get(f"/registry/namespaces/{ns}")
        if kv is None:
            raise not_found("namespaces", ns)
        if b'"deletionTimestamp"' in kv.value:
            raise forbidden_error(f'{s.resource} "{name}" is forbidden: unable to create new content in namespace '
                                  f"{ns} because it is being terminated", s.resource, name, s.group)

    # -- create

    async def create(self, s: Strategy, ns: str, body: Any, ctx: Context, *, managed_done: bool = False,
                     checked: bool = False) -> dict[str, Any]:
        obj = body if checked else self.check_body(s, body, ns, None)
        if not checked:
            self.check_fields(s, obj, ctx)
        obj = s.to_storage(obj)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        for f in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink",
                  "generation") + (() if managed_done else ("managedFields",)):
            meta.pop(f, None)
        generated = not meta.get("name") and bool(meta.get("generateName"))
        if generated:
            meta["name"] = self._generate(meta["generateName"])
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339()
        if s.generation:
            meta["generation"] = 1
        s.prepare_create(obj)
        s.set_requester(obj, ctx.user, ctx.groups, ctx.uid)
        causes = self.validate_meta(s, obj) + s.validate_create(obj)
        if causes:
            raise invalid_object(s.kind, meta.get("name") or meta.get("generateName") or "", causes, s.group)
        if s.namespaced:
            await self._check_namespace(s, ns, meta["name"])
        if not managed_done:
            managed.record_update(None, obj, ctx.field_manager or "unknown", s.merge_keys, "", s.api_version)
        if ctx.dry_run:
            return s.from_storage(obj)
        for attempt in range(8):
            try:
                rev = await self.storage.create(self.key(s, ns, meta["name"]), encode(obj))
                break
            except KeyExistsError:
                if not generated or attempt == 7:
                    raise APIError(409, "AlreadyExists", f'{s.resource + ("." + s.group if s.group else "")} '
                                   f'"{meta["name"]}" already exists',
                                   {"name": meta["name"], "kind": s.resource, **({"group": s.group} if s.group else {})}
                                   ) from None
                meta["name"] = self._generate(meta["generateName"])
        meta["resourceVersion"] = str(rev)
        return s.from_storage(obj)

    @staticmethod
    def _generate(prefix: str) -> str:
        return prefix[:58] + "".join(secrets.choice(_GEN_CHARS) for _ in range(5))

    # -- update (PUT) and patch share `_write`

    async def _write(self, s: Strategy, kv: Any, old: dict[str, Any], new: dict[str, Any], ctx: Context,
                     subresource: str, client_rv: str | None, managed_done: bool) -> dict[str, Any]:
        name = old["metadata"]["name"]
        if client_rv and client_rv != str(kv.mod_revision):
            raise stale(s.resource, name, s.group)
        nm = new.setdefault("metadata", {})
        om = old["metadata"]
        if nm.get("uid") and nm["uid"] != om.get("uid"):
            raise conflict(s.resource, name, s.group,
                           f"Precondition failed: UID in precondition: {nm['uid']}, UID in object meta: {om.get('uid')}")
        for f in _SYSTEM_META:
            if f in om:
                nm[f] = om[f]
            else:
                nm.pop(f, None)
        nm.pop("resourceVersion", None)
        nm.pop("selfLink", None)
        mf = nm.get("managedFields")
        if subresource == "status":
            s.prepare_status_update(new, old)
            nm = new["metadata"] = dict(new["metadata"])
            if managed_done:
                nm["managedFields"] = mf
        elif subresource == "finalize":
            finalizers = (new.get("spec") or {}).get("finalizers") or []
            new = copy.deepcopy(old)
            new.setdefault("spec", {})["finalizers"] = finalizers
            nm = new["metadata"]
            nm.pop("resourceVersion", None)
        elif subresource == "":
            s.prepare_update(new, old)
        else:
            s.prepare_subresource_update(subresource, new, old)
            nm = new["metadata"] = dict(new["metadata"])
            nm["managedFields"] = mf if managed_done else om.get("managedFields")
        if s.generation and subresource not in ("status", "finalize") and _spec_part(new) != _spec_part(old):
            nm["generation"] = int(om.get("generation") or 0) + 1
        if subresource in ("", "status", "finalize"):
            causes = self.validate_meta(s, new) + s.validate_update(new, old)
        else:
            causes = self.validate_meta(s, new) + s.validate_subresource_update(subresource, new, old)
        if causes:
            raise invalid_object(s.kind, name, causes, s.group)
        if not managed_done:
            nm["managedFields"] = om.get("managedFields")
            managed.record_update(old, new, ctx.field_manager or "unknown", s.merge_keys, subresource, s.api_version)
        nm.pop("resourceVersion", None)
        if _comparable(new) == _comparable(old):
            return s.from_storage(old)
        key = self.key(s, nm.get("namespace", ""), name)
        if nm.get("deletionTimestamp") and not nm.get("finalizers") and not nm.get("deletionGracePeriodSeconds"):
            if ctx.dry_run:
                return s.from_storage(new)
            gone = await self.storage.delete(key, kv.mod_revision)
            nm["resourceVersion"] = str(gone.mod_revision)
            return s.from_storage(new)
        if ctx.dry_run:
            nm["resourceVersion"] = str(kv.mod_revision)
            return s.from_storage(new)
        rev = await self.storage.update(key, encode(new), kv.mod_revision)
        nm["resourceVersion"] = str(rev)
        return s.from_storage(new)

    async def update(self, s: Strategy, ns: str, name: str, body: Any, ctx: Context,
                     subresource: str = "") -> dict[str, Any]:
        obj = self.check_body(s, body, ns, name)
        self.check_fields(s, obj, ctx)
        client_rv = obj["metadata"].get("resourceVersion") or None
        if not client_rv and not s.allow_unconditional_update:
            raise invalid_object(s.kind, name, [Cause("FieldValueInvalid", "metadata.resourceVersion",
                                                      "Invalid value: 0x0: must be specified for an update")], s.group)
        key = self.key(s, ns, name)
        for attempt in range(_RETRIES):
            kv = await self.storage.get(key)
            if kv is None:
                raise not_found(s.resource, name, s.group)
            old = self._decode(kv.value, kv.mod_revision)
            try:
                return await self._write(s, kv, old, s.to_storage(copy.deepcopy(obj)), ctx, subresource, client_rv,
                                         False)
            except (ConflictError, KeyNotFoundError):
                if client_rv:
                    raise stale(s.resource, name, s.group) from None
                await _backoff(attempt)
        raise stale(s.resource, name, s.group)

    async def patch(self, s: Strategy, ns: str, name: str, ptype: str, body: Any, ctx: Context,
                    subresource: str = "", force: bool = False) -> tuple[dict[str, Any], bool]:
        """Returns (object, created); only server-side apply can create."""
        key = self.key(s, ns, name)
        client_rv: str | None = None
        if ptype != PATCH_JSON:
            if not isinstance(body, dict):
                raise bad_request(f"the body of the request was not a valid {ptype} document")
            meta = body.get("metadata")
            client_rv = (meta.get("resourceVersion") if isinstance(meta, dict) else None) or None
        if ptype == PATCH_APPLY:
            if not ctx.field_manager:
                raise bad_request("PATCH, with apply, requires fieldManager to be set")
            body = self.check_body(s, body, ns, name)
            if body["metadata"].get("managedFields"):
                raise bad_request("metadata.managedFields must be nil")
            self.check_fields(s, body, ctx)
        for attempt in range(_RETRIES):
            kv = await self.storage.get(key)
            if kv is None:
                if ptype == PATCH_APPLY and subresource == "":
                    created = managed.apply(None, s.to_storage(copy.deepcopy(body)), ctx.field_manager, force,
                                            s.merge_keys, "", s.api_version)
                    created["metadata"].pop("resourceVersion", None)
                    try:
                        return await self.create(s, ns, s.from_storage(created), ctx, managed_done=True,
                                                 checked=True), True
                    except APIError as e:
                        if e.code == 409 and e.reason == "AlreadyExists":
                            continue
                        raise
                raise not_found(s.resource, name, s.group)
            old = self._decode(kv.value, kv.mod_revision)
            ext = s.from_storage(copy.deepcopy(old))
            if ptype == PATCH_JSON:
                patched = json_patch(ext, body)
                prv = (patched.get("metadata") or {}).get("resourceVersion")
                client_rv = prv if prv and prv != str(kv.mod_revision) else None
            elif ptype == PATCH_MERGE:
                patched = merge_patch(ext, body)
            elif ptype == PATCH_STRATEGIC:
                patched = strategic_merge(ext, body, s.merge_keys)
            else:
                patched = s.from_storage(managed.apply(
                    s.to_storage(ext), s.to_storage(copy.deepcopy(body)), ctx.field_manager, force, s.merge_keys,
                    subresource, s.api_version))
            if not isinstance(patched, dict):
                raise bad_request("the patch did not produce an object")
            pm = patched.get("metadata")
            if isinstance(pm, dict) and pm.get("name") not in (None, name):
                raise invalid_object(s.kind, name, [v_immutable("metadata.name", pm.get("name"))], s.group)
            patched = self.check_body(s, patched, ns, name)
            if ptype != PATCH_APPLY:
                self.check_fields(s, patched, ctx)
            if client_rv is None:
                patched["metadata"]["resourceVersion"] = str(kv.mod_revision)
            try:
                return await self._write(s, kv, old, s.to_storage(patched), ctx, subresource, client_rv,
                                         ptype == PATCH_APPLY), False
            except (ConflictError, KeyNotFoundError):
                if client_rv:
                    raise stale(s.resource, name, s.group) from None
                await _backoff(attempt)
        raise stale(s.resource, name, s.group)

    # -- delete

    async def delete(self, s: Strategy, ns: str, name: str, options: dict[str, Any],
                     ctx: Context) -> tuple[dict[str, Any], bool]:
        """Returns (last state, gone). Not gone means deletion is pending (grace period or finalizers)."""
        key = self.key(s, ns, name)
        pre = options.get("preconditions") or {}
        for attempt in range(_RETRIES):
            kv = await self.storage.get(key)
            if kv is None:
                raise not_found(s.resource, name, s.group)
            obj = self._decode(kv.value, kv.mod_revision)
            meta = obj["metadata"]
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise conflict(s.resource, name, s.group, f"Precondition failed: UID in precondition: {pre['uid']}, "
                                                          f"UID in object meta: {meta.get('uid')}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise conflict(s.resource, name, s.group,
                               f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                               f"ResourceVersion in object meta: {meta['resourceVersion']}")
            try:
                if s is kinds.NAMESPACE:
                    return await self._delete_namespace(kv, obj, ctx), False
                grace = await s.grace_period(obj, options.get("gracePeriodSeconds"), self)
                if meta.get("finalizers") or grace > 0:
                    new = copy.deepcopy(obj)
                    nm = new["metadata"]
                    changed = False
                    if not nm.get("deletionTimestamp"):
                        nm["deletionTimestamp"] = rfc3339(time.time() + grace)
                        nm["deletionGracePeriodSeconds"] = grace
                        if "generation" in nm:
                            nm["generation"] = int(nm["generation"]) + 1
                        changed = True
                    elif grace < int(nm.get("deletionGracePeriodSeconds") or 0):
                        nm["deletionTimestamp"] = rfc3339(time.time() + grace)
                        nm["deletionGracePeriodSeconds"] = grace
                        changed = True
                    if meta.get("finalizers") or grace > 0:
                        if ctx.dry_run or not changed:
                            return s.from_storage(new), False
                        rev = await self.storage.update(key, encode(new), kv.mod_revision)
                        nm["resourceVersion"] = str(rev)
                        return s.from_storage(new), False
                if ctx.dry_run:
                    return s.from_storage(obj), True
                gone = await self.storage.delete(key, kv.mod_revision)
                meta["resourceVersion"] = str(gone.mod_revision)
                return s.from_storage(obj), True
            except (ConflictError, KeyNotFoundError):
                await _backoff(attempt)
        raise stale(s.resource, name, s.group)

    async def delete_collection(self, s: Strategy, ns: str, options: dict[str, Any], ctx: Context, *,
                                label: Callable[[Mapping[str, str]], bool] | None = None,
                                fields: builtins.list[tuple[str, bool, str]] | None = None,
                                ) -> builtins.list[dict[str, Any]]:
        items, _, _ = await self.list(s, ns, label=label, fields=fields)
        out = []
        for obj in items:
            m = obj["metadata"]
            try:
                out.append((await self.delete(s, m.get("namespace", ""), m["name"], options, ctx))[0])
            except APIError as e:
                if e.code != 404:
                    raise
        return out

    async def _delete_namespace(self, kv: Any, obj: dict[str, Any], ctx: Context) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        if name in kinds.SYSTEM_NAMESPACES:
            raise forbidden_error(f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                                  "namespaces", name)
        if obj["metadata"].get("deletionTimestamp"):
            return obj
        new = copy.deepcopy(obj)
        new["metadata"]["deletionTimestamp"] = rfc3339()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new.setdefault("status", {})["phase"] = "Terminating"
        if ctx.dry_run:
            return new
        rev = await self.storage.update(self.key(kinds.NAMESPACE, "", name), encode(new), kv.mod_revision)
        new["metadata"]["resourceVersion"] = str(rev)
        self._start_ns_finalizer(name)
        return new

    def _start_ns_finalizer(self, name: str) -> None:
        t = self._ns_tasks.get(name)
        if t is None or t.done():
            self._ns_tasks[name] = asyncio.get_running_loop().create_task(self._finalize_namespace(name))

    async def _finalize_namespace(self, name: str) -> None:
        """The namespace controller: delete everything in the namespace, then the namespace itself."""
        ctx = Context(field_manager="namespace-controller")
        seen: set[str] = set()
        stores = []
        for s in self.strategies:
            if s.namespaced and s.store_name not in seen:
                seen.add(s.store_name)
                stores.append(s)
        try:
            while True:
                remaining = pending = 0
                for s in stores:
                    for kv in (await self.storage.list(self.prefix(s, name))).items:
                        remaining += 1
                        try:
                            _, gone = await self.delete(s, name, kv.key.rsplit("/", 1)[1], {}, ctx)
                            pending += 0 if gone else 1
                        except APIError:
                            pending += 1
                if remaining == 0:
                    break
                if pending:
                    await asyncio.sleep(1.0)
            key = self.key(kinds.NAMESPACE, "", name)
            for _ in range(_RETRIES):
                nkv = await self.storage.get(key)
                if nkv is None:
                    return
                obj = self._decode(nkv.value, nkv.mod_revision)
                try:
                    if obj["metadata"].get("finalizers"):
                        obj.setdefault("spec", {})["finalizers"] = []
                        await self.storage.update(key, encode(obj), nkv.mod_revision)
                    else:
                        await self.storage.delete(key, nkv.mod_revision)
                    return
                except (ConflictError, KeyNotFoundError):
                    continue
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("finalizing namespace %s failed", name)

    # -- pods/binding

    async def bind(self, ns: str, name: str, binding: Any, ctx: Context) -> None:
        s = kinds.POD
        if not isinstance(binding, dict):
            raise bad_request("the body of the request was not a Binding object")
        if binding.get("kind") not in (None, "Binding"):
            raise bad_request(f"the kind in the request body ({binding.get('kind')}) is not Binding")
        target = binding.get("target") or {}
        node = target.get("name") if isinstance(target, dict) else None
        if not node:
            raise invalid_object("Binding", name, [required("target.name")])
        if (binding.get("metadata") or {}).get("name") not in (None, name):
            raise bad_request("the name of the binding does not match the name of the pod on the URL")
        key = self.key(s, ns, name)
        for _ in range(_RETRIES):
            kv = await self.storage.get(key)
            if kv is None:
                raise not_found(s.resource, name)
            pod = self._decode(kv.value, kv.mod_revision)
            if pod["metadata"].get("deletionTimestamp"):
                raise conflict("pods", name, "", f"pod {name} is being deleted, cannot be assigned to a host")
            if (pod.get("spec") or {}).get("nodeName"):
                raise conflict("pods", name, "", f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"')
            new = copy.deepcopy(pod)
            new["spec"]["nodeName"] = node
            conds = [c for c in (new.setdefault("status", {}).get("conditions") or []) if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": rfc3339()})
            new["status"]["conditions"] = conds
            managed.record_update(pod, new, ctx.field_manager or "kube-scheduler", s.merge_keys, "", s.api_version)
            if ctx.dry_run:
                return
            try:
                await self.storage.update(key, encode(new), kv.mod_revision)
                return
            except (ConflictError, KeyNotFoundError):
                continue
        raise stale("pods", name)

    # -- watch

    def _event_obj(self, s: Strategy, ev: WatchEvent, prev: bool = False) -> dict[str, Any] | None:
        """The served object of an event (or of the value before it), decoded once per strategy."""
        ck = (id(s), prev)
        cache = ev.cache
        if ck not in cache:
            raw = ev.prev_value if prev else ev.value
            cache[ck] = None if raw is None else s.from_storage(self._decode(raw, ev.revision))
        return cache[ck]

    async def watch(self, s: Strategy, ns: str, resource_version: str, *,
                    label: Callable[[Mapping[str, str]], bool] | None = None,
                    fields: builtins.list[tuple[str, bool, str]] | None = None,
                    send_initial: bool | None = None,
                    allow_bookmarks: bool = False,
                    ) -> AsyncGenerator[tuple[str, dict[str, Any], WatchEvent | None], None]:
        """(type, object, event) triples; the event lets callers share encodings between watchers."""
        try:
            rv = int(resource_version) if resource_version else 0
        except ValueError:
            raise bad_request(f"invalid resource version: {resource_version!r}") from None
        prefix = self.prefix(s, ns)
        filtered = label is not None or bool(fields)

        def matches(obj: dict[str, Any] | None) -> bool:
            if obj is None:
                return False
            if label is not None and not label((obj.get("metadata") or {}).get("labels") or {}):
                return False
            return not fields or match_fields(fields, s.fields(obj))

        initial = send_initial if send_initial is not None else rv == 0
        if initial:
            res = await self.storage.list(prefix)
            watcher = self.storage.watch(prefix, res.revision)
            try:
                for kv in res.items:
                    obj = s.from_storage(self._decode(kv.value, kv.mod_revision))
                    if matches(obj):
                        yield "ADDED", obj, None
                if send_initial and allow_bookmarks:
                    yield "BOOKMARK", {"kind": s.kind, "apiVersion": s.api_version, "metadata": {
                        "resourceVersion": str(res.revision),
                        "annotations": {"k8s.io/initial-events-end": "true"}}}, None
            except BaseException:
                watcher.close()
                raise
        else:
            try:
                watcher = self.storage.watch(prefix, rv)
            except CompactedError as e:
                yield "ERROR", expired(f"too old resource version: {rv} ({e.compacted})").status(), None
                return
        try:
            async for ev in watcher:
                current = self._event_obj(s, ev)
                assert current is not None
                obj = current
                now_match = matches(obj)
                if ev.type == "DELETE":
                    if now_match:
                        yield "DELETED", obj, ev
                elif ev.is_create:
                    if now_match:
                        yield "ADDED", obj, ev
                elif not filtered:
                    yield "MODIFIED", obj, ev
                else:
                    was = matches(self._event_obj(s, ev, prev=True)) if ev.prev_value is not None else now_match
                    if now_match and was:
                        yield "MODIFIED", obj, ev
                    elif now_match:
                        yield "ADDED", obj, ev
                    elif was:
                        yield "DELETED", obj, ev
        except WatchOverflowError:
            yield "ERROR", expired("watch fell too far behind; please re-list").status(), None
        finally:
            watcher.close()


def v_immutable(field_path: str, value: Any) -> Cause:
    return Cause("FieldValueInvalid", field_path, f"Invalid value: {json.dumps(value)}: field is immutable")
