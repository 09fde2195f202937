#!/usr/bin/env python3
"""An OTLP/HTTP trace receiver that accepts and discards spans, for `make bench-traces`.

Answers `POST /v1/traces` with 200 and an empty protobuf `ExportTraceServiceResponse`, counts
the requests and body bytes, and prints them as JSON when stopped (SIGTERM). Standard library
only: it measures what exporting costs the node, not a collector.
"""
import argparse
import http.server
import json
import signal
import sys
import threading

counts = {"requests": 0, "bytes": 0}
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        with lock:
            counts["requests"] += 1
            counts["bytes"] += length
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)

    def stop(*_):
        print(json.dumps(counts), flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
