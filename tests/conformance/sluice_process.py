"""The real `sluice` binary as a subprocess for the conformance tests: started on loopback port 0
with the given flags and environment, its addresses read from its "listening" log line."""

import json
import os
import subprocess
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLUICE = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "target", "debug", "sluice"))


class SluiceProcess:
    def __init__(self, args, env):
        self.proc = subprocess.Popen(
            [SLUICE, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
             "--log-format", "json", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        found = threading.Event()
        self.grpc = self.http = None

        def scan():
            for line in self.proc.stderr:
                if "sluice listening" in line and not found.is_set():
                    fields = json.loads(line)["fields"]
                    self.grpc, self.http = fields["grpc"], fields["http"]
                    found.set()

        self.reader = threading.Thread(target=scan, daemon=True)
        self.reader.start()
        if not found.wait(30):
            self.stop()
            raise RuntimeError("sluice did not start")

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.reader.join(10)
        self.proc.stderr.close()
