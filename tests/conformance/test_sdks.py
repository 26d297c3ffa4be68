"""The Python and TypeScript clients as their users get them, against the real thing.

Each package is built into its artefact (`python -m build`, `npm pack`) and installed into a clean
virtualenv or folder; nothing is imported from the source trees. Then the real `sluice` runs
with the rules below, the real NGINX runs `examples/nginx/nginx.conf` in front of a small
upstream that records every request it gets, and each package's own end-to-end tests
(`clients/python/tests/e2e/`, `clients/typescript/test/e2e/`) and its example app
(`examples/micro-apps/<language>/`) run against them. The e2e tests print their measurements
on lines starting `SDK-E2E`, which this test repeats.
"""

import glob
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

from sluice_process import ROOT, SluiceProcess

LIMIT = 10

# The domain NGINX asks about (examples/nginx/nginx.conf's /auth/nginx-edge), with a limit small
# enough that pacing matters within seconds; every client address may do far more.
EDGE_RULES = f"""domain: nginx-edge
descriptors:
  - key: app_id
    rate_limit: {{name: per-app, unit: second, requests_per_unit: {LIMIT}}}
  - key: remote_address
    rate_limit: {{name: per-ip, unit: second, requests_per_unit: 1000000}}
http_descriptors:
  - entries:
      - {{ key: app_id, header: X-App-Id }}
  - entries:
      - {{ key: remote_address, header: X-Real-IP }}
"""

# What the clients ask Sluice directly: a daily quota on /json, a pool of one lease, and an
# adaptive pool their reports (`POST /reports`) feed.
SDK_RULES = """domain: sdk
descriptors:
  - key: org
    rate_limit: {name: org-daily, unit: day, requests_per_unit: 1}
  - key: uploads
    rate_limit: {name: uploads, concurrency: 1, lease_ttl: 60}
  - key: upstream
    value: payments
    rate_limit:
      concurrency: 50
      adaptive: {signal: latency, target: 200ms, quantile: 0.99, min: 5, max: 100, interval: 1s}
"""

