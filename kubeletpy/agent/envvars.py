"""Container environment: env (value, fieldRef, resourceFieldRef, configMapKeyRef,
secretKeyRef), envFrom, and $(VAR) expansion, as the kubelet resolves them.

Pure: ConfigMaps and Secrets come in through `lookup(kind, namespace, name)` so the same
code runs in tests and against the API. Missing required references raise EnvError, which
the worker reports as CreateContainerConfigError (the container waits, the pod is retried).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

from kubeletpy.agent import quantity

Lookup = Callable[[str, str, str], "dict[str, Any] | None"]
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)|\$\$")


class EnvError(Exception):
    """A referenced ConfigMap/Secret/key is missing and the reference is not optional."""


def expand(s: str, env: dict[str, str]) -> str:
    """$(VAR) -> value if VAR is defined (left as is otherwise); $$ -> $."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR.sub(sub, s)


def field_ref(pod: dict[str, Any], path: str, pod_ip: str, node_name: str, host_ip: str = "") -> str:
    md = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    simple = {
        "metadata.name": md.get("name", ""),
        "metadata.namespace": md.get("namespace", ""),
        "metadata.uid": md.get("uid", ""),
        "spec.nodeName": spec.get("nodeName") or node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
    raise EnvError(f"unsupported fieldRef {path!r}")


def resource_field_ref(container: dict[str, Any], ref: dict[str, Any], node_alloc: dict[str, int]) -> str:
    """limits.cpu / requests.memory ... of a container; limits default to node allocatable."""
    res = container.get("resources") or {}
    which, _, name = ref.get("resource", "").partition(".")
    raw = (res.get(which) or {}).get(name)
    divisor = quantity.parse(ref.get("divisor") or "1")
    if raw is None:
        if which == "limits":
            v = quantity.parse(node_alloc.get(name + ("_milli" if name == "cpu" else ""), 0))
            v = v / 1000 if name == "cpu" else v
        else:
            v = quantity.parse(0)
    else:
        v = quantity.parse(raw)
    out = v / divisor if divisor else v
    return str(-((-out.numerator) // out.denominator))


def _decode(kind: str, obj: dict[str, Any], key: str) -> str | None:
    if kind == "Secret":
        if key in (obj.get("data") or {}):
            return base64.b64decode(obj["data"][key]).decode("utf-8", "replace")
        return (obj.get("stringData") or {}).get(key)
    if key in (obj.get("data") or {}):
        return obj["data"][key]
    if key in (obj.get("binaryData") or {}):
        return base64.b64decode(obj["binaryData"][key]).decode("utf-8", "replace")
    return None


def _all(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    keys = list((obj.get("data") or {}).keys()) + list((obj.get("binaryData" if kind == "ConfigMap" else "stringData")
                                                        or {}).keys())
    return {k: v for k in keys if (v := _decode(kind, obj, k)) is not None}


def resolve(
    pod: dict[str, Any],
    container: dict[str, Any],
    lookup: Lookup,
    *,
    pod_ip: str = "",
    node_name: str = "",
    host_ip: str = "",
    node_alloc: dict[str, int] | None = None,
) -> list[tuple[str, str]]:
    """The container's environment in order (envFrom first, then env, later wins)."""
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = src.get(key)
            if not ref:
                continue
            obj = lookup(kind, ns, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f'{kind.lower()} "{ref.get("name")}" not found')
            for k, v in _all(kind, obj).items():
                env[prefix + k] = v
    for e in container.get("env") or []:
        name = e.get("name", "")
        if "value" in e or not e.get("valueFrom"):
            env[name] = expand(str(e.get("value", "")), env)
            continue
        vf = e["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_ref(pod, vf["fieldRef"].get("fieldPath", ""), pod_ip, node_name, host_ip)
        elif "resourceFieldRef" in vf:
            env[name] = resource_field_ref(container, vf["resourceFieldRef"], node_alloc or {})
        else:
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                ref = vf.get(key)
                if not ref:
                    continue
                obj = lookup(kind, ns, ref.get("name", ""))
                val = _decode(kind, obj, ref.get("key", "")) if obj is not None else None
                if val is None:
                    if ref.get("optional"):
                        break
                    what = "not found" if obj is None else f'has no key "{ref.get("key")}"'
                    raise EnvError(f'{kind.lower()} "{ref.get("name")}" {what}')
                env[name] = val
    return list(env.items())


def command_and_args(container: dict[str, Any], env: dict[str, str]) -> tuple[list[str], list[str]]:
    """command/args with $(VAR) expanded (an image's ENTRYPOINT/CMD apply when empty)."""
    return ([expand(s, env) for s in container.get("command") or []],
            [expand(s, env) for s in container.get("args") or []])
