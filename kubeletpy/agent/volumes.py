"""Pod volumes materialised on the host, then handed to CRI as bind mounts.

Layout (the kubelet's): <root>/pods/<uid>/volumes/<plugin>/<name>. emptyDir is a
directory (or a tmpfs with `medium: Memory`, sized by sizeLimit); configMap, secret,
downwardAPI and projected volumes are files written atomically and refreshed on every
sync, secrets on a tmpfs so they never touch the disk; hostPath is the host path itself
(created for the *OrCreate types, checked for the others). Teardown unmounts and deletes
everything under the pod directory.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubeletpy.agent import envvars, quantity

Lookup = Callable[[str, str, str], "dict[str, Any] | None"]


class VolumeError(Exception):
    """A volume cannot be set up (missing ConfigMap, bad hostPath type): event FailedMount."""


def _plugin(vol: dict[str, Any]) -> str:
    for k in ("emptyDir", "hostPath", "configMap", "secret", "downwardAPI", "projected"):
        if k in vol:
            return k
    return ""


def _dir_name(plugin: str) -> str:
    return {"emptyDir": "kubernetes.io~empty-dir", "configMap": "kubernetes.io~configmap",
            "secret": "kubernetes.io~secret", "downwardAPI": "kubernetes.io~downward-api",
            "projected": "kubernetes.io~projected"}.get(plugin, plugin)


def is_mounted(path: Path) -> bool:
    target = str(path)
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == target for line in f)
    except OSError:
        return False


def _mount_tmpfs(path: Path, size: int) -> None:
    if is_mounted(path):
        return
    opts = "mode=0777" + (f",size={size}" if size else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True, capture_output=True)


def _write_files(target: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Make `target` hold exactly `files` (relative path -> (content, mode)); rewrite only
    what changed, each file atomically, so a container reading during an update never
    sees half a file."""
    target.mkdir(parents=True, exist_ok=True)
    for rel, (data, mode) in files.items():
        p = target / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            if p.read_bytes() == data and stat.S_IMODE(p.stat().st_mode) == mode:
                continue
        except OSError:
            pass
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    keep = {target / rel for rel in files}
    for dirpath, _, names in os.walk(target, topdown=False):
        for n in names:
            fp = Path(dirpath) / n
            if fp not in keep:
                fp.unlink(missing_ok=True)


def _key_files(kind: str, obj: dict[str, Any], items: list[dict[str, Any]] | None, default_mode: int,
               optional: bool, name: str) -> dict[str, tuple[bytes, int]]:
    data: dict[str, bytes] = {}
    for k, v in (obj.get("data") or {}).items():
        data[k] = base64.b64decode(v) if kind == "Secret" else str(v).encode()
    for k, v in (obj.get("binaryData") or {}).items():
        data[k] = base64.b64decode(v)
    for k, v in (obj.get("stringData") or {}).items():
        data.setdefault(k, str(v).encode())
    out: dict[str, tuple[bytes, int]] = {}
    if items:
        for it in items:
            key = it.get("key", "")
            if key not in data:
                if optional:
                    continue
                raise VolumeError(f'configmap/secret "{name}": no key "{key}"')
            out[it.get("path") or key] = (data[key], int(it.get("mode") or default_mode))
    else:
        out = {k: (v, default_mode) for k, v in data.items()}
    return out


def _downward_files(pod: dict[str, Any], items: list[dict[str, Any]], default_mode: int,
                    containers: dict[str, dict[str, Any]]) -> dict[str, tuple[bytes, int]]:
    md = pod.get("metadata") or {}
    out: dict[str, tuple[bytes, int]] = {}
    for it in items:
        mode = int(it.get("mode") or default_mode)
        if "fieldRef" in it:
            fp = it["fieldRef"].get("fieldPath", "")
            if fp in ("metadata.labels", "metadata.annotations"):
                d = md.get(fp.split(".")[1]) or {}
                text = "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
            else:
                text = envvars.field_ref(pod, fp, "", "")
        elif "resourceFieldRef" in it:
            ref = it["resourceFieldRef"]
            text = envvars.resource_field_ref(containers.get(ref.get("containerName", ""), {}), ref, {})
        else:
            continue
        out[it.get("path", "")] = (text.encode(), mode)
    return out


