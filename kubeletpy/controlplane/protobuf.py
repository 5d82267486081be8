"""Request bodies in `application/vnd.kubernetes.protobuf`, decoded to the JSON the JSON path gets.

kubectl 1.32 and 1.33 send the typed-client requests of these commands as protobuf (1.27-1.31
send JSON; `kubectl run` and `create -f` always send JSON), measured with `-v=8`:

- `create namespace|configmap|secret ...`: POST of a v1 Namespace, ConfigMap or Secret;
- `debug POD --copy-to=NEW ...` and `debug node/NODE ...`: POST of a v1 Pod;
- `certificate approve|deny NAME`: PUT of a certificates.k8s.io/v1 CertificateSigningRequest to
  `.../certificatesigningrequests/NAME/approval`.

The body is the 4-byte magic `k8s\\0` and a `runtime.Unknown` message:

    Unknown  { TypeMeta typeMeta = 1; bytes raw = 2; string contentEncoding = 3; string contentType = 4 }
    TypeMeta { string apiVersion = 1; string kind = 2 }

and `raw` is the typed object in the field numbers of k8s.io/api core/v1, certificates/v1 and
apimachinery meta/v1 `generated.proto`. This module is a small wire reader (varints and
length-delimited fields) plus schemas for exactly the kinds in `KINDS`; anything else is refused
with 415 by the caller.

Go's generated marshallers write every non-pointer field, empty or not (`name=""`, `stdin=false`,
`generation=0`, an empty `creationTimestamp`), and a pointer field only when it is set. The wire
cannot tell "false" from "not set" any other way, so the schema says which fields are pointers and
the decoder rebuilds the JSON Go's `omitempty` would have written:

- "string", "int", "bool": non-pointer; empty string, 0 and false are dropped;
- "string_ptr", "int_ptr", "bool_ptr": pointer; kept whenever present (`privileged: false`,
  `runAsUser: 0`, `terminationGracePeriodSeconds: 0` mean something);
- a schema dict: a non-pointer struct, dropped when it decodes empty; `Ptr(schema)`: a pointer to
  a struct, kept even when empty (`emptyDir: {}`, an empty label selector that selects everything);
- `Inline(schema)`: a struct JSON inlines but protobuf nests (Volume's VolumeSource, Probe's handler);
- "bytes" and "map_bytes" values come out base64-encoded, as JSON has them; "quantity" and
  "intorstr" are resource.Quantity and intstr.IntOrString, always kept (Go writes their zero,
  `"0"` and `0`, into JSON too); "quantity_ptr" is a *Quantity (`emptyDir.sizeLimit`).

Namespace, ConfigMap and Secret skip fields they do not know, as protobuf readers do. Pod and
CertificateSigningRequest (`STRICT`) have large schemas that keep growing upstream, so a field this
table does not know is refused (DecodeError, a 400 for the client) rather than silently dropped:
the client would otherwise get a 201 for an object that lost part of its spec.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

MAGIC = b"k8s\x00"


class DecodeError(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise DecodeError("varint too long")


def fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value): an int for varint/fixed, bytes for length-delimited."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise DecodeError("field number 0")
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise DecodeError(f"field {num}: length {n} past the end of the message")
            val, pos = buf[pos:pos + n], pos + n
        elif wt == 1:
            if pos + 8 > len(buf):
                raise DecodeError("truncated fixed64")
            val, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wt == 5:
            if pos + 4 > len(buf):
                raise DecodeError("truncated fixed32")
            val, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise DecodeError(f"field {num}: unsupported wire type {wt}")
        out.append((num, wt, val))
    return out


# -- schemas: field number -> (json name, type, repeated); the type vocabulary is in the docstring

Schema = dict[int, tuple[str, Any, bool]]


class Ptr:
    """A pointer to a struct: present means set, so it is kept even when it decodes empty."""

    __slots__ = ("schema",)

    def __init__(self, schema: Schema) -> None:
        self.schema = schema


class Inline:
    """A struct embedded with `json:",inline"`: its own protobuf field, its keys merged into the parent."""

    __slots__ = ("schema",)

    def __init__(self, schema: Schema) -> None:
        self.schema = schema


# pointer scalars and the apimachinery types whose zero value is still written to JSON
KEEP = frozenset({"string_ptr", "int_ptr", "bool_ptr", "quantity", "quantity_ptr", "intorstr"})
# map<string, V> fields (repeated entry messages {key = 1; value = 2}) -> the type of V
MAPS = {"map_string": "string", "map_bytes": "bytes", "map_quantity": "quantity",
        "map_string_list": "string_list"}

TIME: Schema = {1: ("seconds", "int", False), 2: ("nanos", "int", False)}
QUANTITY: Schema = {1: ("string", "string", False)}
INT_OR_STRING: Schema = {1: ("type", "int", False), 2: ("intVal", "int", False), 3: ("strVal", "string", False)}
STRING_LIST: Schema = {1: ("items", "string", True)}  # certificates/v1 ExtraValue, a []string in JSON
FIELDS_V1 = "fieldsV1"
OWNER_REFERENCE: Schema = {
    1: ("kind", "string", False), 3: ("name", "string", False), 4: ("uid", "string", False),
    5: ("apiVersion", "string", False), 6: ("controller", "bool_ptr", False),
    7: ("blockOwnerDeletion", "bool_ptr", False),
}
MANAGED_FIELDS_ENTRY: Schema = {
    1: ("manager", "string", False), 2: ("operation", "string", False), 3: ("apiVersion", "string", False),
    4: ("time", "time", False), 6: ("fieldsType", "string", False), 7: ("fieldsV1", FIELDS_V1, False),
    8: ("subresource", "string", False),
}
OBJECT_META: Schema = {
    1: ("name", "string", False), 2: ("generateName", "string", False), 3: ("namespace", "string", False),
    4: ("selfLink", "string", False), 5: ("uid", "string", False), 6: ("resourceVersion", "string", False),
    7: ("generation", "int", False), 8: ("creationTimestamp", "time", False),
    9: ("deletionTimestamp", "time", False), 10: ("deletionGracePeriodSeconds", "int_ptr", False),
    11: ("labels", "map_string", False), 12: ("annotations", "map_string", False),
    13: ("ownerReferences", OWNER_REFERENCE, True), 14: ("finalizers", "string", True),
    17: ("managedFields", MANAGED_FIELDS_ENTRY, True),
}
LABEL_SELECTOR_REQUIREMENT: Schema = {
    1: ("key", "string", False), 2: ("operator", "string", False), 3: ("values", "string", True),
}
LABEL_SELECTOR: Schema = {
    1: ("matchLabels", "map_string", False), 2: ("matchExpressions", LABEL_SELECTOR_REQUIREMENT, True),
}
NAMESPACE_CONDITION: Schema = {
    1: ("type", "string", False), 2: ("status", "string", False), 4: ("lastTransitionTime", "time", False),
    5: ("reason", "string", False), 6: ("message", "string", False),
}
NAMESPACE: Schema = {
    1: ("metadata", OBJECT_META, False),
    2: ("spec", {1: ("finalizers", "string", True)}, False),
    3: ("status", {1: ("phase", "string", False), 2: ("conditions", NAMESPACE_CONDITION, True)}, False),
}
CONFIGMAP: Schema = {
    1: ("metadata", OBJECT_META, False), 2: ("data", "map_string", False), 3: ("binaryData", "map_bytes", False),
    4: ("immutable", "bool_ptr", False),
}
SECRET: Schema = {
    1: ("metadata", OBJECT_META, False), 2: ("data", "map_bytes", False), 3: ("type", "string", False),
    4: ("stringData", "map_string", False), 5: ("immutable", "bool_ptr", False),
}

# -- v1 Pod: every struct reachable from core/v1 Pod, in the field numbers of k8s.io/api v0.36
# (Kubernetes 1.36) core/v1 generated.proto; pointer or not from the Go types (types.go). Fields
# upstream adds later are refused (see STRICT) until they are added here.

HOST_PATH_VOLUME_SOURCE: Schema = {
    1: ("path", "string", False), 2: ("type", "string_ptr", False),
}
EMPTY_DIR_VOLUME_SOURCE: Schema = {
    1: ("medium", "string", False), 2: ("sizeLimit", "quantity_ptr", False),
}
GCE_PERSISTENT_DISK_VOLUME_SOURCE: Schema = {
    1: ("pdName", "string", False), 2: ("fsType", "string", False), 3: ("partition", "int", False),
    4: ("readOnly", "bool", False),
}
AWS_ELASTIC_BLOCK_STORE_VOLUME_SOURCE: Schema = {
    1: ("volumeID", "string", False), 2: ("fsType", "string", False), 3: ("partition", "int", False),
    4: ("readOnly", "bool", False),
}
GIT_REPO_VOLUME_SOURCE: Schema = {
    1: ("repository", "string", False), 2: ("revision", "string", False), 3: ("directory", "string", False),
}
KEY_TO_PATH: Schema = {
    1: ("key", "string", False), 2: ("path", "string", False), 3: ("mode", "int_ptr", False),
}
SECRET_VOLUME_SOURCE: Schema = {
    1: ("secretName", "string", False), 2: ("items", KEY_TO_PATH, True),
    3: ("defaultMode", "int_ptr", False), 4: ("optional", "bool_ptr", False),
}
NFS_VOLUME_SOURCE: Schema = {
    1: ("server", "string", False), 2: ("path", "string", False), 3: ("readOnly", "bool", False),
}
LOCAL_OBJECT_REFERENCE: Schema = {
    1: ("name", "string", False),
}
ISCSI_VOLUME_SOURCE: Schema = {
    1: ("targetPortal", "string", False), 2: ("iqn", "string", False), 3: ("lun", "int", False),
    4: ("iscsiInterface", "string", False), 5: ("fsType", "string", False), 6: ("readOnly", "bool", False),
    7: ("portals", "string", True), 8: ("chapAuthDiscovery", "bool", False),
    10: ("secretRef", Ptr(LOCAL_OBJECT_REFERENCE), False), 11: ("chapAuthSession", "bool", False),
    12: ("initiatorName", "string_ptr", False),
}
GLUSTERFS_VOLUME_SOURCE: Schema = {
    1: ("endpoints", "string", False), 2: ("path", "string", False), 3: ("readOnly", "bool", False),
}
PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE: Schema = {
    1: ("claimName", "string", False), 2: ("readOnly", "bool", False),
}
RBD_VOLUME_SOURCE: Schema = {
    1: ("monitors", "string", True), 2: ("image", "string", False), 3: ("fsType", "string", False),
    4: ("pool", "string", False), 5: ("user", "string", False), 6: ("keyring", "string", False),
    7: ("secretRef", Ptr(LOCAL_OBJECT_REFERENCE), False), 8: ("readOnly", "bool", False),
}
FLEX_VOLUME_SOURCE: Schema = {
    1: ("driver", "string", False), 2: ("fsType", "string", False),
    3: ("secretRef", Ptr(LOCAL_OBJECT_REFERENCE), False), 4: ("readOnly", "bool", False),
    5: ("options", "map_string", False),
}
CINDER_VOLUME_SOURCE: Schema = {
    1: ("volumeID", "string", False), 2: ("fsType", "string", False), 3: ("readOnly", "bool", False),
    4: ("secretRef", Ptr(LOCAL_OBJECT_REFERENCE), False),
}
CEPH_FS_VOLUME_SOURCE: Schema = {
    1: ("monitors", "string", True), 2: ("path", "string", False), 3: ("user", "string", False),
    4: ("secretFile", "string", False), 5: ("secretRef", Ptr(LOCAL_OBJECT_REFERENCE), False),
    6: ("readOnly", "bool", False),
}
FLOCKER_VOLUME_SOURCE: Schema = {
    1: ("datasetName", "string", False), 2: ("datasetUUID", "string", False),
}
OBJECT_FIELD_SELECTOR: Schema = {
    1: ("apiVersion", "string", False), 2: ("fieldPath", "string", False),
}
RESOURCE_FIELD_SELECTOR: Schema = {
    1: ("containerName", "string", False), 2: ("resource", "string", False),
    3: ("divisor", "quantity", False),
}
DOWNWARD_API_VOLUME_FILE: Schema = {
    1: ("path", "string", False), 2: ("fieldRef", Ptr(OBJECT_FIELD_SELECTOR), False),
    3: ("resourceFieldRef", Ptr(RESOURCE_FIELD_SELECTOR), False), 4: ("mode", "int_ptr", False),
}
DOWNWARD_API_VOLUME_SOURCE: Schema = {
    1: ("items", DOWNWARD_API_VOLUME_FILE, True), 2: ("defaultMode", "int_ptr", False),
}
FC_VOLUME_SOURCE: Schema = {
    1: ("targetWWNs", "string", True), 2: ("lun", "int_ptr", False), 3: ("fsType", "string", False),
    4: ("readOnly", "bool", False), 5: ("wwids", "string", True),
}
AZURE_FILE_VOLUME_SOURCE: Schema = {
    1: ("secretName", "string", False), 2: ("shareName", "string", False), 3: ("readOnly", "bool", False),
}
CONFIG_MAP_VOLUME_SOURCE: Schema = {
    1: ("", Inline(LOCAL_OBJECT_REFERENCE), False), 2: ("items", KEY_TO_PATH, True),
    3: ("defaultMode", "int_ptr", False), 4: ("optional", "bool_ptr", False),
}
VSPHERE_VIRTUAL_DISK_VOLUME_SOURCE: Schema = {
    1: ("volumePath", "string", False), 2: ("fsType", "string", False),
    3: ("storagePolicyName", "string", False), 4: ("storagePolicyID", "string", False),
}
QUOBYTE_VOLUME_SOURCE: Schema = {
    1: ("registry", "string", False), 2: ("volume", "string", False), 3: ("readOnly", "bool", False),
    4: ("user", "string", False), 5: ("group", "string", False), 6: ("tenant", "string", False),
}
AZURE_DISK_VOLUME_SOURCE: Schema = {
    1: ("diskName", "string", False), 2: ("diskURI", "string", False),
    3: ("cachingMode", "string_ptr", False), 4: ("fsType", "string_ptr", False),
    5: ("readOnly", "bool_ptr", False), 6: ("kind", "string_ptr", False),
}
PHOTON_PERSISTENT_DISK_VOLUME_SOURCE: Schema = {
    1: ("pdID", "string", False), 2: ("fsType", "string", False),
}
SECRET_PROJECTION: Schema = {
    1: ("", Inline(LOCAL_OBJECT_REFERENCE), False), 2: ("items", KEY_TO_PATH, True),
    4: ("optional", "bool_ptr", False),
}
DOWNWARD_API_PROJECTION: Schema = {
    1: ("items", DOWNWARD_API_VOLUME_FILE, True),
}
CONFIG_MAP_PROJECTION: Schema = {
    1: ("", Inline(LOCAL_OBJECT_REFERENCE), False), 2: ("items", KEY_TO_PATH, True),
    4: ("optional", "bool_ptr", False),
}
SERVICE_ACCOUNT_TOKEN_PROJECTION: Schema = {
    1: ("audience", "string", False), 2: ("expirationSeconds", "int_ptr", False),
    3: ("path", "string", False),
}
CLUSTER_TRUST_BUNDLE_PROJECTION: Schema = {
    1: ("name", "string_ptr", False), 2: ("signerName", "string_ptr", False),
    3: ("labelSelector", Ptr(LABEL_SELECTOR), False), 4: ("path", "string", False),
    5: ("optional", "bool_ptr", False),
}
POD_CERTIFICATE_PROJECTION: Schema = {
    1: ("signerName", "string", False), 2: ("keyType", "string", False),
    3: ("maxExpirationSeconds", "int_ptr", False), 4: ("credentialBundlePath", "string", False),
    5: ("keyPath", "string", False), 6: ("certificateChainPath", "string", False),
    7: ("userAnnotations", "map_string", False),
}
VOLUME_PROJECTION: Schema = {
    1: ("secret", Ptr(SECRET_PROJECTION), False), 2: ("downwardAPI", Ptr(DOWNWARD_API_PROJECTION), False),
    3: ("configMap", Ptr(CONFIG_MAP_PROJECTION), False),
    4: ("serviceAccountToken", Ptr(SERVICE_ACCOUNT_TOKEN_PROJECTION), False),
    5: ("clusterTrustBundle", Ptr(CLUSTER_TRUST_BUNDLE_PROJECTION), False),
    6: ("podCertificate", Ptr(POD_CERTIFICATE_PROJECTION), False),
}
PROJECTED_VOLUME_SOURCE: Schema = {
    1: ("sources", VOLUME_PROJECTION, True), 2: ("defaultMode", "int_ptr", False),
}
PORTWORX_VOLUME_SOURCE: Schema = {
    1: ("volumeID", "string", False), 2: ("fsType", "string", False), 3: ("readOnly", "bool", False),
}
SCALE_IO_VOLUME_SOURCE: Schema = {
    1: ("gateway", "string", False), 2: ("system", "string", False),
    3: ("secretRef", Ptr(LOCAL_OBJECT_REFERENCE), False), 4: ("sslEnabled", "bool", False),
    5: ("protectionDomain", "string", False), 6: ("storagePool", "string", False),
    7: ("storageMode", "string", False), 8: ("volumeName", "string", False), 9: ("fsType", "string", False),
    10: ("readOnly", "bool", False),
}
STORAGE_OS_VOLUME_SOURCE: Schema = {
    1: ("volumeName", "string", False), 2: ("volumeNamespace", "string", False),
    3: ("fsType", "string", False), 4: ("readOnly", "bool", False),
    5: ("secretRef", Ptr(LOCAL_OBJECT_REFERENCE), False),
}
CSI_VOLUME_SOURCE: Schema = {
    1: ("driver", "string", False), 2: ("readOnly", "bool_ptr", False), 3: ("fsType", "string_ptr", False),
    4: ("volumeAttributes", "map_string", False),
    5: ("nodePublishSecretRef", Ptr(LOCAL_OBJECT_REFERENCE), False),
}
VOLUME_RESOURCE_REQUIREMENTS: Schema = {
    1: ("limits", "map_quantity", False), 2: ("requests", "map_quantity", False),
}
TYPED_LOCAL_OBJECT_REFERENCE: Schema = {
    1: ("apiGroup", "string_ptr", False), 2: ("kind", "string", False), 3: ("name", "string", False),
}
TYPED_OBJECT_REFERENCE: Schema = {
    1: ("apiGroup", "string_ptr", False), 2: ("kind", "string", False), 3: ("name", "string", False),
    4: ("namespace", "string_ptr", False),
}
PERSISTENT_VOLUME_CLAIM_SPEC: Schema = {
    1: ("accessModes", "string", True), 2: ("resources", VOLUME_RESOURCE_REQUIREMENTS, False),
    3: ("volumeName", "string", False), 4: ("selector", Ptr(LABEL_SELECTOR), False),
    5: ("storageClassName", "string_ptr", False), 6: ("volumeMode", "string_ptr", False),
    7: ("dataSource", Ptr(TYPED_LOCAL_OBJECT_REFERENCE), False),
    8: ("dataSourceRef", Ptr(TYPED_OBJECT_REFERENCE), False),
    9: ("volumeAttributesClassName", "string_ptr", False),
}
PERSISTENT_VOLUME_CLAIM_TEMPLATE: Schema = {
    1: ("metadata", OBJECT_META, False), 2: ("spec", PERSISTENT_VOLUME_CLAIM_SPEC, False),
}
EPHEMERAL_VOLUME_SOURCE: Schema = {
    1: ("volumeClaimTemplate", Ptr(PERSISTENT_VOLUME_CLAIM_TEMPLATE), False),
}
IMAGE_VOLUME_SOURCE: Schema = {
    1: ("reference", "string", False), 2: ("pullPolicy", "string", False),
}
VOLUME_SOURCE: Schema = {
    1: ("hostPath", Ptr(HOST_PATH_VOLUME_SOURCE), False),
    2: ("emptyDir", Ptr(EMPTY_DIR_VOLUME_SOURCE), False),
    3: ("gcePersistentDisk", Ptr(GCE_PERSISTENT_DISK_VOLUME_SOURCE), False),
    4: ("awsElasticBlockStore", Ptr(AWS_ELASTIC_BLOCK_STORE_VOLUME_SOURCE), False),
    5: ("gitRepo", Ptr(GIT_REPO_VOLUME_SOURCE), False), 6: ("secret", Ptr(SECRET_VOLUME_SOURCE), False),
    7: ("nfs", Ptr(NFS_VOLUME_SOURCE), False), 8: ("iscsi", Ptr(ISCSI_VOLUME_SOURCE), False),
    9: ("glusterfs", Ptr(GLUSTERFS_VOLUME_SOURCE), False),
    10: ("persistentVolumeClaim", Ptr(PERSISTENT_VOLUME_CLAIM_VOLUME_SOURCE), False),
    11: ("rbd", Ptr(RBD_VOLUME_SOURCE), False), 12: ("flexVolume", Ptr(FLEX_VOLUME_SOURCE), False),
    13: ("cinder", Ptr(CINDER_VOLUME_SOURCE), False), 14: ("cephfs", Ptr(CEPH_FS_VOLUME_SOURCE), False),
    15: ("flocker", Ptr(FLOCKER_VOLUME_SOURCE), False),
    16: ("downwardAPI", Ptr(DOWNWARD_API_VOLUME_SOURCE), False), 17: ("fc", Ptr(FC_VOLUME_SOURCE), False),
    18: ("azureFile", Ptr(AZURE_FILE_VOLUME_SOURCE), False),
    19: ("configMap", Ptr(CONFIG_MAP_VOLUME_SOURCE), False),
    20: ("vsphereVolume", Ptr(VSPHERE_VIRTUAL_DISK_VOLUME_SOURCE), False),
    21: ("quobyte", Ptr(QUOBYTE_VOLUME_SOURCE), False),
    22: ("azureDisk", Ptr(AZURE_DISK_VOLUME_SOURCE), False),
    23: ("photonPersistentDisk", Ptr(PHOTON_PERSISTENT_DISK_VOLUME_SOURCE), False),
    24: ("portworxVolume", Ptr(PORTWORX_VOLUME_SOURCE), False),
    25: ("scaleIO", Ptr(SCALE_IO_VOLUME_SOURCE), False),
    26: ("projected", Ptr(PROJECTED_VOLUME_SOURCE), False),
    27: ("storageos", Ptr(STORAGE_OS_VOLUME_SOURCE), False), 28: ("csi", Ptr(CSI_VOLUME_SOURCE), False),
    29: ("ephemeral", Ptr(EPHEMERAL_VOLUME_SOURCE), False), 30: ("image", Ptr(IMAGE_VOLUME_SOURCE), False),
}
VOLUME: Schema = {
    1: ("name", "string", False), 2: ("", Inline(VOLUME_SOURCE), False),
}
CONTAINER_PORT: Schema = {
    1: ("name", "string", False), 2: ("hostPort", "int", False), 3: ("containerPort", "int", False),
    4: ("protocol", "string", False), 5: ("hostIP", "string", False),
}
CONFIG_MAP_ENV_SOURCE: Schema = {
    1: ("", Inline(LOCAL_OBJECT_REFERENCE), False), 2: ("optional", "bool_ptr", False),
}
SECRET_ENV_SOURCE: Schema = {
    1: ("", Inline(LOCAL_OBJECT_REFERENCE), False), 2: ("optional", "bool_ptr", False),
}
ENV_FROM_SOURCE: Schema = {
    1: ("prefix", "string", False), 2: ("configMapRef", Ptr(CONFIG_MAP_ENV_SOURCE), False),
    3: ("secretRef", Ptr(SECRET_ENV_SOURCE), False),
}
CONFIG_MAP_KEY_SELECTOR: Schema = {
    1: ("", Inline(LOCAL_OBJECT_REFERENCE), False), 2: ("key", "string", False),
    3: ("optional", "bool_ptr", False),
}
SECRET_KEY_SELECTOR: Schema = {
    1: ("", Inline(LOCAL_OBJECT_REFERENCE), False), 2: ("key", "string", False),
    3: ("optional", "bool_ptr", False),
}
FILE_KEY_SELECTOR: Schema = {
    1: ("volumeName", "string", False), 2: ("path", "string", False), 3: ("key", "string", False),
    4: ("optional", "bool_ptr", False),
}
ENV_VAR_SOURCE: Schema = {
    1: ("fieldRef", Ptr(OBJECT_FIELD_SELECTOR), False),
    2: ("resourceFieldRef", Ptr(RESOURCE_FIELD_SELECTOR), False),
    3: ("configMapKeyRef", Ptr(CONFIG_MAP_KEY_SELECTOR), False),
    4: ("secretKeyRef", Ptr(SECRET_KEY_SELECTOR), False), 5: ("fileKeyRef", Ptr(FILE_KEY_SELECTOR), False),
}
ENV_VAR: Schema = {
    1: ("name", "string", False), 2: ("value", "string", False),
    3: ("valueFrom", Ptr(ENV_VAR_SOURCE), False),
}
RESOURCE_CLAIM: Schema = {
    1: ("name", "string", False), 2: ("request", "string", False),
}
RESOURCE_REQUIREMENTS: Schema = {
    1: ("limits", "map_quantity", False), 2: ("requests", "map_quantity", False),
    3: ("claims", RESOURCE_CLAIM, True),
}
CONTAINER_RESIZE_POLICY: Schema = {
    1: ("resourceName", "string", False), 2: ("restartPolicy", "string", False),
}
CONTAINER_RESTART_RULE_ON_EXIT_CODES: Schema = {
    1: ("operator", "string", False), 2: ("values", "int", True),
}
CONTAINER_RESTART_RULE: Schema = {
    1: ("action", "string", False), 2: ("exitCodes", Ptr(CONTAINER_RESTART_RULE_ON_EXIT_CODES), False),
}
VOLUME_MOUNT: Schema = {
    1: ("name", "string", False), 2: ("readOnly", "bool", False), 3: ("mountPath", "string", False),
    4: ("subPath", "string", False), 5: ("mountPropagation", "string_ptr", False),
    6: ("subPathExpr", "string", False), 7: ("recursiveReadOnly", "string_ptr", False),
}
VOLUME_DEVICE: Schema = {
    1: ("name", "string", False), 2: ("devicePath", "string", False),
}
EXEC_ACTION: Schema = {
    1: ("command", "string", True),
}
HTTP_HEADER: Schema = {
    1: ("name", "string", False), 2: ("value", "string", False),
}
HTTP_GET_ACTION: Schema = {
    1: ("path", "string", False), 2: ("port", "intorstr", False), 3: ("host", "string", False),
    4: ("scheme", "string", False), 5: ("httpHeaders", HTTP_HEADER, True),
}
TCP_SOCKET_ACTION: Schema = {
    1: ("port", "intorstr", False), 2: ("host", "string", False),
}
GRPC_ACTION: Schema = {
    1: ("port", "int", False), 2: ("service", "string_ptr", False),
}
PROBE_HANDLER: Schema = {
    1: ("exec", Ptr(EXEC_ACTION), False), 2: ("httpGet", Ptr(HTTP_GET_ACTION), False),
    3: ("tcpSocket", Ptr(TCP_SOCKET_ACTION), False), 4: ("grpc", Ptr(GRPC_ACTION), False),
}
PROBE: Schema = {
    1: ("", Inline(PROBE_HANDLER), False), 2: ("initialDelaySeconds", "int", False),
    3: ("timeoutSeconds", "int", False), 4: ("periodSeconds", "int", False),
    5: ("successThreshold", "int", False), 6: ("failureThreshold", "int", False),
    7: ("terminationGracePeriodSeconds", "int_ptr", False),
}
SLEEP_ACTION: Schema = {
    1: ("seconds", "int", False),
}
LIFECYCLE_HANDLER: Schema = {
    1: ("exec", Ptr(EXEC_ACTION), False), 2: ("httpGet", Ptr(HTTP_GET_ACTION), False),
    3: ("tcpSocket", Ptr(TCP_SOCKET_ACTION), False), 4: ("sleep", Ptr(SLEEP_ACTION), False),
}
LIFECYCLE: Schema = {
    1: ("postStart", Ptr(LIFECYCLE_HANDLER), False), 2: ("preStop", Ptr(LIFECYCLE_HANDLER), False),
    3: ("stopSignal", "string_ptr", False),
}
CAPABILITIES: Schema = {
    1: ("add", "string", True), 2: ("drop", "string", True),
}
SE_LINUX_OPTIONS: Schema = {
    1: ("user", "string", False), 2: ("role", "string", False), 3: ("type", "string", False),
    4: ("level", "string", False),
}
WINDOWS_SECURITY_CONTEXT_OPTIONS: Schema = {
    1: ("gmsaCredentialSpecName", "string_ptr", False), 2: ("gmsaCredentialSpec", "string_ptr", False),
    3: ("runAsUserName", "string_ptr", False), 4: ("hostProcess", "bool_ptr", False),
}
SECCOMP_PROFILE: Schema = {
    1: ("type", "string", False), 2: ("localhostProfile", "string_ptr", False),
}
APP_ARMOR_PROFILE: Schema = {
    1: ("type", "string", False), 2: ("localhostProfile", "string_ptr", False),
}
SECURITY_CONTEXT: Schema = {
    1: ("capabilities", Ptr(CAPABILITIES), False), 2: ("privileged", "bool_ptr", False),
    3: ("seLinuxOptions", Ptr(SE_LINUX_OPTIONS), False), 4: ("runAsUser", "int_ptr", False),
    5: ("runAsNonRoot", "bool_ptr", False), 6: ("readOnlyRootFilesystem", "bool_ptr", False),
    7: ("allowPrivilegeEscalation", "bool_ptr", False), 8: ("runAsGroup", "int_ptr", False),
    9: ("procMount", "string_ptr", False),
    10: ("windowsOptions", Ptr(WINDOWS_SECURITY_CONTEXT_OPTIONS), False),
    11: ("seccompProfile", Ptr(SECCOMP_PROFILE), False),
    12: ("appArmorProfile", Ptr(APP_ARMOR_PROFILE), False),
}
CONTAINER: Schema = {
    1: ("name", "string", False), 2: ("image", "string", False), 3: ("command", "string", True),
    4: ("args", "string", True), 5: ("workingDir", "string", False), 6: ("ports", CONTAINER_PORT, True),
    7: ("env", ENV_VAR, True), 8: ("resources", RESOURCE_REQUIREMENTS, False),
    9: ("volumeMounts", VOLUME_MOUNT, True), 10: ("livenessProbe", Ptr(PROBE), False),
    11: ("readinessProbe", Ptr(PROBE), False), 12: ("lifecycle", Ptr(LIFECYCLE), False),
    13: ("terminationMessagePath", "string", False), 14: ("imagePullPolicy", "string", False),
    15: ("securityContext", Ptr(SECURITY_CONTEXT), False), 16: ("stdin", "bool", False),
    17: ("stdinOnce", "bool", False), 18: ("tty", "bool", False), 19: ("envFrom", ENV_FROM_SOURCE, True),
    20: ("terminationMessagePolicy", "string", False), 21: ("volumeDevices", VOLUME_DEVICE, True),
    22: ("startupProbe", Ptr(PROBE), False), 23: ("resizePolicy", CONTAINER_RESIZE_POLICY, True),
    24: ("restartPolicy", "string_ptr", False), 25: ("restartPolicyRules", CONTAINER_RESTART_RULE, True),
}
EPHEMERAL_CONTAINER: Schema = {
    1: ("", Inline(CONTAINER), False), 2: ("targetContainerName", "string", False),
}
SYSCTL: Schema = {
    1: ("name", "string", False), 2: ("value", "string", False),
}
POD_SECURITY_CONTEXT: Schema = {
    1: ("seLinuxOptions", Ptr(SE_LINUX_OPTIONS), False), 2: ("runAsUser", "int_ptr", False),
    3: ("runAsNonRoot", "bool_ptr", False), 4: ("supplementalGroups", "int", True),
    5: ("fsGroup", "int_ptr", False), 6: ("runAsGroup", "int_ptr", False), 7: ("sysctls", SYSCTL, True),
    8: ("windowsOptions", Ptr(WINDOWS_SECURITY_CONTEXT_OPTIONS), False),
    9: ("fsGroupChangePolicy", "string_ptr", False), 10: ("seccompProfile", Ptr(SECCOMP_PROFILE), False),
    11: ("appArmorProfile", Ptr(APP_ARMOR_PROFILE), False),
    12: ("supplementalGroupsPolicy", "string_ptr", False), 13: ("seLinuxChangePolicy", "string_ptr", False),
}
NODE_SELECTOR_REQUIREMENT: Schema = {
    1: ("key", "string", False), 2: ("operator", "string", False), 3: ("values", "string", True),
}
NODE_SELECTOR_TERM: Schema = {
    1: ("matchExpressions", NODE_SELECTOR_REQUIREMENT, True),
    2: ("matchFields", NODE_SELECTOR_REQUIREMENT, True),
}
NODE_SELECTOR: Schema = {
    1: ("nodeSelectorTerms", NODE_SELECTOR_TERM, True),
}
PREFERRED_SCHEDULING_TERM: Schema = {
    1: ("weight", "int", False), 2: ("preference", NODE_SELECTOR_TERM, False),
}
NODE_AFFINITY: Schema = {
    1: ("requiredDuringSchedulingIgnoredDuringExecution", Ptr(NODE_SELECTOR), False),
    2: ("preferredDuringSchedulingIgnoredDuringExecution", PREFERRED_SCHEDULING_TERM, True),
}
POD_AFFINITY_TERM: Schema = {
    1: ("labelSelector", Ptr(LABEL_SELECTOR), False), 2: ("namespaces", "string", True),
    3: ("topologyKey", "string", False), 4: ("namespaceSelector", Ptr(LABEL_SELECTOR), False),
    5: ("matchLabelKeys", "string", True), 6: ("mismatchLabelKeys", "string", True),
}
WEIGHTED_POD_AFFINITY_TERM: Schema = {
    1: ("weight", "int", False), 2: ("podAffinityTerm", POD_AFFINITY_TERM, False),
}
POD_AFFINITY: Schema = {
    1: ("requiredDuringSchedulingIgnoredDuringExecution", POD_AFFINITY_TERM, True),
    2: ("preferredDuringSchedulingIgnoredDuringExecution", WEIGHTED_POD_AFFINITY_TERM, True),
}
POD_ANTI_AFFINITY: Schema = {
    1: ("requiredDuringSchedulingIgnoredDuringExecution", POD_AFFINITY_TERM, True),
    2: ("preferredDuringSchedulingIgnoredDuringExecution", WEIGHTED_POD_AFFINITY_TERM, True),
}
AFFINITY: Schema = {
    1: ("nodeAffinity", Ptr(NODE_AFFINITY), False), 2: ("podAffinity", Ptr(POD_AFFINITY), False),
    3: ("podAntiAffinity", Ptr(POD_ANTI_AFFINITY), False),
}
TOLERATION: Schema = {
    1: ("key", "string", False), 2: ("operator", "string", False), 3: ("value", "string", False),
    4: ("effect", "string", False), 5: ("tolerationSeconds", "int_ptr", False),
}
HOST_ALIAS: Schema = {
    1: ("ip", "string", False), 2: ("hostnames", "string", True),
}
POD_DNS_CONFIG_OPTION: Schema = {
    1: ("name", "string", False), 2: ("value", "string_ptr", False),
}
POD_DNS_CONFIG: Schema = {
    1: ("nameservers", "string", True), 2: ("searches", "string", True),
    3: ("options", POD_DNS_CONFIG_OPTION, True),
}
POD_READINESS_GATE: Schema = {
    1: ("conditionType", "string", False),
}
TOPOLOGY_SPREAD_CONSTRAINT: Schema = {
    1: ("maxSkew", "int", False), 2: ("topologyKey", "string", False),
    3: ("whenUnsatisfiable", "string", False), 4: ("labelSelector", Ptr(LABEL_SELECTOR), False),
    5: ("minDomains", "int_ptr", False), 6: ("nodeAffinityPolicy", "string_ptr", False),
    7: ("nodeTaintsPolicy", "string_ptr", False), 8: ("matchLabelKeys", "string", True),
}
POD_OS: Schema = {
    1: ("name", "string", False),
}
POD_SCHEDULING_GATE: Schema = {
    1: ("name", "string", False),
}
POD_RESOURCE_CLAIM: Schema = {
    1: ("name", "string", False), 3: ("resourceClaimName", "string_ptr", False),
    4: ("resourceClaimTemplateName", "string_ptr", False),
}
POD_SCHEDULING_GROUP: Schema = {
    1: ("podGroupName", "string_ptr", False),
}
POD_SPEC: Schema = {
    1: ("volumes", VOLUME, True), 2: ("containers", CONTAINER, True), 3: ("restartPolicy", "string", False),
    4: ("terminationGracePeriodSeconds", "int_ptr", False), 5: ("activeDeadlineSeconds", "int_ptr", False),
    6: ("dnsPolicy", "string", False), 7: ("nodeSelector", "map_string", False),
    8: ("serviceAccountName", "string", False), 9: ("serviceAccount", "string", False),
    10: ("nodeName", "string", False), 11: ("hostNetwork", "bool", False), 12: ("hostPID", "bool", False),
    13: ("hostIPC", "bool", False), 14: ("securityContext", Ptr(POD_SECURITY_CONTEXT), False),
    15: ("imagePullSecrets", LOCAL_OBJECT_REFERENCE, True), 16: ("hostname", "string", False),
    17: ("subdomain", "string", False), 18: ("affinity", Ptr(AFFINITY), False),
    19: ("schedulerName", "string", False), 20: ("initContainers", CONTAINER, True),
    21: ("automountServiceAccountToken", "bool_ptr", False), 22: ("tolerations", TOLERATION, True),
    23: ("hostAliases", HOST_ALIAS, True), 24: ("priorityClassName", "string", False),
    25: ("priority", "int_ptr", False), 26: ("dnsConfig", Ptr(POD_DNS_CONFIG), False),
    27: ("shareProcessNamespace", "bool_ptr", False), 28: ("readinessGates", POD_READINESS_GATE, True),
    29: ("runtimeClassName", "string_ptr", False), 30: ("enableServiceLinks", "bool_ptr", False),
    31: ("preemptionPolicy", "string_ptr", False), 32: ("overhead", "map_quantity", False),
    33: ("topologySpreadConstraints", TOPOLOGY_SPREAD_CONSTRAINT, True),
    34: ("ephemeralContainers", EPHEMERAL_CONTAINER, True), 35: ("setHostnameAsFQDN", "bool_ptr", False),
    36: ("os", Ptr(POD_OS), False), 37: ("hostUsers", "bool_ptr", False),
    38: ("schedulingGates", POD_SCHEDULING_GATE, True), 39: ("resourceClaims", POD_RESOURCE_CLAIM, True),
    40: ("resources", Ptr(RESOURCE_REQUIREMENTS), False), 41: ("hostnameOverride", "string_ptr", False),
    43: ("schedulingGroup", Ptr(POD_SCHEDULING_GROUP), False),
}
POD_CONDITION: Schema = {
    1: ("type", "string", False), 2: ("status", "string", False), 3: ("lastProbeTime", "time", False),
    4: ("lastTransitionTime", "time", False), 5: ("reason", "string", False),
    6: ("message", "string", False), 7: ("observedGeneration", "int", False),
}
HOST_IP: Schema = {
    1: ("ip", "string", False),
}
POD_IP: Schema = {
    1: ("ip", "string", False),
}
CONTAINER_STATE_WAITING: Schema = {
    1: ("reason", "string", False), 2: ("message", "string", False),
}
CONTAINER_STATE_RUNNING: Schema = {
    1: ("startedAt", "time", False),
}
CONTAINER_STATE_TERMINATED: Schema = {
    1: ("exitCode", "int", False), 2: ("signal", "int", False), 3: ("reason", "string", False),
    4: ("message", "string", False), 5: ("startedAt", "time", False), 6: ("finishedAt", "time", False),
    7: ("containerID", "string", False),
}
CONTAINER_STATE: Schema = {
    1: ("waiting", Ptr(CONTAINER_STATE_WAITING), False), 2: ("running", Ptr(CONTAINER_STATE_RUNNING), False),
    3: ("terminated", Ptr(CONTAINER_STATE_TERMINATED), False),
}
IMAGE_VOLUME_STATUS: Schema = {
    1: ("imageRef", "string", False),
}
VOLUME_STATUS: Schema = {
    1: ("image", Ptr(IMAGE_VOLUME_STATUS), False),
}
VOLUME_MOUNT_STATUS: Schema = {
    1: ("name", "string", False), 2: ("mountPath", "string", False), 3: ("readOnly", "bool", False),
    4: ("recursiveReadOnly", "string_ptr", False), 5: ("volumeStatus", Ptr(VOLUME_STATUS), False),
}
LINUX_CONTAINER_USER: Schema = {
    1: ("uid", "int", False), 2: ("gid", "int", False), 3: ("supplementalGroups", "int", True),
}
CONTAINER_USER: Schema = {
    1: ("linux", Ptr(LINUX_CONTAINER_USER), False),
}
RESOURCE_HEALTH: Schema = {
    1: ("resourceID", "string", False), 2: ("health", "string", False), 6: ("message", "string_ptr", False),
}
RESOURCE_STATUS: Schema = {
    1: ("name", "string", False), 2: ("resources", RESOURCE_HEALTH, True),
}
CONTAINER_STATUS: Schema = {
    1: ("name", "string", False), 2: ("state", CONTAINER_STATE, False),
    3: ("lastState", CONTAINER_STATE, False), 4: ("ready", "bool", False), 5: ("restartCount", "int", False),
    6: ("image", "string", False), 7: ("imageID", "string", False), 8: ("containerID", "string", False),
    9: ("started", "bool_ptr", False), 10: ("allocatedResources", "map_quantity", False),
    11: ("resources", Ptr(RESOURCE_REQUIREMENTS), False), 12: ("volumeMounts", VOLUME_MOUNT_STATUS, True),
    13: ("user", Ptr(CONTAINER_USER), False), 14: ("allocatedResourcesStatus", RESOURCE_STATUS, True),
    15: ("stopSignal", "string_ptr", False),
}
POD_RESOURCE_CLAIM_STATUS: Schema = {
    1: ("name", "string", False), 2: ("resourceClaimName", "string_ptr", False),
}
CONTAINER_EXTENDED_RESOURCE_REQUEST: Schema = {
    1: ("containerName", "string", False), 2: ("resourceName", "string", False),
    3: ("requestName", "string", False),
}
POD_EXTENDED_RESOURCE_CLAIM_STATUS: Schema = {
    1: ("requestMappings", CONTAINER_EXTENDED_RESOURCE_REQUEST, True),
    2: ("resourceClaimName", "string", False),
}
NODE_ALLOCATABLE_RESOURCE_CLAIM_STATUS: Schema = {
    1: ("resourceClaimName", "string", False), 2: ("containers", "string", True),
    3: ("resources", "map_quantity", False),
}
POD_STATUS: Schema = {
    1: ("phase", "string", False), 2: ("conditions", POD_CONDITION, True), 3: ("message", "string", False),
    4: ("reason", "string", False), 5: ("hostIP", "string", False), 6: ("podIP", "string", False),
    7: ("startTime", "time", False), 8: ("containerStatuses", CONTAINER_STATUS, True),
    9: ("qosClass", "string", False), 10: ("initContainerStatuses", CONTAINER_STATUS, True),
    11: ("nominatedNodeName", "string", False), 12: ("podIPs", POD_IP, True),
    13: ("ephemeralContainerStatuses", CONTAINER_STATUS, True), 14: ("resize", "string", False),
    15: ("resourceClaimStatuses", POD_RESOURCE_CLAIM_STATUS, True), 16: ("hostIPs", HOST_IP, True),
    17: ("observedGeneration", "int", False),
    18: ("extendedResourceClaimStatus", Ptr(POD_EXTENDED_RESOURCE_CLAIM_STATUS), False),
    19: ("allocatedResources", "map_quantity", False), 20: ("resources", Ptr(RESOURCE_REQUIREMENTS), False),
    21: ("nodeAllocatableResourceClaimStatuses", NODE_ALLOCATABLE_RESOURCE_CLAIM_STATUS, True),
}
POD: Schema = {
    1: ("metadata", OBJECT_META, False), 2: ("spec", POD_SPEC, False), 3: ("status", POD_STATUS, False),
}

# -- certificates.k8s.io/v1 CertificateSigningRequest (k8s.io/api v0.36 certificates/v1 generated.proto)

CSR_SPEC: Schema = {
    1: ("request", "bytes", False), 2: ("username", "string", False), 3: ("uid", "string", False),
    4: ("groups", "string", True), 5: ("usages", "string", True), 6: ("extra", "map_string_list", False),
    7: ("signerName", "string", False), 8: ("expirationSeconds", "int_ptr", False),
}
CSR_CONDITION: Schema = {
    1: ("type", "string", False), 2: ("reason", "string", False), 3: ("message", "string", False),
    4: ("lastUpdateTime", "time", False), 5: ("lastTransitionTime", "time", False),
    6: ("status", "string", False),
}
CSR_STATUS: Schema = {
    1: ("conditions", CSR_CONDITION, True), 2: ("certificate", "bytes", False),
}
CSR: Schema = {
    1: ("metadata", OBJECT_META, False), 2: ("spec", CSR_SPEC, False), 3: ("status", CSR_STATUS, False),
}

KINDS: dict[tuple[str, str], Schema] = {
    ("v1", "Namespace"): NAMESPACE,
    ("v1", "ConfigMap"): CONFIGMAP,
    ("v1", "Secret"): SECRET,
    ("v1", "Pod"): POD,
    ("certificates.k8s.io/v1", "CertificateSigningRequest"): CSR,
}
# kinds whose bodies must not contain a field number this module does not know (see the docstring)
STRICT = frozenset({("v1", "Pod"), ("certificates.k8s.io/v1", "CertificateSigningRequest")})


def _string(b: bytes, where: str) -> str:
    try:
        return b.decode()
    except UnicodeDecodeError:
        raise DecodeError(f"{where}: invalid UTF-8") from None


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _time(b: bytes, where: str, strict: bool) -> str | None:
    t = decode_message(b, TIME, where, strict)
    seconds = t.get("seconds", 0)
    if not seconds and not t.get("nanos"):
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scalar(typ: Any, wt: int, val: Any, where: str, strict: bool) -> Any:
    if isinstance(typ, (dict, Ptr)):
        if wt != 2:
            raise DecodeError(f"{where}: expected a message")
        return decode_message(val, typ if isinstance(typ, dict) else typ.schema, where, strict)
    if typ in ("string", "string_ptr"):
        if wt != 2:
            raise DecodeError(f"{where}: expected a string")
        return _string(val, where)
    if typ in ("int", "int_ptr"):
        if wt != 0:
            raise DecodeError(f"{where}: expected a varint")
        return _int64(val)
    if typ in ("bool", "bool_ptr"):
        if wt != 0:
            raise DecodeError(f"{where}: expected a bool")
        return bool(val)
    if wt != 2:  # everything below is length-delimited
        raise DecodeError(f"{where}: expected a length-delimited {typ}")
    if typ == "bytes":
        return base64.b64encode(val).decode()
    if typ == "time":
        return _time(val, where, strict)
    if typ in ("quantity", "quantity_ptr"):
        # resource.Quantity marshals its canonical string; Go reads a missing one as the zero, "0"
        return decode_message(val, QUANTITY, where, strict).get("string") or "0"
    if typ == "intorstr":
        v = decode_message(val, INT_OR_STRING, where, strict)
        if v.get("type", 0) == 1:
            return v.get("strVal", "")
        if v.get("type", 0) != 0:
            raise DecodeError(f"{where}: IntOrString type {v['type']}")
        return v.get("intVal", 0)
    if typ == "string_list":
        return decode_message(val, STRING_LIST, where, strict).get("items", [])
    if typ == FIELDS_V1:
        raw = dict((n, v) for n, _, v in fields(val)).get(1, b"")
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise DecodeError(f"{where}: fieldsV1 is not JSON") from None
    raise DecodeError(f"{where}: unsupported type {typ}")  # pragma: no cover - schema bug


def _empty(typ: Any, v: Any) -> bool:
    """Whether Go's `omitempty` (or, for a non-pointer struct, this module) leaves the field out."""
    if isinstance(typ, Ptr) or (isinstance(typ, str) and typ in KEEP):
        return False
    if v is None or v == "" or v == {} or v is False:
        return True
    return isinstance(v, int) and not isinstance(v, bool) and v == 0


