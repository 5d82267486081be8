"""The per-pod shim (stdlib only: it is imported by a `python3 -S` process per pod)."""
