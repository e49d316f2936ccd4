#!/usr/bin/env python3
"""An OTLP/HTTP logs receiver for seglog's tests, built on the official generated classes
(PyPI `opentelemetry-proto`, `protobuf`, `googleapis-common-protos`, `zstandard`): it shares no
code with seglog, so what it decodes is what any OTLP receiver would see.

Usage: receiver.py OUT_JSONL [SCRIPT]
  Listens on 127.0.0.1 on a free port and prints "port N" on stdout once ready.
  Every POST to /v1/logs is decoded and written to OUT_JSONL as one JSON object (headers,
  every resource, scope and log record with every field), then answered by the next step of
  SCRIPT (comma-separated; after the last step, every answer is "ok", or "503" while the
  file OUT_JSONL.hold exists):
    ok                 200, empty ExportLogsServiceResponse
    partial:N:MESSAGE  200 with partial_success (N rejected, MESSAGE)
    429:SECONDS        429 with Retry-After: SECONDS and a google.rpc.Status
    400:MESSAGE        400 with a google.rpc.Status (code 3, MESSAGE)
    503                503 without Retry-After
  A request that does not decode is answered 400 and written as {"error": ...}.
"""
import gzip
import os
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import zstandard
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2


def value(v):
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return v.int_value
    if kind == "bytes_value":
        return "hex:" + v.bytes_value.hex()
    if kind == "bool_value":
        return v.bool_value
    if kind == "double_value":
        return v.double_value
    return {"unsupported": kind}


def attrs(kvs):
    out = {}
    for kv in kvs:
        if kv.key in out:
            out.setdefault("__duplicates__", []).append(kv.key)
        out[kv.key] = value(kv.value)
    return out


def record(r):
    return {
        "time_unix_nano": r.time_unix_nano,
        "observed_time_unix_nano": r.observed_time_unix_nano,
        "severity_number": r.severity_number,
        "severity_text": r.severity_text,
        "body": value(r.body) if r.HasField("body") else None,
        "attributes": attrs(r.attributes),
        "dropped_attributes_count": r.dropped_attributes_count,
        "flags": r.flags,
        "trace_id": r.trace_id.hex(),
        "span_id": r.span_id.hex(),
        "event_name": r.event_name,
    }


def request_json(req):
    return [
        {
            "resource": attrs(rl.resource.attributes),
            "scopes": [
                {
                    "name": sl.scope.name,
                    "version": sl.scope.version,
                    "attributes": attrs(sl.scope.attributes),
                    "records": [record(r) for r in sl.log_records],
                }
                for sl in rl.scope_logs
            ],
        }
        for rl in req.resource_logs
    ]


class State:
    def __init__(self, out, script):
        self.out = open(out, "a", buffering=1)
        self.hold = out + ".hold"
        self.script = [s for s in script.split(",") if s] if script else []
        self.lock = threading.Lock()

    def next_step(self):
        with self.lock:
            if self.script:
                return self.script.pop(0)
        # After the script: 503 while OUT_JSONL.hold exists, else ok.
        return "503" if os.path.exists(self.hold) else "ok"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, code, body=b"", headers=()):
        self.send_response(code)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        st = self.server.state
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        entry = {
            "path": self.path,
            "content_type": self.headers.get("Content-Type"),
            "content_encoding": self.headers.get("Content-Encoding"),
            "batch_id": self.headers.get("Seglog-Batch-Id"),
            "authorization": self.headers.get("Authorization"),
            "x_api_key": self.headers.get("X-Api-Key"),
            "wire_bytes": len(raw),
            "at": time.time(),
        }
        try:
            enc = (self.headers.get("Content-Encoding") or "").lower()
            if enc == "zstd":
                body = zstandard.ZstdDecompressor().stream_reader(raw).read()
            elif enc == "gzip":
                body = gzip.decompress(raw)
            else:
                body = raw
            req = logs_service_pb2.ExportLogsServiceRequest()
            req.ParseFromString(body)
            entry["resource_logs"] = request_json(req)
        except Exception as e:  # noqa: BLE001 - reported to the test
            entry["error"] = repr(e)
            st.out.write(json.dumps(entry) + "\n")
            self.answer(400, status_pb2.Status(code=3, message=repr(e)).SerializeToString())
            return
        step = st.next_step()
        entry["answer"] = step
        st.out.write(json.dumps(entry) + "\n")
        if step == "ok":
            self.answer(200, logs_service_pb2.ExportLogsServiceResponse().SerializeToString())
        elif step.startswith("partial:"):
            _, count, msg = step.split(":", 2)
            resp = logs_service_pb2.ExportLogsServiceResponse()
            resp.partial_success.rejected_log_records = int(count)
            resp.partial_success.error_message = msg
            self.answer(200, resp.SerializeToString())
        elif step.startswith("429:"):
            secs = step.split(":", 1)[1]
            body = status_pb2.Status(code=8, message="slow down").SerializeToString()
            self.answer(429, body, [("Retry-After", secs)])
        elif step.startswith("400:"):
            msg = step.split(":", 1)[1]
            self.answer(400, status_pb2.Status(code=3, message=msg).SerializeToString())
        elif step == "503":
            self.answer(503, status_pb2.Status(code=14, message="unavailable").SerializeToString())
        else:
            self.answer(500, b"bad script step " + step.encode())


def main():
    out = sys.argv[1]
    script = sys.argv[2] if len(sys.argv) > 2 else ""
    server = HTTPServer(("127.0.0.1", 0), Handler)
    server.state = State(out, script)
    print("port", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
