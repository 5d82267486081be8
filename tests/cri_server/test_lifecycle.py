"""The whole CRI surface through gRPC, against the real daemon: sandboxes, containers, exec, streams, stats."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import select
import socket
import stat
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cri.api import api_pb2 as pb
from cri.streaming.client import PortForwardClient
from kubeletpy.cli.crictl import CRIClient

from .conftest import BUSYBOX, REPO, Daemon, Env, code_of, crictl, ctr_config, pod_config, run_ctr, wait_state


def test_version_status_health_reflection_socket(cri: CRIClient, env: Env) -> None:
    v = cri.version()
    assert (v.runtime_name, v.runtime_api_version) == ("kubeletpy", "v1")
    conds = {c.type: c for c in cri.status().status.conditions}
    assert conds["RuntimeReady"].status and conds["NetworkReady"].status
    health = health_pb2_grpc.HealthStub(cri.channel)
    for service in ("", "runtime.v1.RuntimeService", "runtime.v1.ImageService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
            health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(cri.channel)
    reply = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in reply.list_services_response.service}
    assert {"runtime.v1.RuntimeService", "runtime.v1.ImageService", "grpc.health.v1.Health"} <= names
    assert stat.S_IMODE(os.stat(env.socket).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(env.socket.parent).st_mode) == 0o750
    out = json.loads(crictl(env, "info").stdout)
    assert out["info"]["cniconfig"]["config"]["name"] == env.net_name


def test_pod_and_container_lifecycle(cri: CRIClient, env: Env) -> None:
    cfg = pod_config("life", hostname="life-host", labels={"app": "life", "tier": "x"},
                     annotations={"note": "hello"},
                     dns_config=pb.DNSConfig(servers=["10.0.0.10"], searches=["svc.test"], options=["ndots:2"]))
    sid = cri.run_pod(cfg)
    assert len(sid) == 64 and all(c in "0123456789abcdef" for c in sid)
    st = cri.pod_status(sid, verbose=True)
    s = st.status
    assert s.state == pb.SANDBOX_READY and s.created_at > 0
    assert ipaddress.ip_address(s.network.ip) in ipaddress.ip_network(env.subnet)
    assert dict(s.labels) == {"app": "life", "tier": "x"} and dict(s.annotations) == {"note": "hello"}
    assert s.linux.namespaces.options.pid == pb.CONTAINER and s.linux.namespaces.options.network == pb.POD
    assert s.metadata.name == "life" and json.loads(st.info["info"])["pid"] > 0
    assert len(env.leases()) >= 1
    # filters: id prefix, state, labels
    assert [p.id for p in cri.list_pods(id=sid[:10])] == [sid]
    assert sid in [p.id for p in cri.list_pods(state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY))]
    assert sid not in [p.id for p in cri.list_pods(state=pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY))]
    assert [p.id for p in cri.list_pods(label_selector={"app": "life"})] == [sid]
    assert cri.list_pods(label_selector={"app": "other"}) == []

    mounts = [pb.Mount(container_path="/data", host_path=str(env.base), readonly=True)]
    ccfg = ctr_config("main", ["sh", "-c", "echo started; exec sleep 3600"], labels={"c": "1"}, mounts=mounts)
    ccfg.linux.resources.memory_limit_in_bytes = 64 << 20
    ccfg.linux.resources.cpu_shares = 512
    cid = cri.create_container(sid, ccfg, cfg)
    c = cri.container_status(cid[:12]).status  # unique prefixes work everywhere
    assert c.id == cid and c.state == pb.CONTAINER_CREATED and c.image.image == BUSYBOX
    assert c.image_ref.startswith("sha256:") and c.log_path.endswith(".log")
    assert [(m.container_path, m.readonly) for m in c.mounts] == [("/data", True)]
    assert c.resources.linux.memory_limit_in_bytes == 64 << 20
    cri.start_container(cid)
    c = cri.container_status(cid).status
    assert c.state == pb.CONTAINER_RUNNING and c.started_at >= c.created_at
    assert [x.id for x in cri.list_containers(pod_sandbox_id=sid)] == [cid]
    assert [x.id for x in cri.list_containers(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING),
                                              label_selector={"c": "1"})] == [cid]
    assert cri.list_containers(pod_sandbox_id=sid, state=pb.ContainerStateValue(state=pb.CONTAINER_EXITED)) == []

    r = cri.exec_sync(cid, ["sh", "-c", "hostname; cat /etc/resolv.conf; ls /data >/dev/null && echo ro-ok"])
    out = r.stdout.decode()
    assert r.exit_code == 0 and out.startswith("life-host\n")
    assert "nameserver 10.0.0.10" in out and "search svc.test" in out and "options ndots:2" in out
    assert "ro-ok" in out
    r = cri.exec_sync(cid, ["sh", "-c", "echo oops >&2; exit 42"])
    assert (r.exit_code, r.stderr) == (42, b"oops\n")
    r = cri.exec_sync(cid, ["sh", "-c", f"ip -4 addr show eth0 | grep -q {s.network.ip} && echo ip-ok"])
    assert r.stdout == b"ip-ok\n"

    t0 = time.monotonic()
    cri.stop_container(cid, timeout=1)  # sleep is PID 1 of its namespace: SIGTERM is ignored, SIGKILL after 1s
    c = cri.container_status(cid).status
    assert c.state == pb.CONTAINER_EXITED and c.finished_at >= c.started_at and c.exit_code == 137
    assert 0.9 <= time.monotonic() - t0 < 5
    cri.stop_container(cid)  # already stopped: fine
    cri.remove_container(cid)
    assert code_of(cri.container_status, cid)[0] == grpc.StatusCode.NOT_FOUND
    cri.remove_container(cid)  # already gone: fine

    cri.stop_pod(sid)
    assert cri.pod_status(sid).status.state == pb.SANDBOX_NOTREADY
    assert env.leases() == [] or s.network.ip not in env.leases()
    netns = json.loads(st.info["info"])["netNamespace"]
    assert not os.path.exists(netns)
    cri.stop_pod(sid)  # idempotent
    cri.remove_pod(sid)
    assert code_of(cri.pod_status, sid)[0] == grpc.StatusCode.NOT_FOUND
    cri.remove_pod(sid)
    cri.stop_pod(sid)


def test_remove_running_container_and_ready_pod(cri: CRIClient) -> None:
    cfg = pod_config()
    sid = cri.run_pod(cfg)
    cid = run_ctr(cri, sid, cfg, "busy", ["sleep", "3600"])
    cri.remove_container(cid)  # running: stopped first
    assert cri.list_containers(pod_sandbox_id=sid) == []
    cid2 = run_ctr(cri, sid, cfg, "busy2", ["sleep", "3600"])
    pid = json.loads(cri.container_status(cid2, verbose=True).info["info"])["pid"]
    cri.remove_pod(sid)  # ready: stopped first, its containers go with it
    assert not os.path.exists(f"/proc/{pid}")
    assert code_of(cri.container_status, cid2)[0] == grpc.StatusCode.NOT_FOUND
    assert sid not in [p.id for p in cri.list_pods()]


def test_exec_sync_timeout_kills_the_process(cri: CRIClient) -> None:
    cfg = pod_config()
    sid = cri.run_pod(cfg)
    try:
        cid = run_ctr(cri, sid, cfg, "main", ["sleep", "3600"])
        t0 = time.monotonic()
        code, msg = code_of(cri.exec_sync, cid, ["sleep", "77"], timeout=1)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "timed out" in msg
        assert time.monotonic() - t0 < 10
        ps = cri.exec_sync(cid, ["ps", "-o", "args"]).stdout.decode()
        assert "sleep 77" not in ps
    finally:
        cri.remove_pod(sid)


def test_streaming_exec_stdin_and_tty(cri: CRIClient, env: Env) -> None:
    cfg = pod_config()
    sid = cri.run_pod(cfg)
    try:
        cid = run_ctr(cri, sid, cfg, "main", ["sleep", "3600"])
        p = crictl(env, "exec", "-i", cid, "sh", "-c", "tr a-z A-Z; echo to-err >&2; exit 5",
                   input=b"hello stdin\n", check=False)
        assert (p.returncode, p.stdout, p.stderr) == (5, b"HELLO STDIN\n", b"to-err\n")
        p = crictl(env, "exec", "-i", "-t", cid, "sh", "-c", "read x; echo got:$x; test -t 0 && echo is-a-tty",
                   input=b"abc\n")
        out = p.stdout.replace(b"\r\n", b"\n")
        assert b"got:abc\n" in out and b"is-a-tty\n" in out
        # on a real terminal: raw mode, and the remote pty gets our window size
        import fcntl
        import pty
        import struct
        import termios
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        proc = subprocess.Popen([sys.executable, "-m", "kubeletpy", "crictl", "-r", env.endpoint, "exec", "-i",
                                 "-t", cid, "sh", "-c", "stty size; read x; echo got:$x"],
                                stdin=slave, stdout=slave, stderr=slave, cwd=REPO, start_new_session=True)
        os.close(slave)
        deadline = time.monotonic() + 20

        def read_until(want: bytes, buf: bytes = b"") -> bytes:
            while want not in buf and time.monotonic() < deadline:
                if select.select([master], [], [], 0.2)[0]:
                    try:
                        buf += os.read(master, 4096)
                    except OSError:  # EIO: the client exited and closed the terminal
                        break
            return buf

        got = read_until(b"33 101")
        os.write(master, b"typed\r")
        got = read_until(b"got:typed", got)
        proc.wait(10)
        os.close(master)
        assert b"33 101" in got and b"got:typed" in got and proc.returncode == 0, got
        p = crictl(env, "exec", cid, "no-such-binary", check=False)
        assert p.returncode != 0 and b"no-such-binary" in p.stderr
        # the URL is single-use
        url = cri.exec_url(cid, ["true"])
        from cri.streaming.client import UpgradeError, exec_spdy
        flags = {"stdin": False, "stdout": True, "stderr": True, "tty": False}
        assert asyncio.run(exec_spdy(url, flags=flags)).exit_code == 0
        try:
            asyncio.run(exec_spdy(url, flags=flags))
            raise AssertionError("a token was accepted twice")
        except UpgradeError as e:
            assert e.status == 404
    finally:
        cri.remove_pod(sid)


def test_attach_streams_output_until_exit(cri: CRIClient) -> None:
    from cri.streaming.client import exec_spdy

    cfg = pod_config()
    sid = cri.run_pod(cfg)
    try:
        cid = run_ctr(cri, sid, cfg, "ticker", ["sh", "-c", "sleep 0.5; for i in $(seq 1 10); do echo tick-$i;"
                                                           " echo tock-$i >&2; sleep 0.05; done; exit 4"])
        url = cri.attach_url(cid)
        flags = {"stdin": False, "stdout": True, "stderr": True, "tty": False}
        res = asyncio.run(asyncio.wait_for(exec_spdy(url, flags=flags), 30))
        assert res.stdout.decode().split()[-1] == "tick-10" and res.stderr.decode().split()[-1] == "tock-10"
        assert res.exit_code == 0  # the CRI streaming server's attach ends in Success, whatever the process's code
        code, msg = code_of(cri.attach_url, cid)
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "not running" in msg
        # stdin reaches a container created with stdin (stdin_once: our EOF is its EOF)
        reader = run_ctr(cri, sid, cfg, "reader", ["sh", "-c", "while read x; do echo got:$x; done; echo bye"],
                         stdin=True, stdin_once=True)
        res = asyncio.run(asyncio.wait_for(exec_spdy(cri.attach_url(reader, stdin=True), stdin=b"one\ntwo\n",
                                                     flags={**flags, "stdin": True}), 30))
        assert res.stdout == b"got:one\ngot:two\nbye\n" and res.exit_code == 0
    finally:
        cri.remove_pod(sid)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_port_forward_and_host_port_to_httpd(cri: CRIClient) -> None:
    host_port = _free_port()
    cfg = pod_config("web", port_mappings=[pb.PortMapping(container_port=8080, host_port=host_port)])
    sid = cri.run_pod(cfg)
    try:
        cid = run_ctr(cri, sid, cfg, "httpd", ["sh", "-c", "mkdir -p /www && echo hello-from-pod > /www/index.html"
                                                          " && exec httpd -f -p 8080 -h /www"])
        deadline = time.monotonic() + 10
        while cri.exec_sync(cid, ["wget", "-qO-", "http://127.0.0.1:8080/"]).exit_code != 0:
            assert time.monotonic() < deadline, "httpd did not come up"
            time.sleep(0.1)

        async def forward() -> tuple[bytes, bytes]:
            pf = await PortForwardClient.connect(cri.port_forward_url(sid, [8080]))
            try:
                data, _ = await pf.open(8080)
                await data.write(b"GET /index.html HTTP/1.0\r\n\r\n")
                body = await asyncio.wait_for(data.read_all(), 10)
                _, err = await pf.open(9)  # nothing listens there
                return body, await asyncio.wait_for(err.read_all(), 10)
            finally:
                await pf.close()

        body, err = asyncio.run(forward())
        assert body.startswith(b"HTTP/1.") and body.endswith(b"hello-from-pod\n")
        assert b"error forwarding port 9" in err
        with socket.create_connection(("127.0.0.1", host_port), timeout=5) as s:  # the portmap plugin's DNAT
            s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
            got = b""
            while chunk := s.recv(4096):
                got += chunk
        assert got.endswith(b"hello-from-pod\n")
    finally:
        cri.remove_pod(sid)
    with socket.socket() as s:  # the DNAT went with the pod
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", host_port)) != 0


def test_stats_are_real(cri: CRIClient) -> None:
    cfg = pod_config()
    sid = cri.run_pod(cfg)
    try:
        cid = run_ctr(cri, sid, cfg, "burn", ["sh", "-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done;"
                                                         " echo x > /written; exec sleep 3600"])
        deadline = time.monotonic() + 20
        while cri.exec_sync(cid, ["test", "-e", "/written"]).exit_code != 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        s = cri.container_stats(cid)
        assert s.attributes.id == cid and s.attributes.metadata.name == "burn"
        assert s.cpu.usage_core_nano_seconds.value > 10_000_000
        assert s.memory.working_set_bytes.value > 0 and s.memory.usage_bytes.value > 0
        assert s.writable_layer.used_bytes.value > 0 and s.writable_layer.inodes_used.value > 0
        assert [x.attributes.id for x in cri.list_container_stats(pod_sandbox_id=sid)] == [cid]
        p = cri.pod_stats(sid)
        assert p.attributes.id == sid and p.linux.cpu.usage_core_nano_seconds.value >= \
            s.cpu.usage_core_nano_seconds.value
        assert p.linux.memory.working_set_bytes.value > 0 and p.linux.process.process_count.value >= 2
        assert p.linux.network.default_interface.name == "eth0"
        assert p.linux.network.default_interface.tx_bytes.value > 0
        assert [c.attributes.id for c in p.linux.containers] == [cid]
    finally:
        cri.remove_pod(sid)


def test_logs_follow_while_the_container_writes(cri: CRIClient, env: Env) -> None:
    cfg = pod_config(log_directory=str(env.base / "podlogs" / "follow"))
    sid = cri.run_pod(cfg)
    try:
        cid = run_ctr(cri, sid, cfg, "talker", ["sh", "-c", "for i in $(seq 1 25); do echo line-$i;"
                                                           " echo err-$i >&2; sleep 0.1; done"], log_path="t.log")
        follower = subprocess.Popen([sys.executable, "-m", "kubeletpy", "crictl", "-r", env.endpoint, "logs", "-f",
                                     cid], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        out, err = follower.communicate(timeout=30)
        assert follower.returncode == 0
        # -f started while the container was writing and ended by itself when it exited
        assert out.decode().split() == [f"line-{i}" for i in range(1, 26)]
        assert err.decode().split() == [f"err-{i}" for i in range(1, 26)]
        st = wait_state(cri, cid, pb.CONTAINER_EXITED)
        assert st.exit_code == 0 and st.reason == "Completed"
        assert st.log_path == str(env.base / "podlogs" / "follow" / "t.log")
        ts, stream, tag, msg = open(st.log_path).readline().rstrip("\n").split(" ", 3)
        assert stream in ("stdout", "stderr") and tag == "F" and ts.endswith("Z")
        tail = crictl(env, "logs", "--tail", "1", cid)
        assert tail.stdout == b"line-25\n" or tail.stderr == b"err-25\n"
    finally:
        cri.remove_pod(sid)


def test_update_resources_reopen_log_and_sysctls(cri: CRIClient, env: Env) -> None:
    cfg = pod_config(log_directory=str(env.base / "podlogs" / "reopen"))
    cfg.linux.sysctls["net.ipv4.ping_group_range"] = "0 2147483647"
    sid = cri.run_pod(cfg)
    try:
        cid = run_ctr(cri, sid, cfg, "main", ["sh", "-c", "while true; do echo tick; sleep 0.1; done"],
                      log_path="main.log")
        r = cri.exec_sync(cid, ["cat", "/proc/sys/net/ipv4/ping_group_range"])
        assert r.stdout.split() == [b"0", b"2147483647"]
        cri.call("runtime", "UpdateContainerResources", pb.UpdateContainerResourcesRequest(
            container_id=cid, linux=pb.LinuxContainerResources(memory_limit_in_bytes=96 << 20, cpu_shares=256)))
        assert cri.container_status(cid).status.resources.linux.memory_limit_in_bytes == 96 << 20
        log = cri.container_status(cid).status.log_path
        os.rename(log, log + ".1")
        cri.call("runtime", "ReopenContainerLog", pb.ReopenContainerLogRequest(container_id=cid))
        deadline = time.monotonic() + 5
        while not (os.path.exists(log) and os.path.getsize(log) > 0):
            assert time.monotonic() < deadline, "the log was not reopened"
            time.sleep(0.05)
    finally:
        cri.remove_pod(sid)


def test_images(cri: CRIClient, env: Env) -> None:
    from cri.images import ImageStore

    imgs = cri.list_images()
    bb = next(i for i in imgs if BUSYBOX in i.repo_tags)
    assert bb.id.startswith("sha256:") and bb.size > 0
    st = cri.image_status(BUSYBOX, verbose=True)
    assert st.image.id == bb.id and json.loads(st.info["info"])["imageSpec"]["architecture"]
    assert not cri.image_status("kubeletpy.local/nope:1").HasField("image")  # absent: empty, not an error
    assert [i.id for i in cri.list_images(BUSYBOX)] == [bb.id]
    store = ImageStore(root=env.dirs()["root"])
    store.tag("kubeletpy.local/busybox:extra", store.get(BUSYBOX).manifest_digest)
    assert "kubeletpy.local/busybox:extra" in cri.image_status("kubeletpy.local/busybox:extra").image.repo_tags
    cri.remove_image("kubeletpy.local/busybox:extra")
    assert not cri.image_status("kubeletpy.local/busybox:extra").HasField("image")
    assert cri.image_status(BUSYBOX).HasField("image")
    cri.remove_image("kubeletpy.local/busybox:extra")  # gone already: fine
    fs = cri.call("image", "ImageFsInfo", pb.ImageFsInfoRequest()).image_filesystems[0]
    assert fs.used_bytes.value > 0 and fs.inodes_used.value > 0 and fs.fs_id.mountpoint
    assert code_of(cri.pull, "Not A Reference!!")[0] == grpc.StatusCode.INVALID_ARGUMENT
    code, msg = code_of(cri.pull, "127.0.0.1:1/nothing/here:1")  # nobody listens on port 1
    assert code == grpc.StatusCode.UNKNOWN and msg
    out = crictl(env, "images").stdout.decode()
    assert "kubeletpy.local/busybox" in out and bb.id[7:20] in out


def test_crictl_config_files(cri: CRIClient, env: Env) -> None:
    """crictl's documented pod-config.json / container-config.json, and YAML, through the CLI."""
    d = env.base / "configs"
    d.mkdir(exist_ok=True)
    pod = {"metadata": {"name": "cfgpod", "namespace": "default", "attempt": 1, "uid": "hdishd83djaidwnduwk28bcsb"},
           "log_directory": str(env.base / "podlogs" / "cfg"), "linux": {}}
    (d / "pod-config.json").write_text(json.dumps(pod))
    (d / "container-config.yaml").write_text(
        "metadata: {name: busybox}\nimage: {image: kubeletpy.local/busybox:latest}\n"
        "command: [sh, -c]\nargs: ['echo from-config; sleep 3600']\nlog_path: busybox.0.log\nlinux: {}\n")
    sid = crictl(env, "runp", str(d / "pod-config.json")).stdout.decode().strip()
    try:
        cid = crictl(env, "create", sid, str(d / "container-config.yaml"), str(d / "pod-config.json"))
        cid_s = cid.stdout.decode().strip()
        crictl(env, "start", cid_s)
        assert cid_s[:13].encode() in crictl(env, "ps").stdout
        assert crictl(env, "pods", "-q", "--name", "cfgpod").stdout.decode().split() == [sid]
        ps = json.loads(crictl(env, "ps", "-o", "json", "--pod", sid).stdout)
        assert ps["containers"][0]["metadata"]["name"] == "busybox"
        insp = json.loads(crictl(env, "inspect", cid_s).stdout)
        assert insp["status"]["state"] == "CONTAINER_RUNNING"
        assert json.loads(crictl(env, "inspectp", sid).stdout)["status"]["metadata"]["attempt"] == 1
        deadline = time.monotonic() + 5
        while b"from-config" not in crictl(env, "logs", cid_s).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert crictl(env, "exec", "-s", cid_s, "echo", "sync").stdout == b"sync\n"
        assert cid_s[:13].encode() in crictl(env, "stats").stdout
        crictl(env, "stop", "--timeout", "1", cid_s)
        crictl(env, "rm", cid_s)
        crictl(env, "stopp", sid)
    finally:
        crictl(env, "rmp", "-f", sid, check=False)
    assert "kubeletpy" in crictl(env, "version").stdout.decode()
    bad = crictl(env, "inspect", "f" * 64, check=False)
    assert bad.returncode == 1 and b"code = NOT_FOUND" in bad.stderr


