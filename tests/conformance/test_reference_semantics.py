"""Conformance of the real `sluice` binary with envoyproxy/ratelimit's documented decisions.

An independent client: Envoy's own protos from PyPI (`xds-protos`) over `grpcio`, not the Rust types
the server is built from. Each scenario runs in compat mode (`--charge-rejected`, the reference's
accounting) on the memory store and on a real redis-server, and in Sluice's default mode where the
two differ. Limits use hour and day windows so a scenario never straddles a window boundary.

Run: python3 -m unittest discover -s tests/conformance -v
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as desc_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import wrappers_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLUICE = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "target", "debug", "sluice"))
OK = rls_pb2.RateLimitResponse.OK
OVER = rls_pb2.RateLimitResponse.OVER_LIMIT
U32_MAX = 4294967295

# One domain per file, as deployments usually have them.
FILES = {
    "mongo.yaml": """
domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: database
    rate_limit: {unit: day, requests_per_unit: 4}
""",
    "edge.yaml": """
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit: {unit: day, requests_per_unit: 2}
  - key: to_number
    rate_limit: {unit: day, requests_per_unit: 3}
  - key: path
    value: "/api/*"
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: path
    value: "/static/*"
  - key: path
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: internal
    rate_limit: {unlimited: true}
  - key: bucket
    value: "shared-*"
    share_threshold: true
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: key1
    rate_limit: {name: specific, unit: hour, requests_per_unit: 1}
  - key: key2
    rate_limit:
      unit: hour
      requests_per_unit: 5
      replaces: [{name: specific}]
  - key: q1
    quota_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: q2
    quota_mode: true
    rate_limit: {unit: hour, requests_per_unit: 2}
