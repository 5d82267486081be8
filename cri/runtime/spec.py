"""Turn a CRI ContainerConfig + image config + sandbox into the spec the shim executes.

All policy lives here, in the runtime (Kubernetes command/args rules, user and
group resolution through the image's /etc/passwd and /etc/group, the default
capability set, masked paths, which sysctls are namespaced); the shim only
carries the result out. That keeps the shim small and the policy testable.
"""

from __future__ import annotations

import os
import re

from cri.runtime.errors import InvalidArgument
from cri.runtime.types import ContainerConfig, Mount, MountPropagation, NamespaceMode
from cri.shim import linux as L
from cri.shim.spawn import secure_join

CAPS = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
]  # fmt: skip
CAP_NUM = {name: i for i, name in enumerate(CAPS)}
# containerd's (and Docker's) default set for unprivileged containers.
DEFAULT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
                "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"]
# runc / containerd defaults.
MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                "/sys/devices/virtual/powercap", "/proc/interrupts"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
DEVICES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
SYMLINKS = [("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"), ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"), ("pts/ptmx", "/dev/ptmx"), ("/proc/kcore", "/dev/core")]
_IPC_SYSCTLS = {"kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
                "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni"}
_SYSCTL_RE = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$")


def existing(paths: list[str]) -> list[str]:
    """Drop masked paths this kernel lacks (the container's /proc and /sys show the same
    kernel as ours), so the child doesn't spend a failing mount(2) on each at every start."""
    return [p for p in paths if not p.startswith(("/proc/", "/sys/")) or os.path.lexists(p)]


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPS) - 1


def own_bounding_set() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return (1 << (last_cap() + 1)) - 1


def _cap_name(c: str) -> str:
    n = c.upper()
    n = n[4:] if n.startswith("CAP_") else n
    if n != "ALL" and n not in CAP_NUM:
        raise InvalidArgument(f"unknown capability {c!r}")
    return n


def capabilities(privileged: bool, add: list[str], drop: list[str]) -> set[str]:
    """Default set + adds − drops; "ALL" works on either side, as in containerd."""
    if privileged:
        return set(CAPS[: last_cap() + 1])
    add_n, drop_n = [_cap_name(c) for c in add], [_cap_name(c) for c in drop]
    added = {c for c in add_n if c != "ALL"}
    if "ALL" in add_n:
        caps = set(CAPS[: last_cap() + 1])
    elif "ALL" in drop_n:
        caps = set(added)  # drop ALL, then add back only what was asked for
    else:
        caps = set(DEFAULT_CAPS) | added
    caps -= {c for c in drop_n if c != "ALL"}
    return caps


def cap_mask(caps: set[str]) -> int:
    m = 0
    for c in caps:
        m |= 1 << CAP_NUM[c]
    return m


def resolve_args(cfg: ContainerConfig, image_cfg: dict) -> list[str]:
    """Kubernetes rules: command replaces Entrypoint (and drops Cmd); args replace Cmd."""
    entrypoint = list(image_cfg.get("Entrypoint") or [])
    cmd = list(image_cfg.get("Cmd") or [])
    if cfg.command:
        argv = list(cfg.command) + list(cfg.args)
    elif cfg.args:
        argv = entrypoint + list(cfg.args)
    else:
        argv = entrypoint + cmd
    if not argv:
        raise InvalidArgument("no command specified: the container config and the image give none")
    return argv


def resolve_env(cfg: ContainerConfig, image_cfg: dict) -> list[str]:
    env: dict[str, str] = {}
    for kv in image_cfg.get("Env") or []:
        k, _, v = kv.partition("=")
        env[k] = v
    for kv in cfg.envs:
        if not kv.key:
            raise InvalidArgument("environment variable with an empty name")
        env[kv.key] = kv.value
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return [f"{k}={v}" for k, v in env.items()]


def _read_db(rootfs: str, name: str) -> list[list[str]]:
    try:
        with open(secure_join(rootfs, f"/etc/{name}")) as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def resolve_user(rootfs: str, image_user: str, run_as_user: int | None, run_as_username: str,
                 run_as_group: int | None, supplemental: list[int]) -> tuple[int, int, list[int], str]:
    """→ (uid, gid, additional gids, home). Names resolve through the image's own files."""
    passwd, group = _read_db(rootfs, "passwd"), _read_db(rootfs, "group")
    user_part, _, group_part = (image_user or "").partition(":")
    if run_as_user is not None:
        user_part, group_part = str(run_as_user), group_part if run_as_group is None else ""
    elif run_as_username:
        user_part = run_as_username
    if run_as_user is not None and run_as_user < 0:
        raise InvalidArgument(f"run_as_user must not be negative (got {run_as_user})")
    entry = None
    if not user_part:
        user_part = "0"
    if user_part.isdigit():
        uid = int(user_part)
        entry = next((p for p in passwd if len(p) >= 7 and p[2] == user_part), None)
    else:
        entry = next((p for p in passwd if len(p) >= 7 and p[0] == user_part), None)
        if entry is None:
            raise InvalidArgument(f"unable to find user {user_part}: no matching entries in passwd file")
        uid = int(entry[2])
    gid = int(entry[3]) if entry else 0
    home = entry[5] if entry else "/"
    if run_as_group is not None:
        if run_as_group < 0:
            raise InvalidArgument(f"run_as_group must not be negative (got {run_as_group})")
        gid = run_as_group
    elif group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            g = next((g for g in group if len(g) >= 3 and g[0] == group_part), None)
            if g is None:
                raise InvalidArgument(f"unable to find group {group_part}: no matching entries in group file")
            gid = int(g[2])
    groups: list[int] = []
    if entry is not None:
        for g in group:
            if len(g) >= 4 and entry[0] in g[3].split(",") and int(g[2]) not in groups:
                groups.append(int(g[2]))
    for g in supplemental:
        if g < 0:
            raise InvalidArgument(f"supplemental group must not be negative (got {g})")
        if g not in groups:
            groups.append(g)
    return uid, gid, groups, home


