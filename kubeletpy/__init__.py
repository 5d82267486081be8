"""kubeletpy: the node agent, the bundled control plane, and the CLI."""

__version__ = "0.1.0"