def _map_entry(typ: str, val: bytes, path: str, strict: bool) -> tuple[str, Any]:
    """One `map<string, V>` entry, a message {string key = 1; V value = 2}; either may be absent."""
    key, raw, value_wt = b"", b"", 2
    for n, w, v in fields(val):
        if n == 1:
            if w != 2:
                raise DecodeError(f"{path}: expected a string map key")
            key = v
        elif n == 2:
            raw, value_wt = v, w
        elif strict:
            raise DecodeError(f"{path}: unknown map entry field {n}")
    k = _string(key, path)
    vtype = MAPS[typ]
    if vtype == "string":  # an empty value is a value here, unlike an empty string field
        if value_wt != 2:
            raise DecodeError(f"{path}[{k}]: expected a string")
        return k, _string(raw, f"{path}[{k}]")
    return k, _scalar(vtype, value_wt, raw, f"{path}[{k}]", strict)


def decode_message(buf: bytes, schema: Schema, where: str = "", strict: bool = False) -> dict[str, Any]:
    """`buf` as the JSON object `schema` describes. `strict`: a field number not in the schema (at
    any depth) is a DecodeError naming where it is, instead of being skipped."""
    out: dict[str, Any] = {}
    for num, wt, val in fields(buf):
        spec = schema.get(num)
        if spec is None:
            if strict:
                raise DecodeError(f"{where or 'the object'}: unknown field {num}")
            continue  # unknown field: skipped, as protobuf readers do
        name, typ, repeated = spec
        path = f"{where}.{name}" if where and name else (name or where)
        if isinstance(typ, Inline):
            if wt != 2:
                raise DecodeError(f"{path or 'the object'}: field {num}: expected a message")
            out.update(decode_message(val, typ.schema, where, strict))
        elif isinstance(typ, str) and typ in MAPS:
            if wt != 2:
                raise DecodeError(f"{path}: expected a map entry")
            key, value = _map_entry(typ, val, path, strict)
            out.setdefault(name, {})[key] = value
        elif repeated:
            items = out.setdefault(name, [])
            if typ == "int" and wt == 2:  # a packed repeated varint field, which readers must accept
                pos = 0
                while pos < len(val):
                    v, pos = _varint(val, pos)
                    items.append(_int64(v))
            else:
                items.append(_scalar(typ, wt, val, f"{path}[{len(items)}]", strict))
        else:
            value = _scalar(typ, wt, val, path, strict)
            if not _empty(typ, value):
                out[name] = value
            else:
                out.pop(name, None)  # a later empty value overrides an earlier one (last wins)
    return out