class VolumeManager:
    def __init__(self, pods_dir: Path, lookup: Lookup) -> None:
        self.pods_dir = pods_dir
        self.lookup = lookup

    def pod_dir(self, uid: str) -> Path:
        return self.pods_dir / uid

    def setup(self, pod: dict[str, Any]) -> dict[str, Path]:
        """Materialise (or refresh) every volume; volume name -> host path."""
        md = pod.get("metadata") or {}
        uid, ns = md.get("uid", ""), md.get("namespace") or "default"
        spec = pod.get("spec") or {}
        containers = {c.get("name", ""): c for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])}
        out: dict[str, Path] = {}
        for vol in spec.get("volumes") or []:
            name, plugin = vol.get("name", ""), _plugin(vol)
            if not plugin:
                raise VolumeError(f'volume "{name}": unsupported volume type')
            if plugin == "hostPath":
                out[name] = self._host_path(vol["hostPath"])
                continue
            target = self.pod_dir(uid) / "volumes" / _dir_name(plugin) / name
            target.mkdir(parents=True, exist_ok=True)
            out[name] = target
            src = vol[plugin] or {}
            if plugin == "emptyDir":
                if src.get("medium") == "Memory":
                    _mount_tmpfs(target, quantity.value(src.get("sizeLimit")) if src.get("sizeLimit") else 0)
                else:
                    os.chmod(target, 0o777)
            elif plugin in ("configMap", "secret"):
                kind = "ConfigMap" if plugin == "configMap" else "Secret"
                ref = src.get("name") if plugin == "configMap" else src.get("secretName")
                obj = self.lookup(kind, ns, ref or "")
                mode = int(src.get("defaultMode") or 0o644)
                if obj is None:
                    if not src.get("optional"):
                        raise VolumeError(f'{kind.lower()} "{ref}" not found')
                    obj = {}
                if plugin == "secret":
                    _mount_tmpfs(target, 0)
                _write_files(target, _key_files(kind, obj, src.get("items"), mode, bool(src.get("optional")),
                                                ref or ""))
            elif plugin == "downwardAPI":
                _write_files(target, _downward_files(pod, src.get("items") or [], int(src.get("defaultMode") or 0o644),
                                                     containers))
            elif plugin == "projected":
                mode = int(src.get("defaultMode") or 0o644)
                files: dict[str, tuple[bytes, int]] = {}
                for s in src.get("sources") or []:
                    for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                        if key in s:
                            r = s[key] or {}
                            obj = self.lookup(kind, ns, r.get("name", ""))
                            if obj is None:
                                if not r.get("optional"):
                                    raise VolumeError(f'{kind.lower()} "{r.get("name")}" not found')
                                continue
                            files.update(_key_files(kind, obj, r.get("items"), mode, bool(r.get("optional")),
                                                    r.get("name", "")))
                    if "downwardAPI" in s:
                        files.update(_downward_files(pod, (s["downwardAPI"] or {}).get("items") or [], mode,
                                                     containers))
                _write_files(target, files)
        return out

    @staticmethod
    def _host_path(hp: dict[str, Any]) -> Path:
        p = Path(hp.get("path", ""))
        t = hp.get("type") or ""
        if t == "DirectoryOrCreate":
            p.mkdir(parents=True, exist_ok=True, mode=0o755)
        elif t == "FileOrCreate":
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch(exist_ok=True)
        checks = {"Directory": p.is_dir, "File": p.is_file, "Socket": lambda: p.is_socket(),
                  "CharDevice": p.is_char_device, "BlockDevice": p.is_block_device}
        if t in checks and not checks[t]():
            raise VolumeError(f"hostPath type check failed: {p} is not a {t}")
        return p

    def teardown(self, uid: str) -> None:
        """Unmount every tmpfs under the pod directory, then delete it."""
        d = self.pod_dir(uid)
        if not d.exists():
            return
        prefix = str(d) + "/"
        with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if line.split()[4].startswith(prefix)]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)

    def known_pods(self) -> list[str]:
        try:
            return [p.name for p in self.pods_dir.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []
