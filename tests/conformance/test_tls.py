"""TLS and mTLS on Sluice's gRPC listener, seen by an independent client: grpcio (BoringSSL) with
Envoy's protos from PyPI, certificates made by the `openssl` command line, and the reference's
environment names (`GRPC_SERVER_USE_TLS` and its family).

Run: python3 -m unittest discover -s tests/conformance -v
"""

import os
import shutil
import subprocess
import tempfile
import unittest

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as desc_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from sluice_process import SluiceProcess

RULES = "domain: tls\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1000}\n"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}", "-days", "2",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,digitalSignature", cwd=d)


def make_leaf(d, ca, name, san):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
            cwd=d)


def read(d, name):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


class TlsListener(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sluice-tls-")
        d = self.dir
        make_ca(d, "ca")
        make_ca(d, "other-ca")
        make_leaf(d, "ca", "server", "DNS:localhost,IP:127.0.0.1")
        make_leaf(d, "ca", "envoy", "URI:spiffe://mesh/ns/edge/sa/envoy")
        make_leaf(d, "ca", "stranger", "DNS:stranger")
        make_leaf(d, "other-ca", "foreign", "URI:spiffe://mesh/ns/edge/sa/envoy")
        with open(os.path.join(d, "rules.yaml"), "w") as f:
            f.write(RULES)
        env = {
            "GRPC_SERVER_USE_TLS": "true",
            "GRPC_SERVER_TLS_CERT": os.path.join(d, "server.pem"),
            "GRPC_SERVER_TLS_KEY": os.path.join(d, "server.key"),
            "GRPC_CLIENT_TLS_CACERT": os.path.join(d, "ca.pem"),
            "GRPC_CLIENT_TLS_SAN": "spiffe://mesh/ns/edge/sa/envoy",
        }
        self.sluice = SluiceProcess(
            ["--config", os.path.join(d, "rules.yaml")], env)
        self.port = self.sluice.grpc.rsplit(":", 1)[1]

    def tearDown(self):
        self.sluice.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def check(self, trust, identity):
        key, chain = (None, None)
        if identity:
            key, chain = read(self.dir, f"{identity}.key"), read(self.dir, f"{identity}.pem")
        creds = grpc.ssl_channel_credentials(read(self.dir, f"{trust}.pem"), key, chain)
        with grpc.secure_channel(f"localhost:{self.port}", creds) as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            req = rls_pb2.RateLimitRequest(domain="tls")
            req.descriptors.append(desc_pb2.RateLimitDescriptor(
                entries=[desc_pb2.RateLimitDescriptor.Entry(key="k", value="v")]))
            return stub.ShouldRateLimit(req, timeout=5)

    def test_the_right_client_is_served(self):
        self.assertEqual(self.check("ca", "envoy").overall_code, rls_pb2.RateLimitResponse.OK)

    def test_every_wrong_client_is_refused(self):
        for trust, identity in [("ca", None), ("ca", "stranger"), ("ca", "foreign"),
                                ("other-ca", "envoy")]:
            with self.subTest(trust=trust, identity=identity):
                with self.assertRaises(grpc.RpcError) as refused:
                    self.check(trust, identity)
                self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAVAILABLE)


if __name__ == "__main__":
    unittest.main()
