"""An HTTPS receiver for the tests: serves TLS with the given certificate and key on
127.0.0.1, answers every request with the status given (the first `--fail-first` requests
with 500), and appends each request to a JSON-lines file (method, path, headers, body).

Usage: https_receiver.py CERT KEY LOG [--fail-first N] [--redirect-to URL]
Prints the port it listens on, then serves until killed.
"""

import http.server
import json
import ssl
import sys
import threading

cert, key, log = sys.argv[1], sys.argv[2], sys.argv[3]
args = sys.argv[4:]
fail_first = int(args[args.index("--fail-first") + 1]) if "--fail-first" in args else 0
redirect_to = args[args.index("--redirect-to") + 1] if "--redirect-to" in args else None
lock = threading.Lock()
count = [0]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _record(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        with lock:
            n = count[0]
            count[0] += 1
            with open(log, "a", encoding="utf-8") as out:
                out.write(json.dumps({
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                }) + "\n")
        return n

    def _answer(self):
        n = self._record()
        if redirect_to is not None:
            self.send_response(307)
            self.send_header("location", redirect_to)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        status = 500 if n < fail_first else 200
        payload = b"ok" if status == 200 else b"try again"
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = _answer
    do_PUT = _answer
    do_GET = _answer

    def log_message(self, *_):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
