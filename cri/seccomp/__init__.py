"""seccomp profiles: choose (RuntimeDefault / Unconfined / Localhost), load, compile to BPF.

    profile = resolve_profile(kind, localhost_ref)        # None means unconfined
    bpf = compile_profile(profile, caps={"CAP_CHOWN", ...})  # bytes for the shim to install

Accepted selectors are the CRI SecurityProfile message (type + localhost_ref)
and the older annotation-style strings: "", "unconfined", "runtime/default",
"docker/default", "localhost/<absolute path>".
"""

from __future__ import annotations

import json
import os
import platform

from cri.seccomp import libseccomp as S
from cri.seccomp.default_profile import PROFILE as DEFAULT_PROFILE
from cri.seccomp.libseccomp import SeccompError

__all__ = ["DEFAULT_PROFILE", "SeccompError", "compile_profile", "parse_selector", "resolve_profile"]

_ARCH_NAMES = {
    "SCMP_ARCH_X86": "x86", "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_AARCH64": "aarch64", "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390X": "s390x", "SCMP_ARCH_RISCV64": "riscv64",
}
# Docker's "arches" include filter uses Go architecture names.
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x"}


def parse_selector(kind: str | int | None, localhost_ref: str = "") -> tuple[str, str]:
    """Normalise every accepted form to ("runtime_default"|"unconfined"|"localhost", path).

    `kind` is the CRI ProfileType (0 RuntimeDefault, 1 Unconfined, 2 Localhost), its name,
    or one of the legacy strings. An empty legacy string means unconfined, as in the kubelet.
    """
    if isinstance(kind, int):
        kind = {0: "RuntimeDefault", 1: "Unconfined", 2: "Localhost"}.get(kind, str(kind))
    k = (kind or "").strip()
    if k in ("RuntimeDefault", "runtime/default", "docker/default"):
        return "runtime_default", ""
    if k in ("Unconfined", "unconfined", ""):
        return "unconfined", ""
    if k == "Localhost":
        path = localhost_ref
    elif k.startswith("localhost/"):
        path = k[len("localhost/"):]
    else:
        raise ValueError(f"unknown seccomp profile {kind!r} (want RuntimeDefault, Unconfined, "
                         "Localhost, runtime/default, docker/default, unconfined or localhost/<path>)")
    if not path.startswith("/"):
        raise ValueError(f"seccomp localhost profile must be an absolute path, got {path!r}")
    return "localhost", path


def resolve_profile(kind: str | int | None, localhost_ref: str = "") -> dict | None:
    mode, path = parse_selector(kind, localhost_ref)
    if mode == "unconfined":
        return None
    if mode == "runtime_default":
        return DEFAULT_PROFILE
    try:
        with open(path) as f:
            prof = json.load(f)
    except OSError as e:
        raise ValueError(f"seccomp profile {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"seccomp profile {path} is not valid JSON: {e}") from None
    if not isinstance(prof, dict) or "defaultAction" not in prof:
        raise ValueError(f"seccomp profile {path} has no defaultAction")
    return prof


def _action(name: str, errno_ret: int | None, default_errno: int) -> int:
    if name == "SCMP_ACT_ALLOW":
        return S.ACT_ALLOW
    if name == "SCMP_ACT_ERRNO":
        return S.act_errno(default_errno if errno_ret is None else errno_ret)
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return S.ACT_KILL_THREAD
    if name == "SCMP_ACT_KILL_PROCESS":
        return S.ACT_KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return S.ACT_TRAP
    if name == "SCMP_ACT_LOG":
        return S.ACT_LOG
    if name == "SCMP_ACT_TRACE":
        return S.act_trace(default_errno if errno_ret is None else errno_ret)
    raise ValueError(f"unsupported seccomp action {name!r}")


def _kernel_at_least(version: str) -> bool:
    want = [int(x) for x in version.split(".")[:2]]
    have = [int("".join(c for c in x if c.isdigit()) or 0) for x in platform.release().split(".")[:2]]
    return have >= want


def _selected(rule: dict, caps: set[str], arch: str) -> bool:
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if inc.get("caps") and not set(inc["caps"]) <= caps:
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if inc.get("minKernel") and not _kernel_at_least(inc["minKernel"]):
        return False
    if exc.get("caps") and set(exc["caps"]) & caps:
        return False
    if exc.get("arches") and arch in exc["arches"]:
        return False
    return not (exc.get("minKernel") and _kernel_at_least(exc["minKernel"]))


def compile_profile(profile: dict, caps: set[str]) -> bytes:
    """Docker/OCI JSON profile → BPF program for this host's architecture (libseccomp does the BPF)."""
    machine = platform.machine()
    go_arch = _GO_ARCH.get(machine, machine)
    default_errno = int(profile.get("defaultErrnoRet", 1))
    default = _action(profile["defaultAction"], profile.get("defaultErrnoRet"), default_errno)
    with S.Filter(default) as flt:
        arches: list[str] = list(profile.get("architectures") or [])
        for m in profile.get("archMap") or []:
            if _ARCH_NAMES.get(m.get("architecture")) == machine:
                arches += [m["architecture"], *m.get("subArchitectures", [])]
        for a in arches:
            if a in _ARCH_NAMES:
                flt.add_arch(_ARCH_NAMES[a])
        for rule in profile.get("syscalls") or []:
            if not _selected(rule, caps, go_arch):
                continue
            names = list(rule.get("names") or []) + ([rule["name"]] if rule.get("name") else [])
            action = _action(rule["action"], rule.get("errnoRet"), default_errno)
            args = []
            for a in rule.get("args") or []:
                if a["op"] not in S.CMP_OPS:
                    raise ValueError(f"unsupported seccomp comparison {a['op']!r}")
                args.append((int(a["index"]), S.CMP_OPS[a["op"]], int(a["value"]), int(a.get("valueTwo", 0))))
            for name in names:
                flt.add_rule(action, name, args)
        return flt.export_bpf()


def write_bpf(path: str, bpf: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, bpf)
    finally:
        os.close(fd)
