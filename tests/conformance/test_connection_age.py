"""Connection ageing (`GRPC_MAX_CONNECTION_AGE`) seen by grpcio, a client that, as Envoy does,
moves to a new connection on GOAWAY and retries calls the server never took: steady calls across
several ages of the real binary, none failing.

Run: python3 -m unittest discover -s tests/conformance -v
"""

import os
import shutil
import tempfile
import time
import unittest
import urllib.request

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as desc_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from sluice_process import SluiceProcess

RULES = "domain: age\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1000000}\n"


class ConnectionAge(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sluice-age-")
        rules = os.path.join(self.dir, "rules.yaml")
        with open(rules, "w") as f:
            f.write(RULES)
        env = {"GRPC_MAX_CONNECTION_AGE": "300ms", "GRPC_MAX_CONNECTION_AGE_GRACE": "5s"}
        self.sluice = SluiceProcess(["--config", rules], env)
        self.grpc, self.http = self.sluice.grpc, self.sluice.http

    def tearDown(self):
        self.sluice.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def metric(self, sample):
        with urllib.request.urlopen(f"http://{self.http}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(sample + " "):
                    return float(line.split()[-1])
        return 0.0

    def test_calls_across_ages_never_fail(self):
        accepted = 'sluice_connections_accepted_total{listener="grpc"}'
        req = rls_pb2.RateLimitRequest(domain="age")
        req.descriptors.append(desc_pb2.RateLimitDescriptor(
            entries=[desc_pb2.RateLimitDescriptor.Entry(key="k", value="v")]))
        calls = 0
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(self.grpc) as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            # Back-to-back calls until the channel has been moved to a fourth connection.
            while self.metric(accepted) < 4:
                self.assertLess(time.monotonic(), deadline, "no fourth connection within 30 s")
                for _ in range(50):
                    answer = stub.ShouldRateLimit(req, timeout=5)
                    self.assertEqual(answer.overall_code, rls_pb2.RateLimitResponse.OK)
                    calls += 1
        self.assertGreater(calls, 0)
        self.assertGreaterEqual(
            self.metric('sluice_connections_closed_by_server_total{listener="grpc",reason="max_age"}'), 3)


if __name__ == "__main__":
    unittest.main()
