"""The container runtime: images and snapshots, sandboxes and containers, the shim, the CRI server."""
