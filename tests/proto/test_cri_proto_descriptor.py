"""The hand-written proto/api.proto against the CRI wire facts in proto/cri-v1.md.

The spec tables are parsed here, independently of how the .proto was written, so a typo in a
field number, a wrong scalar type or a missing RPC fails a test instead of failing crictl.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from cri.api import api_pb2

SPEC = Path(__file__).resolve().parents[2] / "proto" / "cri-v1.md"
PACKAGE = "runtime.v1"

SCALARS = {
    "string": FieldDescriptor.TYPE_STRING,
    "bytes": FieldDescriptor.TYPE_BYTES,
    "bool": FieldDescriptor.TYPE_BOOL,
    "int32": FieldDescriptor.TYPE_INT32,
    "int64": FieldDescriptor.TYPE_INT64,
    "uint32": FieldDescriptor.TYPE_UINT32,
    "uint64": FieldDescriptor.TYPE_UINT64,
}


@dataclass
class SpecField:
    number: int
    name: str
    label: str  # single | repeated | map
    kind: str  # scalar | message | enum | map (value: scalar)
    type: str
    note: str


@dataclass
class Spec:
    rpcs: dict[str, list[tuple[str, str, str, str]]] = field(
        default_factory=dict
    )  # svc -> (rpc, req, resp, call)
    enums: dict[str, dict[str, int]] = field(default_factory=dict)
    messages: dict[str, list[SpecField]] = field(default_factory=dict)
    core_counts: tuple[int, int, int] = (0, 0, 0)  # messages, enums, fields as the spec states them
    core_messages: set[str] = field(default_factory=set)
    core_enums: set[str] = field(default_factory=set)


def _cells(line: str) -> list[str] | None:
    if not line.startswith("|"):
        return None
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if set(cells[0]) <= set("-:"):
        return None
    return cells


def parse_spec(text: str) -> Spec:
    spec = Spec()
    m = re.search(r"(\d+) messages and (\d+) enums, with (\d+) fields in total", text)
    assert m, "the spec's scope sentence moved; update the parser"
    spec.core_counts = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    service: str | None = None
    current: tuple[str, str] | None = None
    in_appendix = False
    for line in text.splitlines():
        if line.startswith("## "):
            service = None
            current = None
            in_appendix = in_appendix or line.startswith("## 4.")
            continue
        if m := re.match(r"### (\w+Service) \(`", line):
            service = m.group(1)
            spec.rpcs[service] = []
            continue
        if m := re.match(r"### enum ([\w.]+)$", line):
            service = None
            current = ("enum", m.group(1))
            spec.enums[current[1]] = {}
            if not in_appendix:
                spec.core_enums.add(current[1])
            continue
        if m := re.match(r"### ([A-Z]\w*)$", line):
            current = ("message", m.group(1))
            spec.messages[current[1]] = []
            if not in_appendix:
                spec.core_messages.add(current[1])
            continue
        cells = _cells(line)
        if not cells:
            continue
        if service and cells[0] != "RPC":
            spec.rpcs[service].append((cells[0], cells[1], cells[2], cells[3]))
        elif current and current[0] == "enum" and cells[0] != "value name":
            spec.enums[current[1]][cells[0]] = int(cells[1])
        elif current and current[0] == "message" and cells[0] != "#":
            number, name, label, kind, typ, note = cells
            spec.messages[current[1]].append(SpecField(int(number), name, label, kind, typ, note))
    return spec


@pytest.fixture(scope="module")
def spec() -> Spec:
    return parse_spec(SPEC.read_text())


def _message(name: str) -> Descriptor:
    return api_pb2.DESCRIPTOR.message_types_by_name[name]


def test_spec_parser_sees_what_the_spec_says_it_holds(spec: Spec) -> None:
    n_msgs, n_enums, n_fields = spec.core_counts
    assert len(spec.core_messages) == n_msgs
    assert len(spec.core_enums) == n_enums
    assert sum(len(spec.messages[m]) for m in spec.core_messages) == n_fields
    assert len(spec.rpcs["RuntimeService"]) == 28
    assert len(spec.rpcs["ImageService"]) == 5


def test_package_and_services(spec: Spec) -> None:
    assert api_pb2.DESCRIPTOR.package == PACKAGE
    assert set(api_pb2.DESCRIPTOR.services_by_name) == set(spec.rpcs)


@pytest.mark.parametrize("service", ["RuntimeService", "ImageService"])
def test_every_rpc_has_the_spec_signature(spec: Spec, service: str) -> None:
    svc = api_pb2.DESCRIPTOR.services_by_name[service]
    assert svc.full_name == f"{PACKAGE}.{service}"
    assert [m.name for m in svc.methods] == [r[0] for r in spec.rpcs[service]]
    for rpc, req, resp, call in spec.rpcs[service]:
        method = svc.methods_by_name[rpc]
        assert method.input_type.full_name == f"{PACKAGE}.{req}", rpc
        assert method.output_type.full_name == f"{PACKAGE}.{resp}", rpc
        assert method.server_streaming == (call == "server-streaming"), rpc
        assert not method.client_streaming, rpc


def test_no_message_or_enum_outside_the_spec(spec: Spec) -> None:
    assert set(api_pb2.DESCRIPTOR.message_types_by_name) == set(spec.messages)
    top_enums = {n for n in spec.enums if "." not in n}
    assert set(api_pb2.DESCRIPTOR.enum_types_by_name) == top_enums


def test_enums(spec: Spec) -> None:
    for name, values in spec.enums.items():
        if "." in name:
            outer, inner = name.split(".")
            enum = _message(outer).enum_types_by_name[inner]
        else:
            enum = api_pb2.DESCRIPTOR.enum_types_by_name[name]
        assert {v.name: v.number for v in enum.values} == values, name


def _check_field(msg: str, want: SpecField, got: FieldDescriptor) -> None:
    where = f"{msg}.{want.name}"
    assert got.number == want.number, where
    if want.label == "map":
        entry = got.message_type
        assert got.is_repeated and entry.GetOptions().map_entry, where
        k, v = want.type.removeprefix("map<").removesuffix(">").split(",")
        key, value = entry.fields_by_number[1], entry.fields_by_number[2]
        assert (key.name, key.type) == ("key", SCALARS[k.strip()]), where
        assert (value.name, value.type) == ("value", SCALARS[v.strip()]), where
        return
    assert got.is_repeated == (want.label == "repeated"), where
    if want.kind == "scalar":
        assert got.type == SCALARS[want.type], where
        if got.is_repeated and want.type not in ("string", "bytes"):
            assert got.is_packed, f"{where}: proto3 packs repeated numbers"
    elif want.kind == "message":
        assert got.type == FieldDescriptor.TYPE_MESSAGE, where
        assert got.message_type.full_name == f"{PACKAGE}.{want.type}", where
    elif want.kind == "enum":
        assert got.type == FieldDescriptor.TYPE_ENUM, where
        assert got.enum_type.full_name == f"{PACKAGE}.{want.type}", where
    else:
        raise AssertionError(f"{where}: unknown kind {want.kind!r} in the spec")
    assert got.GetOptions().deprecated == (want.note == "deprecated"), where


def test_every_message_field(spec: Spec) -> None:
    checked = 0
    for name, fields in spec.messages.items():
        desc = _message(name)
        assert desc.full_name == f"{PACKAGE}.{name}"
        assert {f.name for f in desc.fields} == {f.name for f in fields}, name
        assert not desc.oneofs, f"{name}: the spec has no oneofs"
        for want in fields:
            _check_field(name, want, desc.fields_by_name[want.name])
            checked += 1
    assert checked == sum(len(f) for f in spec.messages.values())


def test_only_the_one_nested_type() -> None:
    for name, desc in api_pb2.DESCRIPTOR.message_types_by_name.items():
        nested = [n for n in desc.nested_types if not n.GetOptions().map_entry]
        assert not nested, name
        if name != "SecurityProfile":
            assert not desc.enum_types, name
