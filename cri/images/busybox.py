"""`kubeletpy.local/busybox:latest` from the host's static busybox, with no network.

Tests and the single-node cluster need a small image that does not depend on a
registry being reachable. The build is reproducible (fixed mtimes, owners, entry
order, gzip header), so the same /bin/busybox always yields the same digest and a
rebuild is a no-op.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import struct
import subprocess
import tarfile

from .blobs import sha256_digest
from .errors import ImageError
from .manifest import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, host_platform

EPOCH = 0
CREATED = "1970-01-01T00:00:00Z"
REQUIRED_APPLETS = (
    "sh", "sleep", "true", "false", "ls", "cat", "echo", "httpd", "id", "hostname",
    "ps", "mount", "env", "wget", "nc",
)  # fmt: skip
DIRS = {
    "bin": 0o755, "dev": 0o755, "etc": 0o755, "home": 0o755, "proc": 0o755, "root": 0o700,
    "run": 0o755, "sbin": 0o755, "sys": 0o755, "tmp": 0o1777, "usr": 0o755, "usr/bin": 0o755,
    "usr/sbin": 0o755, "var": 0o755, "var/tmp": 0o1777, "var/www": 0o755,
}  # fmt: skip
# /etc/hosts and /etc/resolv.conf exist, as in most distribution images, so the runtime's
# bind mounts over them create nothing (no copy-up of /etc) in each container's writable layer.
FILES = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": b"root:x:0:\nnobody:x:65534:\n",
    "etc/hostname": b"busybox\n",
    "etc/hosts": b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "etc/resolv.conf": b"",
    "etc/nsswitch.conf": b"hosts: files dns\n",
}


def is_static(path: str) -> bool:
    """True unless the ELF file asks for a program interpreter (PT_INTERP = dynamic linking).

    A dynamically linked busybox copied alone into an image fails at exec with a
    baffling "no such file or directory", so we refuse it up front.
    """
    with open(path, "rb") as f:
        ident = f.read(64)
        if ident[:4] != b"\x7fELF":
            raise ImageError(f"{path} is not an ELF executable")
        is64, endian = ident[4] == 2, "<" if ident[5] == 1 else ">"
        if is64:
            phoff, = struct.unpack_from(endian + "Q", ident, 0x20)
            phentsize, phnum = struct.unpack_from(endian + "HH", ident, 0x36)
        else:
            phoff, = struct.unpack_from(endian + "I", ident, 0x1C)
            phentsize, phnum = struct.unpack_from(endian + "HH", ident, 0x2A)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(endian + "I", table, i * phentsize)
        if p_type == 3:
            return False
    return True


def applets(busybox: str) -> list[str]:
    """Install paths (e.g. `bin/sh`) of every applet the binary has."""
    try:
        out = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise ImageError(f"cannot run {busybox} --list-full (install busybox-static): {e}") from None
    paths = sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()})
    names = {p.rsplit("/", 1)[-1] for p in paths}
    missing = [a for a in REQUIRED_APPLETS if a not in names]
    if missing:
        raise ImageError(f"{busybox} lacks applets {missing}; a full busybox-static is needed")
    return [p for p in paths if p != "bin/busybox"]


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.size = size
    ti.linkname = link
    ti.mtime = EPOCH
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def layer_tar(busybox: str) -> bytes:
    try:
        with open(busybox, "rb") as f:
            binary = f.read()
    except OSError as e:
        raise ImageError(f"cannot read {busybox}: {e.strerror}") from None
    if not is_static(busybox):
        raise ImageError(f"{busybox} is dynamically linked; the image needs a static one (apt-get install busybox-static)")
    links = applets(busybox)
    entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    for d, mode in DIRS.items():
        entries[d] = (_info(d, tarfile.DIRTYPE, mode), None)
    for path in links:
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent and parent not in entries:
            entries[parent] = (_info(parent, tarfile.DIRTYPE, 0o755), None)
        entries[path] = (_info(path, tarfile.SYMTYPE, 0o777, link="/bin/busybox"), None)
    entries["bin/busybox"] = (_info("bin/busybox", tarfile.REGTYPE, 0o755, len(binary)), binary)
    for path, data in FILES.items():
        entries[path] = (_info(path, tarfile.REGTYPE, 0o644, len(data)), data)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for path in sorted(entries):
            ti, data = entries[path]
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def build(store, ref: str, busybox: str = "/bin/busybox"):  # type: ignore[no-untyped-def]
    """Write the blobs, record the manifest, unpack: returns the Image."""
    tar = layer_tar(os.path.realpath(busybox))
    gz = gzip_bytes(tar)
    os_, arch, variant = host_platform()
    config = {
        "architecture": arch,
        "os": os_,
        **({"variant": variant} if variant else {}),
        "created": CREATED,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar)]},
        "history": [{"created": CREATED, "created_by": "kubeletpy images build-busybox"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    with store.writing():
        layer_digest = store.blobs.put_bytes(gz)
        config_digest = store.blobs.put_bytes(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": len(gz)}],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        return store.add_manifest(ref, manifest_bytes)
