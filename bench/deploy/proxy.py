#!/usr/bin/env python3
"""Timestamping reverse proxy in front of moto: logs `<unix time> <operation>` for every AWS
request (the X-Amz-Target header of JSON-protocol services, else the Action form field), so a
benchmark can see when each tool sent UpdateService. Same path for every tool measured.

usage: proxy.py LISTEN_PORT UPSTREAM_PORT LOGFILE
"""
import http.client
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LISTEN, UPSTREAM, LOG = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
log = open(LOG, "a", buffering=1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _forward(self):
        t = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        op = self.headers.get("X-Amz-Target", "")
        if not op and body:
            op = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]
        log.write(f"{t:.6f} {op or self.path}\n")
        conn = http.client.HTTPConnection("127.0.0.1", UPSTREAM, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward


ThreadingHTTPServer(("127.0.0.1", LISTEN), Handler).serve_forever()