class NotEnvelope(DecodeError):
    """Not a Kubernetes protobuf envelope at all (no magic number)."""


class UnsupportedKind(Exception):
    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(f"{api_version}/{kind}")
        self.api_version, self.kind = api_version, kind


def decode_object(body: bytes) -> dict[str, Any]:
    """The JSON-shaped object of a protobuf request body. DecodeError for a malformed body (or, for
    a `STRICT` kind, a field this module does not know), UnsupportedKind for a kind without a schema."""
    if not body.startswith(MAGIC):
        raise NotEnvelope("the body does not start with the Kubernetes protobuf magic number k8s\\x00")
    unknown = {n: v for n, w, v in fields(body[len(MAGIC):]) if w == 2}
    tm = {n: v for n, w, v in fields(unknown.get(1, b"")) if w == 2}
    api_version, kind = _string(tm.get(1, b""), "apiVersion"), _string(tm.get(2, b""), "kind")
    encoding = _string(unknown.get(3, b""), "contentEncoding")
    ctype = _string(unknown.get(4, b""), "contentType")
    if encoding:
        raise DecodeError(f"unsupported content encoding {encoding!r}")
    if ctype and "protobuf" not in ctype:
        raise DecodeError(f"unsupported embedded content type {ctype!r}")
    schema = KINDS.get((api_version, kind))
    if schema is None:
        raise UnsupportedKind(api_version, kind)
    obj = decode_message(unknown.get(2, b""), schema, strict=(api_version, kind) in STRICT)
    return {"apiVersion": api_version, "kind": kind, **obj}