def check_sysctl(name: str, value: str, host_net: bool, host_ipc: bool) -> None:
    """Only namespaced sysctls are safe to set from a pod (the kubelet's "safe + unsafe namespaced" set)."""
    if not _SYSCTL_RE.match(name):
        raise InvalidArgument(f"invalid sysctl name {name!r}")
    if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
        if host_ipc:
            raise InvalidArgument(f"sysctl {name} is not allowed with host IPC (it would change the host)")
        return
    if name.startswith("net."):
        if host_net:
            raise InvalidArgument(f"sysctl {name} is not allowed with host network (it would change the host)")
        return
    if name in ("kernel.hostname", "kernel.domainname"):
        raise InvalidArgument(f"sysctl {name}: set the hostname through the pod config")
    raise InvalidArgument(f"sysctl {name} is not namespaced: it would change the whole host")


def validate_mount(m: Mount) -> None:
    if not m.container_path.startswith("/"):
        raise InvalidArgument(f"mount container_path must be absolute, got {m.container_path!r}")
    if ".." in m.container_path.split("/"):
        raise InvalidArgument(f"mount container_path must not contain '..': {m.container_path!r}")
    if m.container_path.rstrip("/") in ("", "/proc", "/dev", "/sys"):
        raise InvalidArgument(f"cannot mount over {m.container_path or '/'}")
    if m.empty_dir:
        if "/" in m.empty_dir or m.empty_dir in (".", ".."):
            raise InvalidArgument(f"invalid empty_dir name {m.empty_dir!r}")
        return
    if not m.host_path.startswith("/"):
        raise InvalidArgument(f"mount host_path must be absolute, got {m.host_path!r}")
    if not os.path.exists(m.host_path):
        raise InvalidArgument(f"mount host_path {m.host_path!r} does not exist")
    if m.propagation not in tuple(MountPropagation):
        raise InvalidArgument(f"invalid mount propagation {m.propagation!r}")


def propagation_flag(p: MountPropagation) -> int:
    return {MountPropagation.PROPAGATION_PRIVATE: L.MS_PRIVATE,
            MountPropagation.PROPAGATION_HOST_TO_CONTAINER: L.MS_SLAVE | L.MS_REC,
            MountPropagation.PROPAGATION_BIDIRECTIONAL: L.MS_SHARED | L.MS_REC}[MountPropagation(p)]


def base_mounts(privileged: bool, shm_source: str, host_ipc: bool) -> tuple[list[dict], list[dict]]:
    """The standard container mounts (runc's defaults) and /dev device nodes."""
    nsd = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC
    mounts: list[dict] = [{"dest": "/proc", "type": "proc", "source": "proc", "flags": nsd}]
    if privileged:
        mounts.append({"dest": "/dev", "type": "bind", "source": "/dev"})
        devices: list[dict] = []
    else:
        mounts.append({"dest": "/dev", "type": "tmpfs", "source": "tmpfs",
                       "flags": L.MS_NOSUID | L.MS_STRICTATIME, "data": "mode=755,size=65536k"})
        devices = [{"name": n, "major": a, "minor": b, "mode": 0o666} for n, a, b in DEVICES]
    mounts.append({"dest": "/dev/pts", "type": "devpts", "source": "devpts", "flags": L.MS_NOSUID | L.MS_NOEXEC,
                   "data": "newinstance,ptmxmode=0666,mode=0620,gid=5"})
    if shm_source:
        mounts.append({"dest": "/dev/shm", "type": "bind", "source": shm_source})
    else:
        mounts.append({"dest": "/dev/shm", "type": "tmpfs", "source": "shm", "flags": nsd,
                       "data": "mode=1777,size=65536k"})
    if not host_ipc:
        mounts.append({"dest": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "flags": nsd})
    mounts.append({"dest": "/sys", "type": "sysfs", "source": "sysfs",
                   "flags": nsd | (0 if privileged else L.MS_RDONLY)})
    return mounts, devices


def user_mounts(mounts: list[Mount], empty_dir_root: str) -> list[dict]:
    out = []
    for m in mounts:
        src = m.host_path
        if m.empty_dir:
            src = os.path.join(empty_dir_root, m.empty_dir)
            os.makedirs(src, mode=0o777, exist_ok=True)
            os.chmod(src, 0o777)
        out.append({"dest": m.container_path, "type": "bind", "source": src, "ro": bool(m.readonly),
                    "propagation": propagation_flag(m.propagation)})
    return out


def namespace_mode(v: int) -> NamespaceMode:
    try:
        return NamespaceMode(v)
    except ValueError:
        raise InvalidArgument(f"invalid namespace mode {v!r}") from None
