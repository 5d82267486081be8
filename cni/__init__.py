"""CNI plugins (bridge, host-local, loopback, portmap) and the invoker that runs a plugin chain.

Spec: CNI 1.0.0 (also 0.3.x/0.4.0 configs; STATUS/GC of 1.1.0). Every plugin is
both a real executable (console scripts ``kubeletpy-bridge``, ``kubeletpy-host-local``,
``kubeletpy-loopback``, ``kubeletpy-portmap``; :func:`cni.install.install_plugins`
writes ``/opt/cni/bin`` wrappers) and importable, so the runtime can skip
fork/exec and interpreter start-up.

How the runtime uses it (in-process, netns given as a path)::

    from cni.invoker import Invoker, load_conf_dir

    inv = Invoker()                                  # /opt/cni/bin:/usr/lib/cni, /var/lib/cni/results
    net = load_conf_dir("/etc/cni/net.d")            # first .conflist/.conf by name
    res = inv.add(net, container_id, "/run/kubeletpy/netns/<pod>", "eth0",
                  cni_args={"K8S_POD_NAMESPACE": ns, "K8S_POD_NAME": name},
                  capability_args={"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    pod_ip = res["ips"][0]["address"]
    inv.check(net, container_id, netns_path, "eth0")
    inv.delete(net, container_id, netns_path, "eth0")   # idempotent; netns may already be gone
    inv.repair(net, live_container_ids)                   # at start-up

Errors are :class:`cni.spec.CNIError` (``code``, ``msg``, ``details``), exactly
what the executables print. One plugin alone: ``cni.plugins.run("bridge", conf, CNIArgs(...))``.
Call from plain threads (``asyncio.to_thread`` in async code): pyroute2's
sync API runs its own event loop.

Modules: :mod:`cni.spec` (protocol facts, errors, result versions),
:mod:`cni.netns` (thread-safe netns access), :mod:`cni.firewall` (nftables /
iptables NAT), :mod:`cni.plugins` (the plugins), :mod:`cni.execplugin`
(running executables), :mod:`cni.skel` (executable entry point),
:mod:`cni.invoker`, :mod:`cni.install`.
"""
