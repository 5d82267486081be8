import pytest

from cri.images.errors import InvalidReference
from cri.images.reference import parse


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("me/app:v1", "docker.io/me/app:v1"),
        ("quay.io/a/b/c:1.0", "quay.io/a/b/c:1.0"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("127.0.0.1:5000/x/y:t", "127.0.0.1:5000/x/y:t"),
        ("host:5000/repo@sha256:" + "a" * 64, "host:5000/repo@sha256:" + "a" * 64),
        ("busybox:1.36@sha256:" + "b" * 64, "docker.io/library/busybox:1.36@sha256:" + "b" * 64),
        ("my-registry.example.com:443/a_b/c__d/e-f", "my-registry.example.com:443/a_b/c__d/e-f:latest"),
    ],
)
def test_normalizes_like_docker(ref, expected):
    assert str(parse(ref)) == expected


def test_key_prefers_digest_over_tag():
    d = "sha256:" + "c" * 64
    r = parse(f"busybox:1.36@{d}")
    assert r.key == f"docker.io/library/busybox@{d}"
    assert r.object == d
    assert parse("busybox").object == "latest"


@pytest.mark.parametrize(
    "ref, words",
    [
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("busybox:", "tag"),
        ("busybox:-bad", "tag"),
        ("busy box", "whitespace"),
        ("busybox@sha256:abc", "64"),
        ("busybox@md5:" + "a" * 32, "unsupported digest"),
        ("a" * 64, "image ID"),
        ("registry..example.com/x", "registry host"),
        ("x/../y", "component"),
        ("-x/y", "component"),
        ("x/" + "y" * 300, "longer"),
    ],
)
def test_invalid_references_say_why(ref, words):
    with pytest.raises(InvalidReference) as e:
        parse(ref)
    assert words in str(e.value)
