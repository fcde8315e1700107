#!/usr/bin/python3
"""A libzmq peer (pyzmq) driven line by line from a test: the reference side
of tests/zmtp_conformance_test.ts.

Each line on stdin is a JSON command; each gets exactly one JSON line back on
stdout ({"ok": true, ...} or {"ok": false, "error": "..."}). Frames are
given as {"hex": "..."} or {"size": n, "fill": b} (so large frames need not
cross the pipe); received frames come back as {"len": n, "sha256": "...",
"hex": "..."} (hex only for frames of up to 1024 bytes).

Commands:
  socket   {"type": "DEALER", "options": {"routing_id": "x", "rcvhwm": 10, ...}}
  bind     {"endpoint": "tcp://127.0.0.1:0"} -> {"endpoint": actual}
  connect  {"endpoint": "..."}
  send     {"frames": [...], "timeout_ms": 5000}
  recv     {"timeout_ms": 5000} -> {"frames": [...]} or {"ok": false, "error": "timeout"}
  monitor  {}: start collecting socket events; events -> {"events": ["HANDSHAKE_SUCCEEDED", ...]}
  close    {}
"""
import hashlib
import json
import sys

import zmq
from zmq.utils.monitor import recv_monitor_message

context = zmq.Context()
socket = None
monitor = None
events = []

EVENT_NAMES = {
    value: name[len("EVENT_"):]
    for name, value in vars(zmq).items()
    if name.startswith("EVENT_") and isinstance(value, int)
}


def frame_of(spec):
    if "hex" in spec:
        return bytes.fromhex(spec["hex"])
    return bytes([spec.get("fill", 0)]) * spec["size"]


def describe(frame):
    out = {"len": len(frame), "sha256": hashlib.sha256(frame).hexdigest()}
    if len(frame) <= 1024:
        out["hex"] = frame.hex()
    return out


def option(name, value):
    if isinstance(value, str):
        value = value.encode()
    if name == "curve_server_keypair":
        # Makes this a CURVE server with a fresh key pair.
        public, secret = zmq.curve_keypair()
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_server = True
        return
    if name == "curve_client_random":
        # A CURVE client of a server whose key it does not know: the
        # handshake fails on the mechanism long before the key matters.
        public, secret = zmq.curve_keypair()
        server_public, _ = zmq.curve_keypair()
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_serverkey = server_public
        return
    if name == "subscribe":
        socket.setsockopt(zmq.SUBSCRIBE, value)
        return
    setattr(socket, name, value)


def drain_monitor():
    while monitor is not None and monitor.poll(0):
        message = recv_monitor_message(monitor)
        events.append(EVENT_NAMES.get(message["event"], str(message["event"])))


def handle(command):
    global socket, monitor
    op = command["op"]
    if op == "socket":
        socket = context.socket(getattr(zmq, command["type"]))
        socket.linger = 0
        for name, value in command.get("options", {}).items():
            option(name, value)
        return {}
    if op == "bind":
        socket.bind(command["endpoint"])
        return {"endpoint": socket.getsockopt_string(zmq.LAST_ENDPOINT)}
    if op == "connect":
        socket.connect(command["endpoint"])
        return {}
    if op == "send":
        frames = [frame_of(f) for f in command["frames"]]
        if not socket.poll(command.get("timeout_ms", 5000), zmq.POLLOUT):
            return {"ok": False, "error": "timeout"}
        try:
            socket.send_multipart(frames, zmq.DONTWAIT)
        except zmq.Again:
            # Writable at the poll, full again since (a pipe went away): not taken.
            return {"ok": False, "error": "timeout"}
        return {}
    if op == "recv":
        if not socket.poll(command.get("timeout_ms", 5000), zmq.POLLIN):
            return {"ok": False, "error": "timeout"}
        return {"frames": [describe(f) for f in socket.recv_multipart(zmq.DONTWAIT)]}
    if op == "monitor":
        monitor = socket.get_monitor_socket()
        return {}
    if op == "events":
        drain_monitor()
        return {"events": events}
    if op == "close":
        if monitor is not None:
            socket.disable_monitor()
            monitor.close()
            monitor = None
        socket.close()
        socket = None
        return {}
    raise ValueError(f"unknown op {op}")


for line in sys.stdin:
    if not line.strip():
        continue
    try:
        result = handle(json.loads(line))
        if "ok" not in result:
            result["ok"] = True
    except Exception as error:  # reported to the test, which fails with it
        result = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    print(json.dumps(result), flush=True)
