"""What a freshly forked child of the shim does before it becomes the container.

Runs in the child between fork and execve, so it must not return on error:
every failure is reported as one JSON line on the error pipe and the child
exits 127 (the shim turns that into a StartError). Order matters and follows
runc: join/unshare namespaces → join cgroups → build the root (mounts,
devices, sysctls, pivot_root, masks) → user, capabilities, no_new_privs →
seccomp right before execve, so the filter never sees our setup calls. The one
exception is also runc's: without no_new_privs the kernel wants CAP_SYS_ADMIN
to install a filter, so it goes in before the capabilities are dropped.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import stat
import termios
import warnings  # noqa: F401 - os.execvpe imports it lazily, which fails once we are inside the new root

from cri.shim import linux as L

_NS_FLAGS = {"net": L.CLONE_NEWNET, "ipc": L.CLONE_NEWIPC, "uts": L.CLONE_NEWUTS, "mnt": L.CLONE_NEWNS}


def fail(errfd: int, message: str, code: int = 127) -> None:
    try:
        os.write(errfd, json.dumps({"error": message}).encode())
    finally:
        os._exit(code)


def secure_join(root: str, path: str) -> str:
    """Resolve `path` inside `root`, following symlinks as if root were '/'.

    An image can contain a symlink such as /etc -> /host/etc; resolving it on
    the host would let a mount escape the rootfs, so every link is resolved
    relative to the container root.
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        cur = root + "/" + "/".join(resolved + [part])
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 40:
                raise OSError(errno.ELOOP, "too many symlinks", path)
            target = os.readlink(cur)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return root + "/" + "/".join(resolved)


def _ensure_target(target: str, is_dir: bool) -> None:
    if os.path.lexists(target):
        return
    if is_dir:
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _do_mount(root: str, m: dict) -> None:
    target = secure_join(root, m["dest"])
    kind = m["type"]
    flags = m.get("flags", 0)
    if kind == "bind":
        src = m["source"]
        try:
            is_dir = os.path.isdir(src)
        except OSError:
            is_dir = True
        if not os.path.exists(src):
            raise OSError(errno.ENOENT, f"bind mount source {src!r} does not exist", src)
        _ensure_target(target, is_dir)
        L.mount(src, target, None, L.MS_BIND | L.MS_REC)
        if m.get("ro") or flags:
            L.mount(None, target, None, L.MS_BIND | L.MS_REMOUNT | flags | (L.MS_RDONLY if m.get("ro") else 0))
        prop = m.get("propagation", 0)
        if prop:
            L.mount(None, target, None, prop)
    else:
        _ensure_target(target, True)
        L.mount(m.get("source", kind), target, kind, flags, m.get("data") or None)


def setup_rootfs(spec: dict) -> None:
    root = spec["rootfs"]
    # Nothing we mount may propagate back to the host, but host unmounts (an
    # emptied hostPath, a removed netns) should reach us: rslave, like runc.
    L.mount(None, "/", None, L.MS_REC | L.MS_SLAVE)
    L.mount(root, root, None, L.MS_BIND | L.MS_REC)
    for m in spec.get("mounts", []):
        _do_mount(root, m)
    dev = root + "/dev"
    old_umask = os.umask(0)  # device modes exactly as given, without a chmod each
    for d in spec.get("devices", []):
        path = dev + "/" + d["name"]
        if d.get("bind"):
            _ensure_target(path, False)
            L.mount(d["bind"], path, None, L.MS_BIND)
            continue
        with _suppress_exists():
            os.mknod(path, stat.S_IFCHR | d.get("mode", 0o666), os.makedev(d["major"], d["minor"]))
    os.umask(old_umask)
    for src, name in spec.get("symlinks", []):
        with _suppress_exists():
            os.symlink(src, root + name)
    for k, v in spec.get("sysctls", {}).items():
        # /proc of the new root, before /proc/sys becomes read-only.
        with open(root + "/proc/sys/" + k.replace(".", "/"), "w") as f:
            f.write(str(v))
    cwd = spec["process"].get("cwd") or "/"
    os.makedirs(secure_join(root, cwd), mode=0o755, exist_ok=True)
    os.chdir(root)
    L.pivot_root(".", ".")
    L.umount(".", L.MNT_DETACH)
    os.chdir("/")
    for p in spec.get("masked_paths", []):
        try:
            if os.path.isdir(p):
                L.mount("tmpfs", p, "tmpfs", L.MS_RDONLY)
            else:
                L.mount("/dev/null", p, None, L.MS_BIND)
        except FileNotFoundError:
            pass
    for p in spec.get("readonly_paths", []):
        try:
            L.mount(p, p, None, L.MS_BIND | L.MS_REC)
            L.mount(None, p, None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)
        except FileNotFoundError:
            pass
    if spec.get("readonly_rootfs"):
        L.mount(None, "/", None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY)