# -- encoding, for tests and tools (the inverse of decode_message for these schemas)

def _key(num: int, wt: int) -> bytes:
    return _encode_varint(num << 3 | wt)


def _encode_varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(num: int, data: bytes) -> bytes:
    return _key(num, 2) + _encode_varint(len(data)) + data


def _encode_value(num: int, typ: Any, val: Any) -> bytes:
    """One field `num` of type `typ` holding `val` (a JSON value)."""
    if isinstance(typ, (dict, Ptr)):
        return _ld(num, encode_message(val, typ if isinstance(typ, dict) else typ.schema))
    if typ in ("string", "string_ptr"):
        return _ld(num, val.encode())
    if typ in ("int", "int_ptr", "bool", "bool_ptr"):
        return _key(num, 0) + _encode_varint(int(val))
    if typ == "bytes":
        return _ld(num, base64.b64decode(val))
    if typ in ("quantity", "quantity_ptr"):
        return _ld(num, _ld(1, str(val).encode()))
    if typ == "intorstr":
        if isinstance(val, str):
            return _ld(num, _key(1, 0) + _encode_varint(1) + _ld(3, val.encode()))
        return _ld(num, _key(1, 0) + _encode_varint(0) + _key(2, 0) + _encode_varint(val))
    if typ == "string_list":
        return _ld(num, b"".join(_ld(1, s.encode()) for s in val))
    if typ == "time":
        ts = dt.datetime.strptime(val, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
        return _ld(num, encode_message({"seconds": int(ts)}, TIME))
    if typ == FIELDS_V1:
        return _ld(num, _ld(1, json.dumps(val).encode()))
    if typ in MAPS:
        return b"".join(_ld(num, _ld(1, k.encode()) + _encode_value(2, MAPS[typ], v)) for k, v in val.items())
    raise ValueError(f"field {num}: unsupported type {typ}")  # pragma: no cover - schema bug


def encode_message(obj: dict[str, Any], schema: Schema) -> bytes:
    out = bytearray()
    for num, (name, typ, repeated) in sorted(schema.items()):
        if isinstance(typ, Inline):  # the parent's own keys, nested in a field of their own
            out += _ld(num, encode_message(obj, typ.schema))
            continue
        if name not in obj or obj[name] is None:
            continue
        for val in (obj[name] if repeated else [obj[name]]):
            out += _encode_value(num, typ, val)
    return bytes(out)


def encode_object(obj: dict[str, Any]) -> bytes:
    schema = KINDS[(obj["apiVersion"], obj["kind"])]
    tm = _ld(1, obj["apiVersion"].encode()) + _ld(2, obj["kind"].encode())
    return MAGIC + _ld(1, tm) + _ld(2, encode_message(obj, schema)) + _ld(3, b"") + _ld(4, b"")
