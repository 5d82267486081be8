"""`kubeletpy crictl`: a CRI client with crictl's commands, flags and config files.

`CRIClient` is the library half (one gRPC channel, one method per RPC, errors as
grpc.RpcError) that the tests and the bench use too; the command half turns
crictl's JSON/YAML config files (pod-config.json, container-config.json, snake_case
or camelCase field names as protobuf JSON allows) into requests and prints what
crictl prints: tables by default, protobuf JSON for inspect and `-o json`.

Streaming exec speaks SPDY to the URL the runtime returns (cri.streaming.client),
forwarding this terminal (raw mode and window size with -t) or stdin (-i).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from kubeletpy.cli import CLIError

DEFAULT_ENDPOINT = "unix:///run/kubeletpy/cri.sock"
ENDPOINT_ENV = "CONTAINER_RUNTIME_ENDPOINT"


# ---- the client library --------------------------------------------------------------------

class CRIClient:
    """Thin typed wrapper over the generated stubs; every call has a deadline."""

    def __init__(self, endpoint: str | None = None, timeout: float = 120.0) -> None:
        import grpc

        from cri.api import api_pb2 as pb
        from cri.api import api_pb2_grpc as pb_grpc

        self.pb = pb
        self.endpoint = endpoint or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT
        if self.endpoint.startswith("/"):
            self.endpoint = "unix://" + self.endpoint
        self.timeout = timeout
        self.channel = grpc.insecure_channel(self.endpoint, options=[
            ("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 32 << 20)])
        self.runtime = pb_grpc.RuntimeServiceStub(self.channel)
        self.images = pb_grpc.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CRIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, service: str, method: str, request: Any, timeout: float | None = None) -> Any:
        stub = self.runtime if service == "runtime" else self.images
        return getattr(stub, method)(request, timeout=timeout or self.timeout)

    # runtime
    def version(self) -> Any:
        return self.call("runtime", "Version", self.pb.VersionRequest(version="v1"))

    def status(self, verbose: bool = False) -> Any:
        return self.call("runtime", "Status", self.pb.StatusRequest(verbose=verbose))

    def run_pod(self, config: Any, runtime_handler: str = "") -> str:
        return self.call("runtime", "RunPodSandbox", self.pb.RunPodSandboxRequest(
            config=config, runtime_handler=runtime_handler)).pod_sandbox_id

    def stop_pod(self, sid: str) -> None:
        self.call("runtime", "StopPodSandbox", self.pb.StopPodSandboxRequest(pod_sandbox_id=sid))

    def remove_pod(self, sid: str) -> None:
        self.call("runtime", "RemovePodSandbox", self.pb.RemovePodSandboxRequest(pod_sandbox_id=sid))

    def pod_status(self, sid: str, verbose: bool = False) -> Any:
        return self.call("runtime", "PodSandboxStatus", self.pb.PodSandboxStatusRequest(
            pod_sandbox_id=sid, verbose=verbose))

    def list_pods(self, **filter_kw: Any) -> list[Any]:
        return list(self.call("runtime", "ListPodSandbox", self.pb.ListPodSandboxRequest(
            filter=self.pb.PodSandboxFilter(**filter_kw))).items)

    def create_container(self, sid: str, config: Any, sandbox_config: Any = None) -> str:
        return self.call("runtime", "CreateContainer", self.pb.CreateContainerRequest(
            pod_sandbox_id=sid, config=config, sandbox_config=sandbox_config)).container_id

    def start_container(self, cid: str) -> None:
        self.call("runtime", "StartContainer", self.pb.StartContainerRequest(container_id=cid))

    def stop_container(self, cid: str, timeout: int = 10) -> None:
        self.call("runtime", "StopContainer", self.pb.StopContainerRequest(container_id=cid, timeout=timeout),
                  timeout=self.timeout + timeout)

    def remove_container(self, cid: str) -> None:
        self.call("runtime", "RemoveContainer", self.pb.RemoveContainerRequest(container_id=cid))

    def list_containers(self, **filter_kw: Any) -> list[Any]:
        return list(self.call("runtime", "ListContainers", self.pb.ListContainersRequest(
            filter=self.pb.ContainerFilter(**filter_kw))).containers)

    def container_status(self, cid: str, verbose: bool = False) -> Any:
        return self.call("runtime", "ContainerStatus", self.pb.ContainerStatusRequest(
            container_id=cid, verbose=verbose))

    def exec_sync(self, cid: str, cmd: list[str], timeout: int = 0) -> Any:
        return self.call("runtime", "ExecSync", self.pb.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout),
                         timeout=self.timeout + timeout)

    def exec_url(self, cid: str, cmd: list[str], stdin: bool = False, tty: bool = False) -> str:
        return self.call("runtime", "Exec", self.pb.ExecRequest(
            container_id=cid, cmd=cmd, stdin=stdin, tty=tty, stdout=True, stderr=not tty)).url

    def attach_url(self, cid: str, stdin: bool = False, tty: bool = False) -> str:
        return self.call("runtime", "Attach", self.pb.AttachRequest(
            container_id=cid, stdin=stdin, tty=tty, stdout=True, stderr=not tty)).url

    def port_forward_url(self, sid: str, ports: Iterable[int]) -> str:
        return self.call("runtime", "PortForward", self.pb.PortForwardRequest(
            pod_sandbox_id=sid, port=list(ports))).url

    def container_stats(self, cid: str) -> Any:
        return self.call("runtime", "ContainerStats", self.pb.ContainerStatsRequest(container_id=cid)).stats

    def list_container_stats(self, **filter_kw: Any) -> list[Any]:
        return list(self.call("runtime", "ListContainerStats", self.pb.ListContainerStatsRequest(
            filter=self.pb.ContainerStatsFilter(**filter_kw))).stats)

    def pod_stats(self, sid: str) -> Any:
        return self.call("runtime", "PodSandboxStats", self.pb.PodSandboxStatsRequest(pod_sandbox_id=sid)).stats

    # images
    def pull(self, image: str, auth: Any = None) -> str:
        return self.call("image", "PullImage", self.pb.PullImageRequest(
            image=self.pb.ImageSpec(image=image), auth=auth), timeout=max(self.timeout, 600)).image_ref

    def list_images(self, image: str = "") -> list[Any]:
        return list(self.call("image", "ListImages", self.pb.ListImagesRequest(
            filter=self.pb.ImageFilter(image=self.pb.ImageSpec(image=image)))).images)

    def image_status(self, image: str, verbose: bool = False) -> Any:
        return self.call("image", "ImageStatus", self.pb.ImageStatusRequest(
            image=self.pb.ImageSpec(image=image), verbose=verbose))

    def remove_image(self, image: str) -> None:
        self.call("image", "RemoveImage", self.pb.RemoveImageRequest(image=self.pb.ImageSpec(image=image)))


def load_config(path: str, message: Any) -> Any:
    """A crictl config file (JSON or YAML; snake_case or camelCase keys) into `message`."""
    import yaml
    from google.protobuf import json_format

    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise CLIError(f"cannot read {path}: {e.strerror}") from None
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise CLIError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {e}") from None
    if not isinstance(data, dict):
        raise CLIError(f"{path}: expected an object at the top level")
    try:
        return json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise CLIError(f"{path}: {e}") from None


# ---- streaming exec --------------------------------------------------------------------------

async def stream_exec(url: str, stdin: bool, tty: bool,
                      read_stdin: Callable[[], bytes] | None = None,
                      write_out: Callable[[bytes], None] | None = None,
                      write_err: Callable[[bytes], None] | None = None,
                      size: tuple[int, int] | None = None) -> int:
    """Run an exec URL over SPDY (v4), forwarding stdin/out/err; returns the remote exit code."""
    from cri.streaming import remotecommand as rc
    from cri.streaming.client import exit_code_of, spdy_connect

    out_fn = write_out or _writer(sys.stdout.buffer)
    err_fn = write_err or _writer(sys.stderr.buffer)
    client = await spdy_connect(url, [rc.V4, rc.V3, rc.V2])
    loop = asyncio.get_running_loop()
    try:
        s = client.session
        error = await s.open_stream([("streamtype", "error")])
        streams = {}
        if stdin:
            streams["stdin"] = await s.open_stream([("streamtype", "stdin")])
        streams["stdout"] = await s.open_stream([("streamtype", "stdout")])
        if not tty:
            streams["stderr"] = await s.open_stream([("streamtype", "stderr")])
        resize = None
        if tty and client.protocol in (rc.V3, rc.V4):
            resize = await s.open_stream([("streamtype", "resize")])
            if size:
                await resize.write(json.dumps({"Width": size[0], "Height": size[1]}).encode())
        if resize is not None and size and sys.stdin.isatty():
            def on_winch(*_: object) -> None:
                with contextlib.suppress(OSError):
                    w, h = os.get_terminal_size(sys.stdin.fileno())
                    loop.call_soon_threadsafe(asyncio.ensure_future,
                                              resize.write(json.dumps({"Width": w, "Height": h}).encode()))
            signal.signal(signal.SIGWINCH, on_winch)

        feeder = None
        if "stdin" in streams:
            queue: asyncio.Queue[bytes] = asyncio.Queue()
            reader = read_stdin or (lambda: os.read(0, 32768))

            def pump() -> None:  # a daemon thread: a blocked terminal read must not keep us alive
                while True:
                    try:
                        chunk = reader()
                    except OSError:
                        chunk = b""
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                    if not chunk:
                        return

            threading.Thread(target=pump, daemon=True).start()

            async def feed() -> None:
                with contextlib.suppress(ConnectionError):
                    while chunk := await queue.get():
                        await streams["stdin"].write(chunk)
                    await streams["stdin"].close()

            feeder = asyncio.ensure_future(feed())

        async def copy(name: str, fn: Callable[[bytes], None]) -> None:
            if name in streams:
                while chunk := await streams[name].read():
                    fn(chunk)

        _, _, err_text = await asyncio.gather(copy("stdout", out_fn), copy("stderr", err_fn), error.read_all())
        if feeder is not None:
            feeder.cancel()
        status: Any = err_text.decode()
        if client.protocol == rc.V4 and err_text:
            status = json.loads(err_text)
        if isinstance(status, dict) and status.get("status") == "Failure" and not any(
                c.get("reason") == "ExitCode" for c in (status.get("details") or {}).get("causes", [])):
            err_fn(f"error: {status.get('message', 'exec failed')}\n".encode())
        elif isinstance(status, str) and status:
            err_fn(f"error: {status}\n".encode())
        return exit_code_of(status)
    finally:
        await client.close()


def _writer(f: Any) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        f.write(data)
        f.flush()
    return write


@contextlib.contextmanager
def _raw_terminal(enabled: bool) -> Any:
    if not enabled or not sys.stdin.isatty():
        yield
        return
    import termios
    import tty as ttymod
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        ttymod.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


# ---- printing --------------------------------------------------------------------------------

def _ago(ns: int) -> str:
    if not ns:
        return ""
    s = max(0, int(time.time() - ns / 1e9))
    for unit, n in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if s >= n:
            return f"{s // n} {unit} ago"
    return f"{s} seconds ago"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *rows])


def _to_json(msg: Any) -> Any:
    from google.protobuf import json_format
    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


def _print_list(output: str, items: list[Any], key: str, table: Callable[[], str], quiet_ids: list[str],
                quiet: bool) -> None:
    if quiet:
        for i in quiet_ids:
            print(i)
    elif output in ("json", "yaml"):
        obj = {key: [_to_json(i) for i in items]}
        if output == "json":
            _print_json(obj)
        else:
            import yaml
            print(yaml.safe_dump(obj, sort_keys=False), end="")
    else:
        print(table())


def _inspect_out(resp: Any, status_key: str = "status") -> dict[str, Any]:
    out = {status_key: _to_json(getattr(resp, status_key))}
    info = {}
    for k, v in resp.info.items():
        try:
            info[k] = json.loads(v)
        except ValueError:
            info[k] = v
    if info:
        out["info"] = info
    return out


# ---- commands -------------------------------------------------------------------------------

def _client(args: argparse.Namespace) -> CRIClient:
    return CRIClient(args.runtime_endpoint, timeout=args.timeout)


def _grpc_errors(fn: Callable[[argparse.Namespace], int | None]) -> Callable[[argparse.Namespace], int]:
    def wrapper(args: argparse.Namespace) -> int:
        import grpc
        try:
            return int(fn(args) or 0)
        except BrokenPipeError:  # `crictl ... | head`
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        except grpc.RpcError as e:
            code = e.code().name if hasattr(e, "code") else "UNKNOWN"
            raise CLIError(f"{args.crictl_command}: rpc error: code = {code} desc = {e.details()}") from None
    return wrapper


def cmd_version(args: argparse.Namespace) -> None:
    with _client(args) as c:
        v = c.version()
    print(f"Version:  {v.version}\nRuntimeName:  {v.runtime_name}\nRuntimeVersion:  {v.runtime_version}\n"
          f"RuntimeApiVersion:  {v.runtime_api_version}")


def cmd_info(args: argparse.Namespace) -> None:
    with _client(args) as c:
        _print_json(_inspect_out(c.status(verbose=True)))


def cmd_runp(args: argparse.Namespace) -> None:
    with _client(args) as c:
        cfg = load_config(args.config, c.pb.PodSandboxConfig())
        print(c.run_pod(cfg, args.runtime))


def cmd_stopp(args: argparse.Namespace) -> None:
    with _client(args) as c:
        for sid in args.ids:
            c.stop_pod(sid)
            print(f"Stopped sandbox {sid}")


def cmd_rmp(args: argparse.Namespace) -> None:
    with _client(args) as c:
        ids = args.ids
        if args.all:
            ids = [p.id for p in c.list_pods()]
        for sid in ids:
            if args.force:
                c.stop_pod(sid)
            c.remove_pod(sid)
            print(f"Removed sandbox {sid}")


def cmd_pods(args: argparse.Namespace) -> None:
    with _client(args) as c:
        kw: dict[str, Any] = {"id": args.id or "", "label_selector": dict(_labels(args.label))}
        if args.state:
            state = {"ready": 0, "notready": 1}.get(args.state.lower())
            if state is None:
                raise CLIError(f"--state must be ready or notready, got {args.state!r}")
            kw["state"] = c.pb.PodSandboxStateValue(state=state)
        pods = [p for p in c.list_pods(**kw)
                if (not args.name or args.name in p.metadata.name)
                and (not args.namespace or args.namespace in p.metadata.namespace)]
        pods.sort(key=lambda p: -p.created_at)
        states = {0: "Ready", 1: "NotReady"}
        _print_list(args.output, pods, "items", lambda: _table(
            [[p.id[:13], _ago(p.created_at), states.get(p.state, "?"), p.metadata.name, p.metadata.namespace,
              str(p.metadata.attempt), p.runtime_handler or "(default)"] for p in pods],
            ["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"]),
            [p.id for p in pods], args.quiet)


def cmd_inspectp(args: argparse.Namespace) -> None:
    with _client(args) as c:
        for sid in args.ids:
            _print_json(_inspect_out(c.pod_status(sid, verbose=True)))


def cmd_create(args: argparse.Namespace) -> None:
    with _client(args) as c:
        ccfg = load_config(args.container_config, c.pb.ContainerConfig())
        pcfg = load_config(args.pod_config, c.pb.PodSandboxConfig())
        print(c.create_container(args.pod, ccfg, pcfg))


def cmd_start(args: argparse.Namespace) -> None:
    with _client(args) as c:
        for cid in args.ids:
            c.start_container(cid)
            print(cid)


def cmd_stop(args: argparse.Namespace) -> None:
    with _client(args) as c:
        for cid in args.ids:
            c.stop_container(cid, args.stop_timeout)
            print(cid)


def cmd_rm(args: argparse.Namespace) -> None:
    with _client(args) as c:
        ids = args.ids
        if args.all:
            ids = [x.id for x in c.list_containers()]
        for cid in ids:
            st = c.container_status(cid).status
            if st.state == 1 and not args.force:
                raise CLIError(f"container {st.id} is running, stop it first or use --force")
            c.remove_container(cid)
            print(cid)


def cmd_ps(args: argparse.Namespace) -> None:
    with _client(args) as c:
        kw: dict[str, Any] = {"id": args.id or "", "pod_sandbox_id": args.pod or "",
                              "label_selector": dict(_labels(args.label))}
        names = {"created": 0, "running": 1, "exited": 2, "unknown": 3}
        if args.state:
            if args.state.lower() not in names:
                raise CLIError(f"--state must be one of {', '.join(names)}")
            kw["state"] = c.pb.ContainerStateValue(state=names[args.state.lower()])
        elif not args.all:
            kw["state"] = c.pb.ContainerStateValue(state=1)
        ctrs = [x for x in c.list_containers(**kw) if not args.name or args.name in x.metadata.name]
        ctrs.sort(key=lambda x: -x.created_at)
        if args.latest:
            ctrs = ctrs[:1]
        pods = {p.id: p for p in c.list_pods()} if not args.quiet and args.output == "table" else {}
        states = {v: k.capitalize() for k, v in names.items()}
        _print_list(args.output, ctrs, "containers", lambda: _table(
            [[x.id[:13], x.image.image, _ago(x.created_at), states.get(x.state, "?"), x.metadata.name,
              str(x.metadata.attempt), x.pod_sandbox_id[:13],
              pods[x.pod_sandbox_id].metadata.name if x.pod_sandbox_id in pods else ""] for x in ctrs],
            ["CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID", "POD"]),
            [x.id for x in ctrs], args.quiet)


def cmd_inspect(args: argparse.Namespace) -> None:
    with _client(args) as c:
        for cid in args.ids:
            _print_json(_inspect_out(c.container_status(cid, verbose=True)))


def cmd_exec(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.sync:
            r = c.exec_sync(args.container, args.cmd, timeout=args.exec_timeout)
            sys.stdout.buffer.write(r.stdout)
            sys.stdout.flush()
            sys.stderr.buffer.write(r.stderr)
            sys.stderr.flush()
            return int(r.exit_code)
        url = c.exec_url(args.container, args.cmd, stdin=args.interactive, tty=args.tty)
    size = None
    if args.tty:
        try:
            size = tuple(os.get_terminal_size(sys.stdin.fileno()))
        except OSError:
            size = None
    with _raw_terminal(args.tty and args.interactive):
        return asyncio.run(stream_exec(url, args.interactive, args.tty, size=size))  # type: ignore[arg-type]


def _parse_log_line(line: bytes) -> tuple[str, str, bool, bytes] | None:
    parts = line.split(b" ", 3)
    if len(parts) < 4:
        return None
    ts, stream, tag, msg = parts
    return ts.decode(), stream.decode(), tag == b"P", msg


def cmd_logs(args: argparse.Namespace) -> int:
    with _client(args) as c:
        st = c.container_status(args.container).status
        cid, path = st.id, st.log_path
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise CLIError(f"cannot open the log of container {cid}: {e.strerror} ({path})") from None
        with f:
            lines = f.read().split(b"\n")
            buf = lines.pop()
            if args.tail >= 0:
                lines = lines[-args.tail:] if args.tail else []
            _emit(lines, args.timestamps)
            if not args.follow:
                return 0
            idle = 0.0
            while True:
                chunk = f.read(65536)
                if chunk:
                    idle = 0.0
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    _emit(lines, args.timestamps)
                    continue
                time.sleep(0.1)
                idle += 0.1
                if idle >= 0.5:
                    idle = 0.0
                    if c.container_status(cid).status.state != 1:
                        rest = f.read()
                        if rest:
                            buf += rest
                            *lines, buf = buf.split(b"\n")
                            _emit(lines, args.timestamps)
                        return 0


def _emit(lines: list[bytes], timestamps: bool) -> None:
    for line in lines:
        parsed = _parse_log_line(line)
        if parsed is None:
            continue
        ts, stream, partial, msg = parsed
        out = sys.stderr.buffer if stream == "stderr" else sys.stdout.buffer
        if timestamps:
            out.write(ts.encode() + b" ")
        out.write(msg if partial else msg + b"\n")
        out.flush()


def cmd_stats(args: argparse.Namespace) -> None:
    with _client(args) as c:
        kw: dict[str, Any] = {"id": args.id or "", "pod_sandbox_id": args.pod or "",
                              "label_selector": dict(_labels(args.label))}
        stats = c.list_container_stats(**kw)
        if args.ids:
            stats = [s for s in stats if any(s.attributes.id.startswith(i) for i in args.ids)]
        _print_list(args.output, stats, "stats", lambda: _table(
            [[s.attributes.id[:13], s.attributes.metadata.name, f"{s.cpu.usage_core_nano_seconds.value / 1e9:.2f}s",
              _bytes(s.memory.working_set_bytes.value), _bytes(s.writable_layer.used_bytes.value),
              str(s.writable_layer.inodes_used.value)] for s in stats],
            ["CONTAINER", "NAME", "CPU TIME", "MEM", "DISK", "INODES"]), [s.attributes.id for s in stats], False)


def _bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.4g}{unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def cmd_pull(args: argparse.Namespace) -> None:
    with _client(args) as c:
        auth = None
        if args.creds:
            user, _, password = args.creds.partition(":")
            auth = c.pb.AuthConfig(username=user, password=password)
        elif args.auth:
            auth = c.pb.AuthConfig(auth=args.auth)
        ref = c.pull(args.image, auth)
        print(f"Image is up to date for {ref}")


def cmd_images(args: argparse.Namespace) -> None:
    with _client(args) as c:
        imgs = c.list_images(args.image or "")
        rows = []
        for i in imgs:
            for tag in i.repo_tags or ["<none>:<none>"]:
                repo, _, t = tag.rpartition(":")
                rows.append([repo, t, i.id.removeprefix("sha256:")[:13], _bytes(i.size)])
        _print_list(args.output, imgs, "images", lambda: _table(rows, ["IMAGE", "TAG", "IMAGE ID", "SIZE"]),
                    [i.id for i in imgs], args.quiet)


def cmd_rmi(args: argparse.Namespace) -> None:
    with _client(args) as c:
        for ref in args.images:
            st = c.image_status(ref)
            if not st.HasField("image"):
                raise CLIError(f"no such image {ref}")
            c.remove_image(ref)
            print(f"Deleted: {', '.join(st.image.repo_tags) or st.image.id}")


def cmd_events(args: argparse.Namespace) -> int:
    """Follow GetContainerEvents, one JSON object per line (crictl events -o json, compact)."""
    from google.protobuf import json_format

    with _client(args) as c:
        try:
            for ev in c.runtime.GetContainerEvents(c.pb.GetEventsRequest()):
                d = json_format.MessageToDict(ev)
                d["containerEventType"] = c.pb.ContainerEventType.Name(ev.container_event_type)
                print(json.dumps(d, separators=(",", ":")), flush=True)
        except KeyboardInterrupt:
            return 0
    return 0


def _labels(items: list[str] | None) -> Iterable[tuple[str, str]]:
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise CLIError(f"--label must be key=value, got {item!r}")
        yield k, v


def register(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("-r", "--runtime-endpoint", default=None,
                        help=f"CRI endpoint (default ${ENDPOINT_ENV} or {DEFAULT_ENDPOINT})")
    parser.add_argument("-t", "--timeout", type=float, default=120.0, help="seconds per call (default %(default)s)")
    sub = parser.add_subparsers(dest="crictl_command", metavar="COMMAND")
    sub.required = True

    def add(cmd: str, fn: Callable[[argparse.Namespace], Any], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(cmd, help=help_, description=help_)
        p.set_defaults(func=_grpc_errors(fn))
        return p

    add("version", cmd_version, "runtime name and versions")
    add("info", cmd_info, "runtime status and configuration")
    p = add("runp", cmd_runp, "run a pod sandbox from a pod-config file")
    p.add_argument("config")
    p.add_argument("--runtime", default="", help="runtime handler")
    p = add("stopp", cmd_stopp, "stop pod sandboxes")
    p.add_argument("ids", nargs="+")
    p = add("rmp", cmd_rmp, "remove pod sandboxes")
    p.add_argument("ids", nargs="*")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-a", "--all", action="store_true")
    p = add("pods", cmd_pods, "list pod sandboxes")
    p.add_argument("--id")
    p.add_argument("--name")
    p.add_argument("--namespace")
    p.add_argument("--state")
    p.add_argument("--label", action="append")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-o", "--output", default="table", choices=["table", "json", "yaml"])
    p = add("inspectp", cmd_inspectp, "pod sandbox status (JSON)")
    p.add_argument("ids", nargs="+")
    p.add_argument("-o", "--output", default="json", choices=["json"])
    p = add("create", cmd_create, "create a container in a pod")
    p.add_argument("pod")
    p.add_argument("container_config")
    p.add_argument("pod_config")
    p = add("start", cmd_start, "start created containers")
    p.add_argument("ids", nargs="+")
    p = add("stop", cmd_stop, "stop running containers")
    p.add_argument("ids", nargs="+")
    p.add_argument("--timeout", dest="stop_timeout", type=int, default=10, help="grace seconds before SIGKILL")
    p = add("rm", cmd_rm, "remove containers")
    p.add_argument("ids", nargs="*")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-a", "--all", action="store_true")
    p = add("ps", cmd_ps, "list containers")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("--id")
    p.add_argument("-p", "--pod")
    p.add_argument("--name")
    p.add_argument("--state")
    p.add_argument("--label", action="append")
    p.add_argument("-l", "--latest", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-o", "--output", default="table", choices=["table", "json", "yaml"])
    add("events", cmd_events, "follow container and pod sandbox lifecycle events (JSON lines)")
    p = add("inspect", cmd_inspect, "container status (JSON)")
    p.add_argument("ids", nargs="+")
    p.add_argument("-o", "--output", default="json", choices=["json"])
    p = add("exec", cmd_exec, "run a command in a running container")
    p.add_argument("-i", "--interactive", action="store_true", help="forward stdin")
    p.add_argument("-t", "--tty", action="store_true", help="allocate a terminal")
    p.add_argument("-s", "--sync", action="store_true", help="use ExecSync (no streaming)")
    p.add_argument("--timeout", dest="exec_timeout", type=int, default=0, help="ExecSync timeout seconds")
    p.add_argument("container")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p = add("logs", cmd_logs, "print a container's logs")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", type=int, default=-1)
    p.add_argument("--timestamps", action="store_true")
    p.add_argument("container")
    p = add("stats", cmd_stats, "container resource usage")
    p.add_argument("ids", nargs="*")
    p.add_argument("--id")
    p.add_argument("-p", "--pod")
    p.add_argument("--label", action="append")
    p.add_argument("-o", "--output", default="table", choices=["table", "json", "yaml"])
    p = add("pull", cmd_pull, "pull an image")
    p.add_argument("image")
    p.add_argument("--creds", help="user:password")
    p.add_argument("--auth", help="base64 of user:password")
    p = add("images", cmd_images, "list images")
    p.add_argument("image", nargs="?")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-o", "--output", default="table", choices=["table", "json", "yaml"])
    p = add("rmi", cmd_rmi, "remove images")
    p.add_argument("images", nargs="+")