class _suppress_exists:
    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: object, val: object, tb: object) -> bool:
        return isinstance(val, FileExistsError)


def join_cgroups(files: list[str]) -> None:
    """Move the calling (single-threaded) process into each cgroup: write "0" to its join file."""
    for path in files:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


def exec_process(proc: dict, errfd: int, seccomp_bpf: bytes | None) -> None:
    """Drop to the container's user and privileges, install seccomp, execve. Never returns."""
    caps = proc.get("caps", 0)
    last_cap = proc.get("last_cap", 40)
    early = seccomp_bpf and not proc.get("no_new_privs")
    if early:
        # Without no_new_privs the kernel only accepts a filter from a task holding
        # CAP_SYS_ADMIN, so (like runc) load it before dropping privileges; the
        # remaining setup calls (capset, setuid, prctl, execve) are in every sane profile.
        L.load_seccomp_bpf(seccomp_bpf)
    for cap in range(last_cap + 1):
        if not caps >> cap & 1:
            try:
                L.prctl(L.PR_CAPBSET_DROP, cap)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
    uid, gid = proc.get("uid", 0), proc.get("gid", 0)
    L.prctl(L.PR_SET_KEEPCAPS, 1)
    os.setgroups(proc.get("groups", []))
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    L.capset(caps, caps, caps)
    L.prctl(L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_CLEAR_ALL)
    ambient = proc.get("ambient", 0) & caps
    for cap in range(last_cap + 1):
        if ambient >> cap & 1:
            L.prctl(L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_RAISE, cap)
    if proc.get("no_new_privs"):
        L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
    os.umask(proc.get("umask", 0o022))  # the OCI/Docker default, whatever the shim inherited
    cwd = proc.get("cwd") or "/"
    try:
        os.chdir(cwd)
    except OSError as e:
        fail(errfd, f"chdir to cwd ({cwd!r}) set in config.json failed: {e.strerror}")
    env: dict[str, str] = {}
    for kv in proc.get("env", []):
        k, _, v = kv.partition("=")
        env[k] = v
    args = proc["args"]
    if seccomp_bpf and not early:
        L.load_seccomp_bpf(seccomp_bpf)
    try:
        os.execvpe(args[0], args, env)
    except OSError as e:
        if e.errno == errno.ENOENT and "/" not in args[0]:
            msg = f'exec: "{args[0]}": executable file not found in $PATH'
        else:
            msg = f'exec: "{args[0]}": {os.strerror(e.errno or 0).lower()}'
        fail(errfd, msg, 126 if e.errno in (errno.EACCES, errno.ENOEXEC) else 127)


def run_container(spec: dict, stdio: tuple[int, int, int], errfd: int, joined: bool = False) -> None:
    """Child side of a container spawn (pid namespace was chosen by the parent before fork).

    `joined`: a warm child already entered the pod's namespaces (see warm_child)."""
    try:
        _stdio(stdio)
        bpf = _read_bpf(spec["process"].get("seccomp_bpf"))
        if not joined:
            for kind, path in spec.get("join", {}).items():
                L.setns_path(path, _NS_FLAGS[kind])
        flags = L.CLONE_NEWNS
        for kind in spec.get("unshare", []):
            flags |= _NS_FLAGS[kind]
        L.unshare(flags)
        if spec.get("hostname"):
            L.sethostname(spec["hostname"])
        join_cgroups(spec.get("cgroup_join", []))
        setup_rootfs(spec)
        if spec.get("oom_score_adj") is not None:
            _set_oom_score_adj(spec["oom_score_adj"])
        os.closerange(3, errfd)
        os.closerange(errfd + 1, 65536)
        exec_process(spec["process"], errfd, bpf)
    except BaseException as e:  # noqa: BLE001 - everything must reach the error pipe
        fail(errfd, _describe(e))