""",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# These tests check decisions, not latency: a debug build on a busy machine can take longer than
# the default 10 ms store budget, after which the failure policy would answer instead of Redis.
REDIS_BUDGET = ["--store-budget-ms", "2000"]


class Redis:
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not start")

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Sluice:
    def __init__(self, *args):
        self.dir = tempfile.mkdtemp(prefix="sluice-conf-")
        for name, text in FILES.items():
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(text)
        self.proc = subprocess.Popen(
            [SLUICE, "--config", self.dir, "--grpc-addr", "127.0.0.1:0",
             "--http-addr", "127.0.0.1:0", "--log-format", "json", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={})
        found = threading.Event()
        self.addrs = {}

        def read():
            for line in self.proc.stderr:
                if "sluice listening" in line and not found.is_set():
                    fields = json.loads(line)["fields"]
                    self.addrs = {"grpc": fields["grpc"], "http": fields["http"]}
                    found.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not found.wait(30):
            self.stop()
            raise RuntimeError("sluice did not start")
        self.channel = grpc.insecure_channel(self.addrs["grpc"])
        self.stub = rls_pb2_grpc.RateLimitServiceStub(self.channel)

    def check(self, domain, *descriptors, hits_addend=0):
        req = rls_pb2.RateLimitRequest(domain=domain, hits_addend=hits_addend)
        for d in descriptors:
            req.descriptors.append(d)
        return self.stub.ShouldRateLimit(req, timeout=5)

    def post_json(self, body):
        req = urllib.request.Request(
            f"http://{self.addrs['http']}/json", data=json.dumps(body).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self):
        if hasattr(self, "channel"):
            self.channel.close()
        self.proc.kill()
        self.proc.wait()
        # The reader ends at EOF once the process is gone.
        self.reader.join(10)
        self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def d(*entries, hits=None):
    out = desc_pb2.RateLimitDescriptor()
    for k, v in entries:
        out.entries.add(key=k, value=v)
    if hits is not None:
        out.hits_addend.CopyFrom(wrappers_pb2.UInt64Value(value=hits))
    return out


def codes(resp):
    return [(s.code, s.limit_remaining) for s in resp.statuses]


class ReferenceSemantics:
    """Scenarios; subclasses pick the store."""

    extra_args = ()

    def setUp(self):
        self.redis = Redis() if self.use_redis else None
        args = ["--charge-rejected", *self.extra_args]
        if self.redis:
            args += ["--backend", "redis", "--redis-url", self.redis.url, *REDIS_BUDGET]
        self.s = Sluice(*args)

    def tearDown(self):
        self.s.stop()
        if self.redis:
            self.redis.stop()

    def test_exact_value_beats_key_default(self):
        r = self.s.check("mongo_cps", d(("database", "users")))
        self.assertEqual(codes(r), [(OK, 2)])
        self.assertEqual(r.statuses[0].current_limit.requests_per_unit, 3)
        self.assertEqual(r.statuses[0].current_limit.unit,
                         rls_pb2.RateLimitResponse.RateLimit.HOUR)
        r = self.s.check("mongo_cps", d(("database", "other")))
        self.assertEqual(codes(r), [(OK, 3)])
        self.assertEqual(r.statuses[0].current_limit.unit,
                         rls_pb2.RateLimitResponse.RateLimit.DAY)

    def test_over_limit_after_requests_per_unit(self):
        for remaining in (1, 0):
            self.assertEqual(codes(self.s.check("edge", d(("remote_address", "10.0.0.1")))),
                             [(OK, remaining)])
        r = self.s.check("edge", d(("remote_address", "10.0.0.1")))
        self.assertEqual(r.overall_code, OVER)
        self.assertEqual(codes(r), [(OVER, 0)])
        self.assertGreater(r.statuses[0].duration_until_reset.seconds, 0)
        self.assertLessEqual(r.statuses[0].duration_until_reset.seconds, 3600)

    def test_nested_descriptor_and_no_backtracking(self):
        r = self.s.check("edge", d(("message_type", "marketing"), ("to_number", "1")))
        self.assertEqual(codes(r), [(OK, 1)])
        # A top-level to_number has its own limit.
        self.assertEqual(codes(self.s.check("edge", d(("to_number", "1")))), [(OK, 2)])
        # Entering message_type=marketing and missing below does not fall back.
        r = self.s.check("edge", d(("message_type", "marketing"), ("other", "x")))
        self.assertEqual(codes(r), [(OK, 0)])
        self.assertFalse(r.statuses[0].HasField("current_limit"))
        # More entries than the rule path: no limit.
        r = self.s.check("edge", d(("remote_address", "a"), ("extra", "b")))
        self.assertFalse(r.statuses[0].HasField("current_limit"))

    def test_wildcards_whitelist_and_default(self):
        self.assertEqual(codes(self.s.check("edge", d(("path", "/api/users")))), [(OK, 1)])
        r = self.s.check("edge", d(("path", "/static/app.js")))
        self.assertFalse(r.statuses[0].HasField("current_limit"))
        self.assertEqual(codes(self.s.check("edge", d(("path", "/other")))), [(OK, 0)])

    def test_unlimited_and_unknown(self):
        r = self.s.check("edge", d(("internal", "x")), d(("nothing", "x")))
        self.assertEqual(codes(r), [(OK, U32_MAX), (OK, 0)])
        self.assertFalse(r.statuses[0].HasField("current_limit"))
        r = self.s.check("unknown_domain", d(("database", "users")))
        self.assertEqual(codes(r), [(OK, 0)])

    def test_share_threshold(self):
        self.assertEqual(codes(self.s.check("edge", d(("bucket", "shared-a")))), [(OK, 1)])
        self.assertEqual(codes(self.s.check("edge", d(("bucket", "shared-b")))), [(OK, 0)])
        self.assertEqual(self.s.check("edge", d(("bucket", "shared-c"))).overall_code, OVER)

    def test_shadow_mode(self):
        self.s.check("edge", d(("shadow", "x")))
        r = self.s.check("edge", d(("shadow", "x")))
        self.assertEqual(r.overall_code, OK)
        self.assertEqual(codes(r), [(OK, 0)])

    def test_replaces(self):
        r = self.s.check("edge", d(("key1", "a")), d(("key2", "b")))
        self.assertEqual(codes(r), [(OK, 0), (OK, 4)])
        self.assertFalse(r.statuses[0].HasField("current_limit"))

    def test_quota_mode(self):
        both = (d(("q1", "x")), d(("q2", "x")))
        self.assertEqual(self.s.check("edge", *both).overall_code, OK)
        r = self.s.check("edge", *both)
        self.assertEqual(r.overall_code, OK)
        self.assertEqual(codes(r), [(OVER, 0), (OK, 0)])
        r = self.s.check("edge", *both)
        self.assertEqual(r.overall_code, OVER)

    def test_rejected_request_charges_every_descriptor(self):
        # Compat mode: the reference increments everything it checks.
        both = (d(("remote_address", "r")), d(("path", "/x")))
        self.s.check("edge", *both)
        r = self.s.check("edge", *both)
        self.assertEqual(codes(r), [(OK, 0), (OVER, 0)])
        r = self.s.check("edge", d(("remote_address", "r")))
        self.assertEqual(r.overall_code, OVER)

    def test_hits_addend(self):
        r = self.s.check("mongo_cps", d(("database", "users")), hits_addend=2)
        self.assertEqual(codes(r), [(OK, 1)])
        # Per-descriptor hits_addend wins; 0 looks without consuming.
        r = self.s.check("mongo_cps", d(("database", "users"), hits=0), hits_addend=5)
        self.assertEqual(codes(r), [(OK, 1)])
        r = self.s.check("mongo_cps", d(("database", "users"), hits=2))
        self.assertEqual(codes(r), [(OVER, 0)])

    def test_limit_override(self):
        desc = d(("database", "users"))
        desc.limit.requests_per_unit = 1
        desc.limit.unit = 3  # envoy.type.v3.RateLimitUnit.HOUR
        self.assertEqual(codes(self.s.check("mongo_cps", desc)), [(OK, 0)])
        self.assertEqual(self.s.check("mongo_cps", desc).overall_code, OVER)

    def test_invalid_requests(self):
        for domain, descs in (("", [d(("a", "b"))]), ("edge", []), ("edge", [d(("", "b"))])):
            with self.assertRaises(grpc.RpcError) as e:
                self.s.check(domain, *descs)
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_json_endpoint(self):
        body = {"domain": "edge", "descriptors": [{"entries": [{"key": "path", "value": "/y"}]}]}
        status, resp = self.s.post_json(body)
        self.assertEqual(status, 200)
        self.assertEqual(resp["overallCode"], "OK")
        self.assertEqual(resp["statuses"][0]["currentLimit"],
                         {"requestsPerUnit": 1, "unit": "HOUR"})
        status, resp = self.s.post_json(body)
        self.assertEqual(status, 429)
        self.assertEqual(resp["overallCode"], "OVER_LIMIT")


class MemoryStore(ReferenceSemantics, unittest.TestCase):
    use_redis = False


class RedisStore(ReferenceSemantics, unittest.TestCase):
    use_redis = True


class AllOrNothingDefault(unittest.TestCase):
    """Where Sluice's default differs: a rejected request charges nothing."""

    def run_on(self, use_redis):
        redis = Redis() if use_redis else None
        args = ["--backend", "redis", "--redis-url", redis.url, *REDIS_BUDGET] if redis else []
        s = Sluice(*args)
        try:
            both = (d(("remote_address", "r")), d(("path", "/x")))
            s.check("edge", *both)
            r = s.check("edge", *both)
            self.assertEqual(r.overall_code, OVER)
            self.assertEqual(codes(r), [(OK, 1), (OVER, 0)])
            self.assertEqual(codes(s.check("edge", d(("remote_address", "r")))), [(OK, 0)])
        finally:
            s.stop()
            if redis:
                redis.stop()

    def test_memory(self):
        self.run_on(False)

    def test_redis(self):
        self.run_on(True)


if __name__ == "__main__":
    unittest.main()
