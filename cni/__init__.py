"""CNI plugins (bridge, host-local, loopback, portmap) and the invoker that runs a plugin chain."""