def warm_child(sock: int, join: dict[str, str]) -> None:
    """A child forked ahead of time for the pod's next container: fork and the setns calls are
    already paid when the spawn request comes. The mount namespace is only unshared once the
    spec arrives, so the container still sees rootfs mounts made after we were forked.

    Protocol on `sock`: 8-byte length + JSON spec, with stdin, stdout, stderr and the error
    pipe as SCM_RIGHTS on the first bytes. EOF means "not needed": exit quietly.
    """
    try:
        reset_signals()
        os.closerange(3, sock)
        os.closerange(sock + 1, 65536)
        for kind, path in join.items():
            L.setns_path(path, _NS_FLAGS[kind])
        msg, fds, _, _ = _socket_recvmsg(sock)
        if not msg:
            os._exit(0)
        size = int.from_bytes(msg[:8], "little")
        data = bytearray(msg[8:])
        while len(data) < size:
            chunk = os.read(sock, size - len(data))
            if not chunk:
                os._exit(1)
            data += chunk
        os.close(sock)
        spec = json.loads(bytes(data))
    except BaseException:  # noqa: BLE001 - nobody to report to yet; the shim sees us exit
        os._exit(1)
    for fd in fds:
        os.set_inheritable(fd, False)  # SCM_RIGHTS fds arrive without O_CLOEXEC; the error pipe needs it
    run_container(spec, (fds[0], fds[1], fds[2]), fds[3], joined=True)
    os._exit(127)


def _socket_recvmsg(fd: int) -> tuple[bytes, list[int], int, object]:
    import _socket
    import array
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, os.dup(fd))
    try:
        msg, anc, flags, addr = s.recvmsg(1 << 20, _socket.CMSG_SPACE(4 * 4))
    finally:
        s.close()
    fds: list[int] = []
    for level, typ, cdata in anc:
        if level == _socket.SOL_SOCKET and typ == _socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(cdata[: len(cdata) - len(cdata) % a.itemsize])
            fds.extend(a)
    return msg, fds, flags, addr


def reset_signals() -> None:
    """Undo what the shim (and CPython) did to signals, or the container would inherit it:
    SIGPIPE and SIGXFSZ ignored by Python at start-up stay ignored across execve, and the
    shim's handlers must never run in a child. The caller unblocks signals afterwards."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def _stdio(stdio: tuple[int, int, int]) -> None:
    reset_signals()
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    os.setsid()
    for i, fd in enumerate(stdio):
        os.dup2(fd, i)
    if os.isatty(0):
        # a pty handed in by a streaming exec becomes our controlling terminal (job control, ^C)
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_exec(spec: dict, target_pid: int, stdio: tuple[int, int, int], errfd: int) -> None:
    """Child side of exec: enter a running container's namespaces, cgroups and root."""
    try:
        _stdio(stdio)
        bpf = _read_bpf(spec["process"].get("seccomp_bpf"))
        join_cgroups(spec.get("cgroup_join", []))
        for kind in ("ipc", "uts", "net", "mnt"):
            path = f"/proc/{target_pid}/ns/{kind}"
            if os.readlink(path) != os.readlink(f"/proc/self/ns/{kind}"):
                L.setns_path(path, _NS_FLAGS[kind])
        os.closerange(3, errfd)
        os.closerange(errfd + 1, 65536)
        exec_process(spec["process"], errfd, bpf)
    except BaseException as e:  # noqa: BLE001
        fail(errfd, _describe(e))


def _read_bpf(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def _set_oom_score_adj(value: int) -> None:
    # Without CAP_SYS_RESOURCE the kernel refuses to lower the score; keep
    # the inherited one rather than failing the container.
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except PermissionError:
        pass


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError):
        return str(e.args[1] if len(e.args) > 1 else e) + (f" ({e.filename})" if e.filename else "")
    return f"{type(e).__name__}: {e}"
