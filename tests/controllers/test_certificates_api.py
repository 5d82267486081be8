"""CertificateSigningRequests end to end on a real API server: a node asks, the controller
approves what is safe and signs with the cluster CA, kubectl approves or denies the rest,
and the API refuses what a node or a bad request may not do."""

from __future__ import annotations

import base64
import subprocess
import time
from typing import Any

from cryptography import x509
from support.cluster import ControlPlane, Loop, wait_for

from kubeletpy.agent import certificate as agentcert
from kubeletpy.controllers.certificates import CertificateController, Signer

CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


def kubectl(cp: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/usr/bin/kubectl", "--kubeconfig", str(cp.kubeconfig), "--cache-dir",
                           str(cp.root / "kc-cache"), *args], capture_output=True, text=True, timeout=60)


def join(cp: ControlPlane, name: str, ip: str) -> Any:
    """A node's own session, with its Node registered (addresses as an agent reports them)."""
    token = cp.session(token=(cp.data / "join-token").read_text().strip()).post(
        cp.url + "/kubeletpy/join", json={"nodeName": name}).json()["token"]
    s = cp.session(token=token)
    assert s.post(cp.url + "/api/v1/nodes", json={"metadata": {"name": name}}).status_code == 201
    r = s.patch(cp.url + f"/api/v1/nodes/{name}/status", json={"status": {"addresses": [
        {"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}},
        headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    return s


def csr_body(pem: bytes, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"generateName": "csr-"},
            "spec": {"request": base64.b64encode(pem).decode(), "signerName": "kubernetes.io/kubelet-serving",
                     "usages": ["digital signature", "server auth"], **spec}}


def causes(r: Any) -> dict[str, str]:
    assert r.status_code == 422, r.text
    return {c["field"]: c["message"] for c in r.json()["details"]["causes"]}


def test_node_serving_certificates_are_approved_signed_or_left_for_kubectl(cp: ControlPlane, loop: Loop) -> None:
    node = join(cp, "n1", "10.0.0.5")
    # the requester is who asked, whatever the body claims
    _key, pem = agentcert.make_request("n1", ["10.0.0.5"])
    r = node.post(cp.url + CSRS, json=csr_body(pem, username="system:admin", groups=["system:masters"]))
    assert r.status_code == 201, r.text
    good = r.json()
    assert good["spec"]["username"] == "system:node:n1" and "system:nodes" in good["spec"]["groups"]
    # asking for an address it does not have: left pending
    _key2, foreign = agentcert.make_request("n1", ["10.9.9.9"])
    pending = node.post(cp.url + CSRS, json=csr_body(foreign)).json()["metadata"]["name"]
    denied = node.post(cp.url + CSRS, json=csr_body(foreign)).json()["metadata"]["name"]
    # a node may read CSRs but not decide or sign them
    assert node.get(cp.url + f"{CSRS}/{pending}").status_code == 200
    approve = {**node.get(cp.url + f"{CSRS}/{pending}").json()}
    approve["status"] = {"conditions": [{"type": "Approved", "status": "True", "reason": "Me"}]}
    assert node.put(cp.url + f"{CSRS}/{pending}/approval", json=approve).status_code == 403
    assert node.put(cp.url + f"{CSRS}/{pending}/status", json=approve).status_code == 403

    # as in `kubeletpy control-plane`: signed by the agents' serving CA, not the cluster CA
    signer = Signer.from_files(cp.data / "pki" / "kubelet-serving-ca.crt", cp.data / "pki" / "kubelet-serving-ca.key")
    ctl = CertificateController(loop.client(cp), signer)
    loop.spawn(ctl.run())

    def issued(name: str) -> dict[str, Any] | None:
        obj = cp.req("GET", f"{CSRS}/{name}")
        return obj if obj.get("status", {}).get("certificate") else None

    done = wait_for("the node's CSR approved and signed", lambda: issued(good["metadata"]["name"]), 20)
    assert [(c["type"], c["reason"]) for c in done["status"]["conditions"]] == [("Approved", "AutoApproved")]
    cert = x509.load_pem_x509_certificate(base64.b64decode(done["status"]["certificate"]))
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(
        (cp.data / "pki" / "kubelet-serving-ca.crt").read_bytes()))
    assert cert.subject.rfc4514_string() == "CN=system:node:n1,O=system:nodes"

    out = kubectl(cp, "get", "csr", pending)
    assert out.returncode == 0 and "Pending" in out.stdout and "system:node:n1" in out.stdout, out
    assert "SIGNERNAME" in out.stdout and "REQUESTOR" in out.stdout
    assert issued(pending) is None
    r = kubectl(cp, "certificate", "approve", pending)
    assert r.returncode == 0, r.stderr
    approved = wait_for("the approved CSR signed", lambda: issued(pending), 20)
    assert "Approved,Issued" in kubectl(cp, "get", "csr", pending).stdout
    cond = approved["status"]["conditions"][0]  # kubectl sends no times: the server stamps them
    assert (cond["type"], cond["status"], cond["reason"]) == ("Approved", "True", "KubectlApprove")
    assert cond["lastUpdateTime"] and cond["lastTransitionTime"]
    r = kubectl(cp, "certificate", "deny", denied)
    assert r.returncode == 0, r.stderr
    assert "Denied" in kubectl(cp, "get", "csr", denied).stdout
    assert issued(denied) is None

    # decisions and certificates are final
    obj = cp.req("GET", f"{CSRS}/{pending}")
    obj["status"]["conditions"] = []
    assert "updates may not remove a condition of type \"Approved\"" in causes(
        cp.api.put(cp.url + f"{CSRS}/{pending}/approval", json=obj))["status.conditions"]
    obj = cp.req("GET", f"{CSRS}/{pending}")
    obj["status"]["certificate"] = done["status"]["certificate"]
    assert causes(cp.api.put(cp.url + f"{CSRS}/{pending}/status", json=obj))["status.certificate"] == \
        "Forbidden: updates may not modify existing certificate content"
    obj = cp.req("GET", f"{CSRS}/{denied}")
    obj["status"]["conditions"].append({"type": "Approved", "status": "True", "reason": "Both"})
    assert "mutually exclusive" in causes(cp.api.put(cp.url + f"{CSRS}/{denied}/approval", json=obj))[
        "status.conditions"]
    # the spec never changes
    obj = cp.req("GET", f"{CSRS}/{pending}")
    obj["spec"]["usages"] = ["client auth"]
    assert cp.api.put(cp.url + f"{CSRS}/{pending}", json=obj).json()["spec"]["usages"] == [
        "digital signature", "server auth"]
    # the cleaner: nothing is old yet; an hour after the decisions all three go
    assert loop.call(ctl.clean()) == []
    assert sorted(loop.call(ctl.clean(time.time() + 3700))) == sorted([good["metadata"]["name"], pending, denied])
    assert cp.req("GET", CSRS)["items"] == []


def test_bad_requests_name_the_field(cp: ControlPlane) -> None:
    _key, pem = agentcert.make_request("n1", ["10.0.0.5"])
    post = lambda body: cp.api.post(cp.url + CSRS, json=body)  # noqa: E731
    assert causes(post(csr_body(b"not pem")))["spec.request"] == \
        'Invalid value: "<bytes>": PEM block type must be CERTIFICATE REQUEST'
    assert causes(post({**csr_body(pem), "spec": {"request": csr_body(pem)["spec"]["request"]}})) == {
        "spec.signerName": "Required value", "spec.usages": "Required value"}
    assert "fully qualified" in causes(post(csr_body(pem, signerName="kubelet")))["spec.signerName"]
    assert causes(post(csr_body(pem, usages=["server auth", "flying"])))["spec.usages[1]"].startswith(
        'Unsupported value: "flying"')
    assert "less than 600 seconds" in causes(post(csr_body(pem, expirationSeconds=60)))["spec.expirationSeconds"]
    assert cp.req("GET", CSRS)["items"] == []
    # a request cannot approve itself: status is dropped on create
    body = csr_body(pem)
    body["status"] = {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "eA=="}
    r = post(body)
    assert r.status_code == 201 and r.json()["status"] == {}, r.text