EXAMPLE_SLUICE = "server 127.0.0.1:8080;"
EXAMPLE_APP = "server 127.0.0.1:5678;"
EXAMPLE_LISTEN = "listen 127.0.0.1:8000;"
STEP_TIMEOUT = 300
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def run(cmd, cwd=None, env=None, timeout=STEP_TIMEOUT):
    """Runs a command to completion; its output is returned and shown on failure."""
    done = subprocess.run(cmd, cwd=cwd, env=env, timeout=timeout, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout}")
    return done.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream:
    """The protected app: answers 200 and records when each app's request arrived."""

    def __init__(self):
        hits = self.hits = {}
        lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, body, content_type="text/plain"):
                data = body.encode()
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/__hits":
                    app = urllib.parse.parse_qs(url.query).get("app_id", [""])[0]
                    with lock:
                        seen = list(hits.get(app, []))
                    return self.answer(json.dumps({"hits": seen}), "application/json")
                with lock:
                    hits.setdefault(self.headers.get("x-app-id", ""), []).append(
                        time.time() * 1000)
                self.answer("hello from upstream\n")

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                self.do_GET()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.addr = "127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Nginx:
    """The shipped example with exactly three substitutions, on a free loopback port."""

    def __init__(self, sluice_http, app_addr, workdir):
        with open(os.path.join(ROOT, "examples", "nginx", "nginx.conf")) as f:
            text = f.read()
        last = ""
        for _ in range(5):
            port = free_port()
            conf = text
            for old, new in ((EXAMPLE_SLUICE, f"server {sluice_http};"),
                             (EXAMPLE_APP, f"server {app_addr};"),
                             (EXAMPLE_LISTEN, f"listen 127.0.0.1:{port};")):
                assert conf.count(old) == 1, old
                conf = conf.replace(old, new)
            prefix = tempfile.mkdtemp(dir=workdir)
            for sub in ("logs", "temp"):
                os.mkdir(os.path.join(prefix, sub))
            path = os.path.join(prefix, "nginx.conf")
            with open(path, "w") as f:
                f.write(conf)
            self.proc = subprocess.Popen([NGINX, "-p", prefix, "-c", path, "-g", "daemon off;"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         text=True)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    self.url = f"http://127.0.0.1:{port}"
                    return
                except OSError:
                    time.sleep(0.02)
            self.stop()
            last = self.proc.stderr.read() if self.proc.stderr else ""
        raise RuntimeError(f"nginx did not start: {last}")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class ClientPackages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="sluice-sdks-")
        cls.addClassCleanup(shutil.rmtree, cls.work, ignore_errors=True)
        cls.python = cls.install_python()
        cls.node_dir = cls.install_typescript()

        rules = os.path.join(cls.work, "rules")
        os.mkdir(rules)
        for name, text in (("edge.yaml", EDGE_RULES), ("sdk.yaml", SDK_RULES)):
            with open(os.path.join(rules, name), "w") as f:
                f.write(text)
        cls.upstream = Upstream()
        cls.addClassCleanup(cls.upstream.stop)
        cls.sluice = SluiceProcess(["--config", rules, "--response-headers=ietf"],
                                   dict(os.environ))
        cls.addClassCleanup(cls.sluice.stop)
        cls.nginx = Nginx(cls.sluice.http, cls.upstream.addr, cls.work)
        cls.addClassCleanup(cls.nginx.stop)
        cls.env = dict(os.environ,
                       SLUICE_NGINX_URL=cls.nginx.url,
                       SLUICE_URL=f"http://{cls.sluice.http}",
                       SLUICE_UPSTREAM_URL=f"http://{cls.upstream.addr}",
                       SLUICE_E2E_LIMIT=str(LIMIT))

    @classmethod
    def install_python(cls):
        """The wheel `python -m build` makes, in a fresh virtualenv; returns its python."""
        dist = os.path.join(cls.work, "dist")
        run([sys.executable, "-m", "build", "--wheel", "--outdir", dist,
             os.path.join(ROOT, "clients", "python")])
        wheels = glob.glob(os.path.join(dist, "sluice_client-*.whl"))
        assert len(wheels) == 1, wheels
        venv = os.path.join(cls.work, "venv")
        run([sys.executable, "-m", "venv", venv])
        python = os.path.join(venv, "bin", "python")
        run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
             f"{wheels[0]}[httpx,requests]", "pytest"])
        # The installed package, not the source tree.
        where = run([python, "-c", "import sluice_client; print(sluice_client.__file__)"],
                    cwd=cls.work)
        assert os.path.join(venv, "lib") in where, where
        return python

    @classmethod
    def install_typescript(cls):
        """The tarball `npm pack` makes, installed into an empty folder; returns the folder."""
        source = os.path.join(ROOT, "clients", "typescript")
        if not os.path.isdir(os.path.join(source, "node_modules")):
            run(["npm", "ci", "--no-audit", "--no-fund"], cwd=source)
        packs = os.path.join(cls.work, "npm")
        os.mkdir(packs)
        run(["npm", "pack", "--pack-destination", packs], cwd=source)
        tarballs = glob.glob(os.path.join(packs, "sluice-client-*.tgz"))
        assert len(tarballs) == 1, tarballs
        folder = os.path.join(cls.work, "node")
        os.mkdir(folder)
        with open(os.path.join(folder, "package.json"), "w") as f:
            json.dump({"name": "sdk-e2e", "private": True, "type": "module"}, f)
        run(["npm", "install", "--no-audit", "--no-fund", tarballs[0]], cwd=folder)
        return folder

    def report(self, output):
        for line in output.splitlines():
            if "SDK-E2E" in line:
                print(line[line.index("SDK-E2E"):])

    def test_python_package_end_to_end(self):
        here = os.path.join(self.work, "python-e2e")
        shutil.copytree(os.path.join(ROOT, "clients", "python", "tests", "e2e"), here)
        out = run([self.python, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", here],
                  cwd=here, env=self.env)
        self.assertIn(" passed", out)
        self.report(out)

    def test_typescript_package_end_to_end(self):
        here = os.path.join(self.node_dir, "e2e")
        shutil.copytree(os.path.join(ROOT, "clients", "typescript", "test", "e2e"), here)
        files = sorted(glob.glob(os.path.join(here, "*.e2e.mjs")))
        self.assertTrue(files)
        out = run(["node", "--test", "--test-concurrency=1", *files], cwd=self.node_dir,
                  env=self.env)
        self.assertRegex(out, r"# fail 0")
        self.report(out)

    def test_python_example_app(self):
        app = os.path.join(ROOT, "examples", "micro-apps", "python", "app.py")
        out = run([self.python, app, "--url", self.nginx.url, "--app-id", "example-py",
                   "--count", "15"], env=self.env)
        self.assertTrue(out.strip(), "the app printed no summary")
        print(out.strip().splitlines()[-1])

    def test_typescript_example_app(self):
        app = os.path.join(self.node_dir, "app.mjs")
        shutil.copy(os.path.join(ROOT, "examples", "micro-apps", "typescript", "app.mjs"), app)
        out = run(["node", app, "--url", self.nginx.url, "--app-id", "example-ts",
                   "--count", "15"], cwd=self.node_dir, env=self.env)
        self.assertTrue(out.strip(), "the app printed no summary")
        print(out.strip().splitlines()[-1])


if __name__ == "__main__":
    unittest.main()
