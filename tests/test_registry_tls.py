"""TLS to the registries: etcd with client-certificate authentication, Consul over https."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import meshlib
from meshlib.testing.consul_double import ConsulDouble
from meshlib.testing.etcd_server import EtcdServer
from tests.registry_helpers import addresses, wait_for

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "1", "-subj", "/CN=meshlib-test-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"), "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(ext + ("\nextendedKeyUsage=serverAuth,clientAuth\n" if name == "server" else "\n"))
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"), "-CAcreateserial",
                 "-out", str(d / f"{name}.pem"), "-days", "1", "-extfile", str(d / f"{name}.ext"))  # fmt: skip
    return {k: str(d / k) for k in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def test_etcd_with_tls_and_client_certificates(pki, agents):
    (a,) = agents(1)
    with EtcdServer(name="meshlib-tls", tls=(pki["server.pem"], pki["server.key"], pki["ca.pem"])) as etcd:
        config = {
            "discovery": etcd.url,
            "etcd_tls_ca": pki["ca.pem"],
            "etcd_tls_cert": pki["client.pem"],
            "etcd_tls_key": pki["client.key"],
        }
        with meshlib.Mesh(config=config) as provider, meshlib.Mesh(config=config) as consumer:
            provider.register("secure", port=a.port, address="127.0.0.1")
            wait_for(lambda: addresses(consumer, "secure") == {a.address})
        # Without TLS settings the plaintext client gets nowhere.
        with meshlib.Mesh(config={"discovery": etcd.url, "registry_timeout": "500ms"}) as plain:
            assert plain.stats()["discovery"][0]["stale"]


def test_consul_over_https_with_a_ca(pki, agents):
    (a,) = agents(1)
    with ConsulDouble(tls=(pki["server.pem"], pki["server.key"])) as double:
        double.add_instance("api", a.port)
        with meshlib.Mesh(config={"discovery": double.url, "consul_tls_ca": pki["ca.pem"]}) as mesh:
            assert addresses(mesh, "api") == {a.address}
            reg = mesh.register("me", port=a.port)
            assert reg.registered
        with meshlib.Mesh(config={"discovery": double.url, "registry_timeout": "500ms"}) as plain:
            assert plain.stats()["discovery"][0]["stale"]
