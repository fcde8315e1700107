#!/usr/bin/python3
"""An independent Majordomo peer for interop tests, on Debian's python3-zmq.

It shares no code with the TypeScript implementation: frames are built and
checked here from the wire contract (docs: plantd-wire.md section 1, RFC 7
MDP/0.1 and RFC 18 MDP/0.2).

Usage:
  mdp_peer.py client --endpoint E --dialect {plantd,mdp01,mdp02} --service S
                     [--timeout-ms 5000] BODY...
  mdp_peer.py worker --endpoint E --dialect {plantd,mdp01,mdp02} --service S
                     [--mode {echo,upper,hold}] [--partials N] [--heartbeat-ms 2500]
                     [--liveness 3] [--max-seconds 120]

A BODY frame written `hex:0aff` is sent as those bytes, anything else as UTF-8.

Output: one JSON object per line on stdout.
  client: {"event":"partial"|"reply", "dialect", "service", "command",
           "body": [text...], "body_hex": [hex...], "frames_hex": [hex...]}
          then exits 0; {"event":"timeout"} exits 3; {"event":"error"} exits 4.
  worker: {"event":"ready"} after each READY, {"event":"request", "client_hex",
          "body", "body_hex"} per request, {"event":"heartbeat"} per broker
          heartbeat, {"event":"reconnect","reason"}, {"event":"error"} for a
          message that breaks the contract, {"event":"stopped"} after sending
          DISCONNECT on SIGTERM/SIGINT; exits 0.

Clients: mdp01 uses a REQ socket (as RFC 7 clients do), mdp02 a DEALER with no
empty frame, plantd a DEALER that sends a leading empty frame and expects none
back. Workers are DEALERs; plantd and mdp01 workers send a leading empty frame.
"""

import argparse
import json
import signal
import sys
import time

import zmq

MDPC01 = b"MDPC01"
MDPC02 = b"MDPC02"
MDPW01 = b"MDPW01"
MDPW02 = b"MDPW02"

# Worker commands per dialect.
WORKER = {
    "plantd": {
        "READY": b"READY",
        "REQUEST": b"REQUEST",
        "PARTIAL": b"PARTIAL",
        "FINAL": b"FINAL",
        "HEARTBEAT": b"HEARTBEAT",
        "DISCONNECT": b"DISCONNECT",
    },
    "mdp01": {
        "READY": b"\x01",
        "REQUEST": b"\x02",
        "FINAL": b"\x03",  # RFC 7 REPLY
        "HEARTBEAT": b"\x04",
        "DISCONNECT": b"\x05",
    },
    "mdp02": {
        "READY": b"\x01",
        "REQUEST": b"\x02",
        "PARTIAL": b"\x03",
        "FINAL": b"\x04",
        "HEARTBEAT": b"\x05",
        "DISCONNECT": b"\x06",
    },
}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def frame_of(arg):
    if arg.startswith("hex:"):
        return bytes.fromhex(arg[4:])
    return arg.encode("utf-8")


def as_text(b):
    return b.decode("utf-8", errors="replace")


class ProtocolError(Exception):
    pass


# ------------------------------------------------------------------ client


def client_request(dialect, service, body):
    s = service.encode("utf-8")
    if dialect == "mdp01":
        return [MDPC01, s] + body  # the REQ socket adds the empty delimiter
    if dialect == "mdp02":
        return [MDPC02, b"\x01", s] + body
    return [b"", MDPC02, b"REQUEST", s] + body


def parse_client_reply(dialect, frames):
    """Returns (command, service, body) or raises ProtocolError."""
    if dialect == "mdp01":
        # The REQ socket has removed the empty delimiter the broker must send.
        if len(frames) < 2 or frames[0] != MDPC01:
            raise ProtocolError("RFC 7 reply must be MDPC01 | service | body")
        return "FINAL", as_text(frames[1]), frames[2:]
    if len(frames) < 3 or frames[0] != MDPC02:
        raise ProtocolError("reply must start with MDPC02 (no empty frame)")
    command = frames[1]
    if dialect == "mdp02":
        names = {b"\x02": "PARTIAL", b"\x03": "FINAL"}
    else:
        names = {b"PARTIAL": "PARTIAL", b"FINAL": "FINAL"}
    if command not in names:
        raise ProtocolError("unknown reply command %r for %s" % (command, dialect))
    return names[command], as_text(frames[2]), frames[3:]


def run_client(args):
    ctx = zmq.Context.instance()
    kind = zmq.REQ if args.dialect == "mdp01" else zmq.DEALER
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(args.endpoint)
    body = [frame_of(a) for a in args.body]
    sock.send_multipart(client_request(args.dialect, args.service, body))
    deadline = time.monotonic() + args.timeout_ms / 1000.0
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    code = 0
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(int(left * 1000) + 1):
                if time.monotonic() >= deadline:
                    emit({"event": "timeout"})
                    code = 3
                    break
                continue
            frames = sock.recv_multipart()
            try:
                command, service, reply = parse_client_reply(args.dialect, frames)
            except ProtocolError as error:
                emit({"event": "error", "reason": str(error),
                      "frames_hex": [f.hex() for f in frames]})
                code = 4
                break
            emit({
                "event": "reply" if command == "FINAL" else "partial",
                "dialect": args.dialect,
                "command": command,
                "service": service,
                "body": [as_text(f) for f in reply],
                "body_hex": [f.hex() for f in reply],
                "frames_hex": [f.hex() for f in frames],
            })
            if command == "FINAL":
                break
    finally:
        sock.close(0)
        ctx.term()
    return code


# ------------------------------------------------------------------ worker