def test_parallel_pods_from_many_clients(cri: CRIClient, env: Env) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> tuple[str, str]:
        with CRIClient(env.endpoint) as c:
            cfg = pod_config(f"par-{i}")
            sid = c.run_pod(cfg)
            cid = run_ctr(c, sid, cfg, "main", ["sleep", "3600"])
            return sid, cid

    with ThreadPoolExecutor(8) as ex:
        made = list(ex.map(one, range(12)))
    try:
        ips = {cri.pod_status(sid).status.network.ip for sid, _ in made}
        assert len(ips) == 12
        assert all(cri.container_status(cid).status.state == pb.CONTAINER_RUNNING for _, cid in made)
    finally:
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(cri.remove_pod, [sid for sid, _ in made]))
    assert not any(p.metadata.name.startswith("par-") for p in cri.list_pods())


def test_second_daemon_without_network_then_pod_cidr(tmp_path: object, daemon: Daemon) -> None:
    """Side by side with the main daemon: NetworkReady=false until UpdateRuntimeConfig writes a config;
    a live socket is refused, a stale one replaced."""
    import secrets
    from pathlib import Path

    from .conftest import cleanup_env, new_env

    env2 = new_env(Path(f"/tmp/kpt-cri2-{secrets.token_hex(4)}"), write_conf=False)
    d2 = Daemon(env2)
    try:
        c2 = d2.start()
        conds = {c.type: c for c in c2.status().status.conditions}
        assert conds["RuntimeReady"].status and not conds["NetworkReady"].status
        assert conds["NetworkReady"].reason == "NetworkPluginNotReady" and conds["NetworkReady"].message
        code, msg = code_of(c2.run_pod, pod_config())
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "network" in msg.lower()
        # a second daemon on the same socket is refused, the first keeps serving
        p = subprocess.run(env2.argv(), capture_output=True, timeout=30, cwd=REPO)
        assert p.returncode != 0 and b"another kubeletpy runtime" in p.stderr
        assert c2.version().runtime_name == "kubeletpy"
        cidr = env2.subnet
        c2.call("runtime", "UpdateRuntimeConfig", pb.UpdateRuntimeConfigRequest(
            runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr=cidr))))
        written = json.loads((env2.dirs()["conf"] / "10-kubeletpy.conflist").read_text())
        assert written["plugins"][0]["bridge"] == env2.bridge
        assert written["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] == cidr
        assert all(c.status for c in c2.status().status.conditions)
        cfg = pod_config()
        sid = c2.run_pod(cfg)
        assert ipaddress.ip_address(c2.pod_status(sid).status.network.ip) in ipaddress.ip_network(cidr)
        c2.remove_pod(sid)
        # crash: the socket file stays behind, and a new daemon replaces it
        d2.stop(sig=9)
        assert env2.socket.exists()
        c2 = d2.start()
        assert c2.version().runtime_name == "kubeletpy"
    finally:
        try:
            cleanup_env(env2, d2.client)
        finally:
            d2.stop()
            cleanup_env(env2, None)
    assert daemon.client is not None and daemon.client.version().runtime_name == "kubeletpy"
