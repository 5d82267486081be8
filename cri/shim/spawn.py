"""What a freshly forked child of the shim does before it becomes the container.

Runs in the child between fork and execve, so it must not return on error:
every failure is reported as one JSON line on the error pipe and the child
exits 127 (the shim turns that into a StartError). Order matters and follows
runc: join/unshare namespaces → join cgroups → build the root (mounts,
devices, sysctls, pivot_root, masks) → user, capabilities, no_new_privs →
seccomp right before execve, so the filter never sees our setup calls. The one
exception is also runc's: without no_new_privs the kernel wants CAP_SYS_ADMIN
to install a filter, so it goes in before the capabilities are dropped.

A staged child (warm_child without fds: `runc create`-like, at container create)
builds the root before the runtime has made the container's cgroups, so it joins
them after the root, as soon as they exist and at the latest at start; either
way before anything of the container runs.
"""

from __future__ import annotations

import _signal  # pthread_sigmask without signal's int→Signals conversion of the old mask (~60 µs a call)
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
    return _secure_join(root, path)[0]


_UNKNOWN = object()  # _secure_join couldn't tell whether the result exists


def _secure_join(root: str, path: str) -> tuple[str, object]:
    """secure_join, plus what it learnt about the result for free: its lstat, None if it
    does not exist, or _UNKNOWN. Saves the child a second stat of every mount target."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    last: object = _UNKNOWN
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            last = _UNKNOWN
            continue
        cur = root + "/" + "/".join(resolved + [part])
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            resolved.append(part)
            last = None
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 40:
                raise OSError(errno.ELOOP, "too many symlinks", path)
            target = os.readlink(cur)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            last = _UNKNOWN
            continue
        resolved.append(part)
        last = st
    return root + "/" + "/".join(resolved), last


def _ensure_target(target: str, is_dir: bool, known: object = _UNKNOWN) -> None:
    """Create a missing mount target; `known` is its lstat (or None) when the caller has it."""
    if known is _UNKNOWN:
        if os.path.lexists(target):
            return
    elif known is not None:
        return
    if is_dir:
        try:
            os.mkdir(target, 0o755)
        except FileExistsError:
            pass
        except FileNotFoundError:
            os.makedirs(target, mode=0o755, exist_ok=True)
        return
    flags = os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        fd = os.open(target, flags, 0o644)
    os.close(fd)


def _do_mount(root: str, m: dict) -> None:
    target, known = _secure_join(root, m["dest"])
    kind = m["type"]
    flags = m.get("flags", 0)
    if kind == "bind":
        src = m["source"]
        try:
            is_dir = stat.S_ISDIR(os.stat(src).st_mode)
        except (OSError, ValueError):
            raise OSError(errno.ENOENT, f"bind mount source {src!r} does not exist", src) from None
        _ensure_target(target, is_dir, known)
        L.mount(src, target, None, L.MS_BIND | L.MS_REC)
        if m.get("ro") or flags:
            L.mount(None, target, None, L.MS_BIND | L.MS_REMOUNT | flags | (L.MS_RDONLY if m.get("ro") else 0))
        prop = m.get("propagation", 0)
        if prop:
            L.mount(None, target, None, prop)
    else:
        _ensure_target(target, True, known)
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
    if cwd.strip("/"):
        cwd_path, known = _secure_join(root, cwd)
        if known is _UNKNOWN or known is None or not stat.S_ISDIR(known.st_mode):  # type: ignore[attr-defined]
            os.makedirs(cwd_path, mode=0o755, exist_ok=True)
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


def join_cgroups(files: list[str] | list[tuple[int, str]]) -> None:
    """Move the calling (single-threaded) process into each cgroup: write "0" to its join file,
    given as a path or as (directory fd, path relative to it) (see _cgroup_parents)."""
    for path in files:
        if isinstance(path, str):
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        else:
            fd = os.open(path[1], os.O_WRONLY | os.O_CLOEXEC, dir_fd=path[0])
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
        _stdio(stdio, reset=not joined)  # a warm child reset its signals when it was forked
        bpf, _ = build_container(spec, joined)
        _exec_container(spec, errfd, bpf)
    except BaseException as e:  # noqa: BLE001 - everything must reach the error pipe
        fail(errfd, _describe(e))


def build_container(spec: dict, joined: bool, cgroups: bool = True) -> tuple[bytes | None, list[tuple[int, str]]]:
    """Namespaces, cgroups, root filesystem: everything up to the process's own credentials.
    Returns the seccomp program to load before execve (None: unconfined), and [].

    `cgroups=False` (staging): the runtime creates the container's cgroups while we build,
    so they are joined only at start (_staged): returned instead of [] are the join files as
    (fd of the parent of the container's cgroup, relative path), opened before pivot_root
    hides the host's paths (the parent, the pod's cgroup, exists already)."""
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
    later: list[tuple[int, str]] = []
    if cgroups:
        join_cgroups(spec.get("cgroup_join", []))
    else:
        for path in spec.get("cgroup_join", []):
            parent = os.path.dirname(os.path.dirname(path))
            later.append((os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), path[len(parent) + 1:]))
    setup_rootfs(spec)
    if spec.get("oom_score_adj") is not None:
        _set_oom_score_adj(spec["oom_score_adj"])
    return bpf, later


def _exec_container(spec: dict, errfd: int, bpf: bytes | None) -> None:
    os.closerange(3, errfd)
    os.closerange(errfd + 1, 65536)
    exec_process(spec["process"], errfd, bpf)


def warm_child(sock: int, join: dict[str, str]) -> None:
    """A child forked ahead of time for the pod's next container: fork and the setns calls are
    already paid when the spawn request comes. The mount namespace is only unshared once the
    spec arrives, so the container still sees rootfs mounts made after we were forked.

    Protocol on `sock`: 8-byte length + JSON (a spec, or a request holding one in "spec").
    With stdin, stdout, stderr and the error pipe as SCM_RIGHTS on its first bytes, it means
    "run this now". Without them it means "stage": build the container (build_container,
    but for its cgroups), then wait for one more byte carrying those four fds before joining
    the cgroups, setting up stdio and execve (see Shim.op_prepare); a setup error is only
    reported then, on the error pipe.
    EOF at either point means "not needed": exit quietly.
    """
    try:
        reset_signals()
        os.closerange(3, sock)
        os.closerange(sock + 1, 65536)
        for kind, path in join.items():
            L.setns_path(path, _NS_FLAGS[kind])
        head, fds = _recv_exact(sock, 8)
        if len(head) < 8:
            os._exit(0)
        data, more = _recv_exact(sock, int.from_bytes(head, "little"))
        fds += more
        spec = json.loads(data)
        if "op" in spec:  # the shim forwarded the whole request
            spec = spec["spec"]
    except BaseException:  # noqa: BLE001 - nobody to report to yet; the shim sees us exit
        os._exit(1)
    if fds:
        os.close(sock)
        for fd in fds:
            os.set_inheritable(fd, False)  # SCM_RIGHTS fds arrive without O_CLOEXEC; the error pipe needs it
        run_container(spec, (fds[0], fds[1], fds[2]), fds[3], joined=True)
        os._exit(127)
    _staged(spec, sock)


def _staged(spec: dict, sock: int) -> None:
    error = ""
    bpf, cgroups = None, []
    try:
        bpf, cgroups = build_container(spec, joined=True, cgroups=False)
    except BaseException as e:  # noqa: BLE001 - reported on the error pipe at start
        error = _describe(e)
    # The runtime has most likely made the cgroups by now: join those that exist while we
    # wait anyway (before their limits are written is harmless: nothing of the container runs yet).
    later = []
    for dir_fd, rel in cgroups:
        try:
            join_cgroups([(dir_fd, rel)])
        except FileNotFoundError:
            later.append((dir_fd, rel))
        except BaseException as e:  # noqa: BLE001
            error = error or _describe(e)
    cgroups = later
    try:
        go, fds = _recv_exact(sock, 1)
    except BaseException:  # noqa: BLE001
        os._exit(1)
    if not go or len(fds) != 4:
        os._exit(0)  # the shim dropped us (container removed, or spec changed)
    for fd in fds:
        os.set_inheritable(fd, False)
    errfd = fds[3]
    if error:
        fail(errfd, error)
    try:
        join_cgroups(cgroups)  # the rest: they exist now, created before the record
        _stdio((fds[0], fds[1], fds[2]), reset=False)
        _exec_container(spec, errfd, bpf)
    except BaseException as e:  # noqa: BLE001
        fail(errfd, _describe(e))
    os._exit(127)


def _recv_exact(fd: int, n: int) -> tuple[bytes, list[int]]:
    """Read exactly n bytes (fewer at EOF) and every fd that rides along: never more than n,
    so a later message (and its fds) stays for the next call."""
    import _socket
    import array
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, os.dup(fd))
    data = bytearray()
    fds: list[int] = []
    try:
        while len(data) < n:
            msg, anc, _, _ = s.recvmsg(n - len(data), _socket.CMSG_SPACE(4 * 4))
            for level, typ, cdata in anc:
                if level == _socket.SOL_SOCKET and typ == _socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(cdata[: len(cdata) - len(cdata) % a.itemsize])
                    fds.extend(a)
            if not msg:
                break
            data += msg
    finally:
        s.close()
    return bytes(data), fds


# Read once in the shim (before it ignores anything itself): children inherit the same set.
INHERITED_IGNORED = tuple(s for s in L.inherited_ignored_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))


def reset_signals() -> None:
    """Undo what the shim (and CPython) did to signals, or the container would inherit it:
    SIGPIPE and SIGXFSZ ignored by Python at start-up stay ignored across execve, and the
    shim's handlers must never run in a child; nor may anything ignored by whoever started
    the runtime. The caller unblocks signals afterwards."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    for sig in INHERITED_IGNORED:
        L.default_signal(sig)


def _stdio(stdio: tuple[int, int, int], reset: bool = True) -> None:
    if reset:
        reset_signals()
    _signal.pthread_sigmask(signal.SIG_SETMASK, [])
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
