"""envoy-config/envoy-wasm.yaml against Envoy's real protos (PyPI `xds-protos`), strictly: every
field must exist in envoy.config.bootstrap.v3.Bootstrap, every typed_config's `@type` must
resolve, and nothing unknown is ignored. The Istio WasmPlugin example is parsed too; its
`pluginConfig` (and the filter configuration in the bootstrap) are checked by the filter's own
parser in tests/tests/filter_configs.rs.

Run: python3 -m unittest discover -s tests/conformance -v
"""

import json
import os
import unittest

import yaml
from google.protobuf import json_format, wrappers_pb2  # noqa: F401  (StringValue for Any)
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.extensions.wasm.v3 import wasm_pb2 as wasm_config_pb2  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return yaml.safe_load(f)


class EnvoyWasmBootstrap(unittest.TestCase):
    def setUp(self):
        self.doc = load("envoy-config/envoy-wasm.yaml")
        self.bootstrap = bootstrap_pb2.Bootstrap()
        json_format.ParseDict(self.doc, self.bootstrap, ignore_unknown_fields=False)

    def wasm_filter(self):
        listener = self.bootstrap.static_resources.listeners[0]
        hcm = http_connection_manager_pb2.HttpConnectionManager()
        self.assertTrue(listener.filter_chains[0].filters[0].typed_config.Unpack(hcm))
        names = [f.name for f in hcm.http_filters]
        self.assertEqual(names, ["envoy.filters.http.wasm", "envoy.filters.http.router"])
        wasm = wasm_pb2.Wasm()
        self.assertTrue(hcm.http_filters[0].typed_config.Unpack(wasm))
        return wasm

    def test_parses_strictly_into_a_bootstrap(self):
        wasm = self.wasm_filter()
        self.assertEqual(wasm.config.vm_config.runtime, "envoy.wasm.runtime.v8")
        self.assertTrue(wasm.config.vm_config.code.local.filename.endswith("sluice_filter.wasm"))

    def test_the_plugin_configuration_is_json_naming_an_http2_cluster(self):
        wasm = self.wasm_filter()
        value = wrappers_pb2.StringValue()
        self.assertTrue(wasm.config.configuration.Unpack(value))
        plugin = json.loads(value.value)
        cluster = plugin["service"]["cluster"]
        clusters = {c.name: c for c in self.bootstrap.static_resources.clusters}
        self.assertIn(cluster, clusters)
        options = http_protocol_options_pb2.HttpProtocolOptions()
        any_options = clusters[cluster].typed_extension_protocol_options[
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        self.assertTrue(any_options.Unpack(options))
        self.assertTrue(options.explicit_http_config.HasField("http2_protocol_options"))

    def test_unknown_fields_would_be_refused(self):
        broken = load("envoy-config/envoy-wasm.yaml")
        broken["static_resources"]["clusters"][0]["bogus"] = 1
        with self.assertRaises(json_format.ParseError):
            json_format.ParseDict(broken, bootstrap_pb2.Bootstrap(), ignore_unknown_fields=False)


class IstioWasmPlugin(unittest.TestCase):
    def test_is_a_wasmplugin_for_the_ingress_gateway(self):
        doc = load("envoy-config/istio-wasmplugin.yaml")
        self.assertEqual(doc["apiVersion"], "extensions.istio.io/v1alpha1")
        self.assertEqual(doc["kind"], "WasmPlugin")
        spec = doc["spec"]
        self.assertEqual(set(spec) - {"selector", "url", "imagePullPolicy", "phase", "failStrategy", "pluginConfig"}, set())
        self.assertIn(spec["phase"], {"AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE"})
        self.assertIn(spec["failStrategy"], {"FAIL_OPEN", "FAIL_CLOSE"})
        self.assertTrue(spec["url"].startswith(("oci://", "https://", "http://", "file://")))
        self.assertEqual(spec["pluginConfig"]["domain"], "edge")


if __name__ == "__main__":
    unittest.main()
