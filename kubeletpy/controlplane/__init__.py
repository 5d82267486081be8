"""A small Kubernetes-compatible control plane.

Layers, each usable on its own:

* `storage`   -- a key/value interface with one global revision (SQLite now, etcd later);
* `registry`  -- one generic create/get/list/update/patch/delete/watch path for every kind,
                 specialised per kind by a small `Strategy` (see `kinds`);
* `server`    -- the aiohttp HTTPS front end: discovery, OpenAPI, auth, REST conventions;
* `auth`/`pki` -- bearer tokens and the CA/serving certificate made on first start.

Pod log/exec/attach/portforward are proxied to the node agent in a later issue; the API
server answers them with a clear NotFound until then.
"""