class Worker:
    def __init__(self, args):
        self.args = args
        self.dialect = args.dialect
        self.cmd = WORKER[args.dialect]
        self.header = MDPW01 if args.dialect == "mdp01" else MDPW02
        self.ctx = zmq.Context.instance()
        self.sock = None
        self.stopping = False
        self.heartbeat_s = args.heartbeat_ms / 1000.0
        self.liveness = args.liveness

    # -- framing

    def lead(self):
        # plantd and RFC 7 workers put an empty frame first; RFC 18 ones do not.
        return [] if self.dialect == "mdp02" else [b""]

    def signal_frames(self, name, *rest):
        return self.lead() + [self.header, self.cmd[name]] + list(rest)

    def reply_frames(self, name, client, body):
        if self.dialect == "plantd":
            # plantd has no "" after the client id, but brokers drop one if
            # present: a body starting with "" needs one in front to survive.
            if body and body[0] == b"":
                return self.signal_frames(name, client, b"", *body)
            return self.signal_frames(name, client, *body)
        return self.signal_frames(name, client, b"", *body)

    def parse(self, frames):
        """Returns (command, client, body) or raises ProtocolError."""
        at = 0
        if self.dialect == "mdp01":
            if not frames or frames[0] != b"":
                raise ProtocolError("RFC 7 broker message must start with an empty frame")
            at = 1
        elif frames and frames[0] == b"":
            raise ProtocolError("%s broker message must not start with an empty frame"
                                % self.dialect)
        if len(frames) < at + 2 or frames[at] != self.header:
            raise ProtocolError("bad header")
        names = {v: k for k, v in self.cmd.items()}
        command = names.get(frames[at + 1])
        if command in ("HEARTBEAT", "DISCONNECT"):
            if len(frames) != at + 2:
                raise ProtocolError("%s with extra frames" % command)
            return command, None, None
        if command != "REQUEST":
            raise ProtocolError("unexpected command %r" % frames[at + 1])
        if len(frames) < at + 4 or frames[at + 3] != b"":
            raise ProtocolError("REQUEST must be header | REQUEST | client | '' | body")
        return command, frames[at + 2], frames[at + 4:]

    # -- connection

    def connect(self):
        if self.sock is not None:
            self.sock.close(0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 500)
        self.sock.connect(self.args.endpoint)
        self.sock.send_multipart(self.signal_frames("READY", self.args.service.encode("utf-8")))
        self.live = self.liveness
        self.next_heartbeat = time.monotonic() + self.heartbeat_s
        emit({"event": "ready", "dialect": self.dialect, "service": self.args.service})

    def answer(self, body):
        if self.args.mode == "upper":
            return [f.upper() for f in body]
        return list(body)

    def serve(self, client, body):
        emit({"event": "request", "client_hex": client.hex(),
              "body": [as_text(f) for f in body], "body_hex": [f.hex() for f in body]})
        if self.args.mode == "hold":
            return  # keeps the request, as a worker busy (or killed) mid-request
        if "PARTIAL" in self.cmd:
            for i in range(self.args.partials):
                part = [("partial-%d" % (i + 1)).encode()]
                self.sock.send_multipart(self.reply_frames("PARTIAL", client, part))
        self.sock.send_multipart(self.reply_frames("FINAL", client, self.answer(body)))

    def run(self):
        end = time.monotonic() + self.args.max_seconds
        self.connect()
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.stopping and time.monotonic() < end:
            if poller.poll(50):
                frames = self.sock.recv_multipart()
                self.live = self.liveness
                try:
                    command, client, body = self.parse(frames)
                except ProtocolError as error:
                    emit({"event": "error", "reason": str(error),
                          "frames_hex": [f.hex() for f in frames]})
                    continue
                if command == "REQUEST":
                    self.serve(client, body)
                elif command == "HEARTBEAT":
                    emit({"event": "heartbeat"})
                else:  # DISCONNECT
                    emit({"event": "reconnect", "reason": "broker sent DISCONNECT"})
                    poller.unregister(self.sock)
                    self.connect()
                    poller.register(self.sock, zmq.POLLIN)
                    continue
            now = time.monotonic()
            if now >= self.next_heartbeat:
                self.sock.send_multipart(self.signal_frames("HEARTBEAT"))
                self.next_heartbeat = now + self.heartbeat_s
                self.live -= 1
                if self.live <= 0:
                    emit({"event": "reconnect", "reason": "broker silent"})
                    poller.unregister(self.sock)
                    self.connect()
                    poller.register(self.sock, zmq.POLLIN)
        self.sock.send_multipart(self.signal_frames("DISCONNECT"))
        self.sock.close()  # linger lets the DISCONNECT go out
        self.ctx.term()
        emit({"event": "stopped"})
        return 0


def run_worker(args):
    worker = Worker(args)

    def stop(_signum, _frame):
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return worker.run()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="role", required=True)
    for role in ("client", "worker"):
        p = sub.add_parser(role)
        p.add_argument("--endpoint", required=True)
        p.add_argument("--dialect", choices=sorted(WORKER), required=True)
        p.add_argument("--service", required=True)
    c = sub.choices["client"]
    c.add_argument("--timeout-ms", type=int, default=5000)
    c.add_argument("body", nargs="*")
    w = sub.choices["worker"]
    w.add_argument("--mode", choices=["echo", "upper", "hold"], default="echo")
    w.add_argument("--partials", type=int, default=0)
    w.add_argument("--heartbeat-ms", type=int, default=2500)
    w.add_argument("--liveness", type=int, default=3)
    w.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    return run_client(args) if args.role == "client" else run_worker(args)


if __name__ == "__main__":
    sys.exit(main())
