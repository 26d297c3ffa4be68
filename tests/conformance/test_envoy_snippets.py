"""Every Envoy configuration we ship or show, parsed strictly into its Envoy message with Envoy's
own protos (PyPI `xds-protos`): unknown fields fail, and every `typed_config`'s `@type` must
resolve to a real message, whose fields are then checked the same way.

- envoy-config/envoy.yaml as an envoy.config.bootstrap.v3.Bootstrap, and
  envoy-config/sluice-cluster-tls.yaml as an envoy.config.cluster.v3.Cluster;
- each patch of envoy-config/istio-envoyfilter.yaml as the message its `applyTo` names;
- every ```yaml block in the Markdown docs whose first line is `# envoy: <message type>`. A block
  that looks like Envoy configuration without that line fails, so no snippet escapes the check.

Run: python3 -m unittest discover -s tests/conformance -v
"""

import glob
import importlib
import importlib.util
import os
import pkgutil
import unittest

import yaml
from google.protobuf import json_format, symbol_database

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# EnvoyFilter `applyTo` → the Envoy message its patch value is.
PATCH_TYPES = {
    "CLUSTER": "envoy.config.cluster.v3.Cluster",
    "HTTP_FILTER": "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
    "VIRTUAL_HOST": "envoy.config.route.v3.VirtualHost",
    "HTTP_ROUTE": "envoy.config.route.v3.Route",
    "ROUTE_CONFIGURATION": "envoy.config.route.v3.RouteConfiguration",
    "LISTENER": "envoy.config.listener.v3.Listener",
    "NETWORK_FILTER": "envoy.config.listener.v3.Filter",
}

# Words that only Envoy configuration uses.
ENVOY_MARKS = ("typed_config", "static_resources", "rate_limit_service", "@type", "envoy_grpc")


def import_package_of(full_name):
    """Imports every generated module of the proto package that defines `full_name`."""
    package = full_name.rsplit(".", 1)[0]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AssertionError(f"no Python package for proto package {package} ({full_name})")
    for info in pkgutil.iter_modules(spec.submodule_search_locations):
        if info.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{info.name}")


def any_types(value):
    """Every `@type` in a parsed YAML document."""
    if isinstance(value, dict):
        t = value.get("@type")
        if isinstance(t, str):
            yield t.rsplit("/", 1)[-1]
        for v in value.values():
            yield from any_types(v)
    elif isinstance(value, list):
        for v in value:
            yield from any_types(v)


def parse_strictly(doc, full_name):
    """Parses `doc` into Envoy message `full_name`; raises on anything unknown."""
    import_package_of(full_name)
    for t in any_types(doc):
        import_package_of(t)
    cls = symbol_database.Default().GetSymbol(full_name)
    message = cls()
    json_format.ParseDict(doc, message, ignore_unknown_fields=False)
    return message


def markdown_files():
    files = [os.path.join(ROOT, "README.md")]
    for pattern in ("docs/*.md", "envoy-config/*.md", "examples/**/*.md"):
        files.extend(glob.glob(os.path.join(ROOT, pattern), recursive=True))
    return sorted(files)


def yaml_blocks(path):
    """(first line number, text) of every ```yaml block."""
    blocks, current, start = [], None, 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            stripped = line.strip()
            if current is None and stripped.startswith("```yaml"):
                current, start = [], number + 1
            elif current is not None and stripped.startswith("```"):
                blocks.append((start, "".join(current)))
                current = None
            elif current is not None:
                current.append(line)
    return blocks


class EnvoySnippets(unittest.TestCase):
    def test_bootstrap_parses_strictly(self):
        with open(os.path.join(ROOT, "envoy-config/envoy.yaml"), encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        bootstrap = parse_strictly(doc, "envoy.config.bootstrap.v3.Bootstrap")
        self.assertEqual(
            [c.name for c in bootstrap.static_resources.clusters], ["sluice", "upstream"]
        )

    def test_tls_cluster_parses_strictly(self):
        with open(os.path.join(ROOT, "envoy-config/sluice-cluster-tls.yaml"), encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        cluster = parse_strictly(doc, "envoy.config.cluster.v3.Cluster")
        self.assertEqual(cluster.name, "sluice")
        self.assertEqual(cluster.transport_socket.name, "envoy.transport_sockets.tls")

    def test_istio_envoyfilter_patches_parse_strictly(self):
        with open(os.path.join(ROOT, "envoy-config/istio-envoyfilter.yaml"), encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        patches = doc["spec"]["configPatches"]
        self.assertGreaterEqual(len(patches), 2)
        for patch in patches:
            kind = PATCH_TYPES[patch["applyTo"]]
            with self.subTest(applyTo=patch["applyTo"]):
                parse_strictly(patch["patch"]["value"], kind)

    def test_every_envoy_snippet_in_the_docs_parses_strictly(self):
        checked = 0
        for path in markdown_files():
            for line, text in yaml_blocks(path):
                where = f"{os.path.relpath(path, ROOT)}:{line}"
                first = text.lstrip().splitlines()[0] if text.strip() else ""
                if first.startswith("# envoy:"):
                    kind = first.split(":", 1)[1].strip()
                    with self.subTest(snippet=where):
                        parse_strictly(yaml.safe_load(text), kind)
                    checked += 1
                elif any(mark in text for mark in ENVOY_MARKS) and "kind: EnvoyFilter" not in text:
                    self.fail(f"{where}: Envoy configuration without a `# envoy: <type>` line")
        # docs/envoy.md alone has three; finding fewer means the extraction broke.
        self.assertGreaterEqual(checked, 3)

    def test_unknown_fields_and_types_are_refused(self):
        with self.assertRaises(json_format.ParseError):
            parse_strictly({"name": "x", "bogus": 1}, "envoy.config.cluster.v3.Cluster")
        bad_any = {
            "name": "f",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                "domian": "edge",
            },
        }
        with self.assertRaises(json_format.ParseError):
            parse_strictly(
                bad_any, "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter"
            )


if __name__ == "__main__":
    unittest.main()
