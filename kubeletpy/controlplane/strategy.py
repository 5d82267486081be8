"""The per-kind part of the registry.

The generic registry does storage, concurrency, metadata, managedFields, dry-run,
deletion and watches for every kind; a `Strategy` only says what is specific: names and
discovery data, the field schema, defaulting, validation, which parts a status write may
touch, printed columns and selectable fields. A later kind (Deployment, Service, ...) is a
subclass of this plus, where needed, a controller.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import validation as v
from .errors import Cause
from .patch import MergeKeys

if TYPE_CHECKING:
    from .registry import Registry

OWNER_REF = {"apiVersion": v.STR, "kind": v.STR, "name": v.STR, "uid": v.STR, "controller": v.BOOL,
             "blockOwnerDeletion": v.BOOL}
OBJECT_META: dict[str, Any] = {
    "name": v.STR, "generateName": v.STR, "namespace": v.STR, "selfLink": v.STR, "uid": v.STR,
    "resourceVersion": v.STR, "generation": v.INT, "creationTimestamp": v.TIME, "deletionTimestamp": v.TIME,
    "deletionGracePeriodSeconds": v.INT, "labels": v.MapOf(v.STR), "annotations": v.MapOf(v.STR),
    "ownerReferences": v.ListOf(OWNER_REF), "finalizers": v.ListOf(v.STR), "managedFields": v.ListOf(v.ANY),
}

NAME_COLUMN = {"name": "Name", "type": "string", "format": "name",
               "description": "Name must be unique within a namespace.", "priority": 0}
AGE_COLUMN = {"name": "Age", "type": "string", "format": "",
              "description": "CreationTimestamp is a timestamp representing the server time when this object "
                             "was created.", "priority": 0}


def column(name: str, priority: int = 0, type_: str = "string", description: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": "", "description": description or name, "priority": priority}


def parse_time(s: Any) -> float | None:
    if not isinstance(s, str) or not s:
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def rfc3339(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def micro_time(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def human_duration(seconds: float) -> str:
    """apimachinery's HumanDuration: "45s", "3m20s", "60m", "5h30m", "30h", "3d4h", "45d", "2y30d"."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m" if s % 60 == 0 else f"{m}m{s % 60}s"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h" if m % 60 == 0 else f"{h}h{m % 60}m"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d" if h % 24 == 0 else f"{h // 24}d{h % 24}h"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        y, d = h // 24 // 365, (h // 24) % 365
        return f"{y}y" if d == 0 else f"{y}y{d}d"
    return f"{h // 24 // 365}y"


def age(obj: dict[str, Any], now: float) -> str:
    t = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return "<unknown>" if t is None else human_duration(now - t)


class Strategy:
    # identity and discovery
    group: str = ""
    version: str = "v1"
    kind: str = ""
    resource: str = ""
    singular: str = ""
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    subresources: tuple[str, ...] = ()      # "status", "binding", "ephemeralcontainers", ...
    # storage: kinds served in two API groups share one storage resource (events)
    storage_resource: str = ""
    # behaviour
    generation: bool = False                 # bump metadata.generation on spec changes
    status_split: bool = False               # main-resource writes keep the stored status
    name_validator: str = "subdomain"        # or "label"
    allow_unconditional_update: bool = True
    schema: dict[str, Any] = {}
    field_selectors: frozenset[str] = frozenset({"metadata.name", "metadata.namespace"})
    merge_keys: MergeKeys = MergeKeys()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def store_name(self) -> str:
        return self.storage_resource or self.resource

    def full_schema(self) -> dict[str, Any]:
        return {"apiVersion": v.STR, "kind": v.STR, "metadata": OBJECT_META, **self.schema}

    # -- conversion between the served form and the stored form (identity for most kinds)
    def to_storage(self, obj: dict[str, Any]) -> dict[str, Any]:
        return obj

    def from_storage(self, obj: dict[str, Any]) -> dict[str, Any]:
        return obj

    # -- lifecycle hooks (all take the stored form)
    def prepare_create(self, obj: dict[str, Any]) -> None:
        """Defaulting and dropping what a client may not set on create (e.g. status)."""

    def set_requester(self, obj: dict[str, Any], user: str, groups: tuple[str, ...], uid: str) -> None:
        """Kinds that record who created them (CertificateSigningRequest) take it from the
        authenticated request here, after `prepare_create`."""

    def prepare_update(self, new: dict[str, Any], old: dict[str, Any]) -> None:
        if self.status_split:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)

    def prepare_status_update(self, new: dict[str, Any], old: dict[str, Any]) -> None:
        """A status write changes only status: everything else comes from the stored object."""
        status = new.get("status")
        new.clear()
        new.update({k: val for k, val in old.items() if k != "status"})
        if status is not None:
            new["status"] = status

    def prepare_subresource_update(self, subresource: str, new: dict[str, Any], old: dict[str, Any]) -> None:
        """A write to a spec-owning subresource (pods/ephemeralcontainers) takes only the part
        that subresource owns; everything else comes from the stored object. Kinds that serve
        such a subresource override this; the default keeps the stored object whole."""
        new.clear()
        new.update(old)

    def validate(self, obj: dict[str, Any]) -> list[Cause]:
        return []

    def validate_create(self, obj: dict[str, Any]) -> list[Cause]:
        """Create-only rules (fields a client may only set through a subresource) on top of `validate`."""
        return self.validate(obj)

    def validate_update(self, new: dict[str, Any], old: dict[str, Any]) -> list[Cause]:
        return self.validate(new)

    def validate_subresource_update(self, subresource: str, new: dict[str, Any],
                                    old: dict[str, Any]) -> list[Cause]:
        """Validation of a write through `prepare_subresource_update`'s subresource."""
        return self.validate_update(new, old)

    async def grace_period(self, obj: dict[str, Any], requested: int | None, registry: Registry) -> int:
        """Seconds of graceful deletion (0: delete now). Most kinds go at once."""
        return 0

    # -- presentation
    def columns(self) -> list[dict[str, Any]]:
        return [NAME_COLUMN, AGE_COLUMN]

    def row(self, obj: dict[str, Any], now: float) -> list[Any]:
        return [obj["metadata"]["name"], age(obj, now)]

    def fields(self, obj: dict[str, Any]) -> dict[str, str]:
        meta = obj.get("metadata") or {}
        return {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}
