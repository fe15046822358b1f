"""A stand-in for `mlflow server` on a Unix socket: answers `/health` like the TCP fakes in fakes.py."""

from __future__ import annotations

import sys

# argv: socket path. It binds the path plainly, as uvicorn does with --workers > 1, so a file left
# at the path stops it (EADDRINUSE). With EXIT_AFTER=<seconds> it exits with code 9 that long after
# it starts listening, leaving its socket file behind as a killed MLflow does.
SERVER = r"""
import http.server, os, socketserver, sys, threading
path = sys.argv[1]

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        healthy = self.path == "/health"
        self.send_response(200 if healthy else 404)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK" if healthy else b"no")

    def log_message(self, *args):
        pass

print("INFO fake mlflow starting on", path, flush=True)
try:
    server = socketserver.UnixStreamServer(path, Health)
except OSError as exc:
    print("ERROR", exc, flush=True)
    sys.exit(3)
if os.environ.get("EXIT_AFTER"):
    threading.Timer(float(os.environ["EXIT_AFTER"]), lambda: (print("ERROR crashed", flush=True), os._exit(9))).start()
print("INFO listening", flush=True)
server.serve_forever()
"""


def unix_server_command(path: str) -> list[str]:
    return [sys.executable, "-c", SERVER, path]
