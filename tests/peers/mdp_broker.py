#!/usr/bin/python3
"""A strict Majordomo broker for interop tests, on Debian's python3-zmq.

It shares no code with the TypeScript implementation and follows one RFC's
frame tables exactly: RFC 7 (MDP/0.1, rfc.zeromq.org/spec/7) or RFC 18
(MDP/0.2, rfc.zeromq.org/spec/18), optionally with RFC 8 (MMI). Every frame of
every message is checked against that table; nothing else is read.

As both RFCs say, an invalid message is dropped and its peer is treated as
invalid: everything it sends afterwards is dropped too (a fresh socket is a
fresh peer). A valid but unexpected worker command gets DISCONNECT. The broker
never answers an invalid message: it reports it on stdout, which is what the
tests read to prove our peers sent none.

Usage:
  mdp_broker.py --rfc {7,18} [--endpoint tcp://127.0.0.1:0] [--mmi]
                [--heartbeat-ms 2500] [--liveness 3] [--request-expiry-ms 30000]

Output: one JSON object per line on stdout.
  {"event":"listening","endpoint"}            once bound
  {"event":"invalid","peer","reason","frames_hex"}   a dropped invalid message
  {"event":"ignored","peer","frames"}          a message from a peer already invalid
  {"event":"disconnect","peer","reason"}       DISCONNECT sent for an unexpected command
  {"event":"ready","peer","service"}           a worker registered
  {"event":"expired","what","peer"|"service"}  a silent worker or a queued request dropped
  {"event":"stopped","requests","replies","invalid"}  after SIGTERM/SIGINT; exits 0
"""

import argparse
import json
import signal
import sys
import time

import zmq

MDPC01 = b"MDPC01"
MDPW01 = b"MDPW01"
MDPC02 = b"MDPC02"
MDPW02 = b"MDPW02"


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Invalid(Exception):
    """The message breaks the RFC's frame table."""


def printable(frame):
    return len(frame) > 0 and all(0x20 <= b <= 0x7E for b in frame)


class Rfc7:
    """RFC 7 frame tables (after the ROUTER identity frame)."""

    name = "MDP/0.1"
    client_header = MDPC01
    worker_header = MDPW01
    READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"

    def parse(self, frames):
        """Returns ("client", service, body) or ("worker", command, rest)."""
        if not frames:
            raise Invalid("empty message")
        if frames[0] != b"":
            raise Invalid("frame 0 is not empty (RFC 7 commands start with an empty frame)")
        if len(frames) < 2:
            raise Invalid("no protocol header")
        header = frames[1]
        if header == MDPC01:
            if len(frames) < 4:
                raise Invalid("REQUEST needs 4 or more frames, got %d" % len(frames))
            if not printable(frames[2]):
                raise Invalid("service name is not a printable string")
            return "client", frames[2], frames[3:]
        if header != MDPW01:
            raise Invalid("frame 1 is %r, not MDPC01 or MDPW01" % header[:16])
        if len(frames) < 3:
            raise Invalid("worker command frame missing")
        command = frames[2]
        if command == self.READY:
            if len(frames) != 4:
                raise Invalid("READY has 4 frames, got %d" % len(frames))
            if not printable(frames[3]):
                raise Invalid("READY service name is not a printable string")
            return "worker", "READY", frames[3]
        if command in (self.HEARTBEAT, self.DISCONNECT):
            if len(frames) != 3:
                raise Invalid("HEARTBEAT/DISCONNECT has 3 frames, got %d" % len(frames))
            return "worker", "HEARTBEAT" if command == self.HEARTBEAT else "DISCONNECT", None
        if command == self.REPLY:
            if len(frames) < 6:
                raise Invalid("REPLY needs 6 or more frames, got %d" % len(frames))
            if len(frames[3]) == 0:
                raise Invalid("REPLY client address is empty")
            if frames[4] != b"":
                raise Invalid("REPLY client address is not followed by an empty frame")
            return "worker", "FINAL", (frames[3], frames[5:])
        if command == self.REQUEST:
            return "worker", "REQUEST", None
        raise Invalid("unknown worker command %r" % command[:16])

    def to_client(self, service, body, final):
        return [b"", MDPC01, service] + body

    def to_worker(self, command, *rest):
        byte = {"REQUEST": self.REQUEST, "HEARTBEAT": self.HEARTBEAT,
                "DISCONNECT": self.DISCONNECT}[command]
        return [b"", MDPW01, byte] + list(rest)


class Rfc18:
    """RFC 18 frame tables (after the ROUTER identity frame)."""

    name = "MDP/0.2"
    client_header = MDPC02
    worker_header = MDPW02
    READY, REQUEST, PARTIAL, FINAL, HEARTBEAT, DISCONNECT = (
        b"\x01", b"\x02", b"\x03", b"\x04", b"\x05", b"\x06")

    def parse(self, frames):
        if not frames:
            raise Invalid("empty message")
        header = frames[0]
        if header == b"":
            raise Invalid("frame 0 is empty (RFC 18 commands have no leading empty frame)")
        if header == MDPC02:
            if len(frames) < 4:
                raise Invalid("REQUEST needs 4 or more frames, got %d" % len(frames))
            if frames[1] != b"\x01":
                raise Invalid("client command %r is not REQUEST (0x01)" % frames[1][:16])
            if not printable(frames[2]):
                raise Invalid("service name is not a printable string")
            return "client", frames[2], frames[3:]
        if header != MDPW02:
            raise Invalid("frame 0 is %r, not MDPC02 or MDPW02" % header[:16])
        if len(frames) < 2:
            raise Invalid("worker command frame missing")
        command = frames[1]
        if command == self.READY:
            if len(frames) != 3:
                raise Invalid("READY has 3 frames, got %d" % len(frames))
            if not printable(frames[2]):
                raise Invalid("READY service name is not a printable string")
            return "worker", "READY", frames[2]
        if command in (self.HEARTBEAT, self.DISCONNECT):
            if len(frames) != 2:
                raise Invalid("HEARTBEAT/DISCONNECT has 2 frames, got %d" % len(frames))
            return "worker", "HEARTBEAT" if command == self.HEARTBEAT else "DISCONNECT", None
        if command in (self.PARTIAL, self.FINAL):
            if len(frames) < 5:
                raise Invalid("PARTIAL/FINAL needs 5 or more frames, got %d" % len(frames))
            if len(frames[2]) == 0:
                raise Invalid("reply client address is empty")
            if frames[3] != b"":
                raise Invalid("reply client address is not followed by an empty frame")
            kind = "FINAL" if command == self.FINAL else "PARTIAL"
            return "worker", kind, (frames[2], frames[4:])
        if command == self.REQUEST:
            return "worker", "REQUEST", None
        raise Invalid("unknown worker command %r" % command[:16])

    def to_client(self, service, body, final):
        return [MDPC02, b"\x03" if final else b"\x02", service] + body

    def to_worker(self, command, *rest):
        byte = {"REQUEST": self.REQUEST, "HEARTBEAT": self.HEARTBEAT,
                "DISCONNECT": self.DISCONNECT}[command]
        return [MDPW02, byte] + list(rest)


class Worker:
    def __init__(self, identity, service, expiry):
        self.identity = identity
        self.service = service
        self.expiry = expiry
        self.request = None  # (client, body) while busy


class Broker:
    def __init__(self, args):
        self.rfc = Rfc7() if args.rfc == "7" else Rfc18()
        self.mmi = args.mmi
        self.heartbeat_s = args.heartbeat_ms / 1000.0
        self.liveness = args.liveness
        self.expiry_s = args.request_expiry_ms / 1000.0
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(args.endpoint)
        self.endpoint = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.workers = {}        # identity -> Worker
        self.waiting = []        # idle workers, longest idle first
        self.queues = {}         # service -> [(client, body, queued_at)]
        self.outstanding = set()  # clients with a request not yet answered
        self.invalid = set()     # peers treated as invalid
        self.stopping = False
        self.counts = {"requests": 0, "replies": 0, "invalid": 0}

    # -- output

    def send(self, identity, frames):
        self.sock.send_multipart([identity] + frames)

    def disconnect(self, identity, reason):
        emit({"event": "disconnect", "peer": identity.hex(), "reason": reason})
        self.send(identity, self.rfc.to_worker("DISCONNECT"))
        self.remove_worker(identity)

    def reply(self, client, service, body, final):
        self.send(client, self.rfc.to_client(service, body, final))
        if final:
            self.outstanding.discard(client)
            self.counts["replies"] += 1

    # -- input

    def on_message(self, frames):
        identity, frames = frames[0], frames[1:]
        if identity in self.invalid:
            emit({"event": "ignored", "peer": identity.hex(), "frames": len(frames)})
            return
        try:
            role, a, b = self.rfc.parse(frames)
        except Invalid as error:
            self.counts["invalid"] += 1
            emit({"event": "invalid", "peer": identity.hex(), "reason": str(error),
                  "frames_hex": [f.hex() for f in frames]})
            self.invalid.add(identity)
            self.forget_worker(identity)
            return
        if role == "client":
            self.on_request(identity, a, b)
        else:
            self.on_worker(identity, a, b)

    def on_request(self, client, service, body):
        if client in self.outstanding or client in self.workers:
            # MDP/Client is strictly synchronous: one request, then its reply.
            self.counts["invalid"] += 1
            emit({"event": "invalid", "peer": client.hex(),
                  "reason": "REQUEST while this client's previous request is unanswered"
                  if client in self.outstanding else "REQUEST from a registered worker",
                  "frames_hex": []})
            self.invalid.add(client)
            self.forget_worker(client)
            return
        self.counts["requests"] += 1
        self.outstanding.add(client)
        if self.mmi and service.startswith(b"mmi."):
            if service == b"mmi.service":
                served = any(w.service == body[-1] for w in self.workers.values())
                code = b"200" if served else b"404"
            else:
                code = b"501"
            self.reply(client, service, body[:-1] + [code], True)
            return
        self.queues.setdefault(service, []).append((client, body, time.monotonic()))
        self.dispatch(service)

    def on_worker(self, identity, command, rest):
        worker = self.workers.get(identity)
        if command == "DISCONNECT":
            self.remove_worker(identity)
            return
        if command == "READY":
            if worker is not None:
                self.disconnect(identity, "second READY")
            elif self.mmi and rest.startswith(b"mmi."):
                self.disconnect(identity, "READY for an mmi.* service")
            else:
                worker = Worker(identity, rest, time.monotonic() + self.heartbeat_s * self.liveness)
                self.workers[identity] = worker
                self.waiting.append(worker)
                emit({"event": "ready", "peer": identity.hex(), "service": rest.decode()})
                self.dispatch(rest)
            return
        if worker is None:
            self.disconnect(identity, "%s before READY" % command)
            return
        worker.expiry = time.monotonic() + self.heartbeat_s * self.liveness
        if command == "HEARTBEAT":
            return
        if command == "REQUEST":
            self.disconnect(identity, "REQUEST sent by a worker")
            return
        client, body = rest
        if worker.request is None or worker.request[0] != client:
            self.disconnect(identity, "%s for a client it holds no request of" % command)
            return
        final = command == "FINAL"
        self.reply(client, worker.service, body, final)
        if final:
            worker.request = None
            self.waiting.append(worker)
            self.dispatch(worker.service)

    # -- workers and queues

    def forget_worker(self, identity):
        """An invalid peer: no DISCONNECT, its request goes back to the queue."""
        self.remove_worker(identity)

    def remove_worker(self, identity):
        worker = self.workers.pop(identity, None)
        if worker is None:
            return
        if worker in self.waiting:
            self.waiting.remove(worker)
        if worker.request is not None:
            # Workers are idempotent (RFC 7/18): the request goes to another one.
            client, body = worker.request
            self.queues.setdefault(worker.service, []).insert(0, (client, body, time.monotonic()))
            self.dispatch(worker.service)

    def dispatch(self, service):
        queue = self.queues.get(service)
        while queue:
            worker = next((w for w in self.waiting if w.service == service), None)
            if worker is None:
                return
            client, body, _ = queue.pop(0)
            self.waiting.remove(worker)
            worker.request = (client, body)
            self.send(worker.identity, self.rfc.to_worker("REQUEST", client, b"", *body))

    def tick(self):
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.expiry < now:
                emit({"event": "expired", "what": "worker", "peer": worker.identity.hex()})
                self.remove_worker(worker.identity)
        for worker in self.waiting:
            self.send(worker.identity, self.rfc.to_worker("HEARTBEAT"))
        for service, queue in self.queues.items():
            while queue and queue[0][2] + self.expiry_s < now:
                client, _, _ = queue.pop(0)
                self.outstanding.discard(client)
                emit({"event": "expired", "what": "request", "service": service.decode()})

    def run(self):
        emit({"event": "listening", "endpoint": self.endpoint, "rfc": self.rfc.name,
              "mmi": self.mmi})
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        next_tick = time.monotonic() + self.heartbeat_s
        while not self.stopping:
            wait = max(0, next_tick - time.monotonic())
            if poller.poll(min(50, int(wait * 1000) + 1)):
                while True:
                    try:
                        frames = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.on_message(frames)
            if time.monotonic() >= next_tick:
                self.tick()
                next_tick = time.monotonic() + self.heartbeat_s
        self.sock.close(0)
        self.ctx.term()
        emit(dict(event="stopped", **self.counts))
        return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rfc", choices=["7", "18"], required=True)
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:0")
    parser.add_argument("--mmi", action="store_true", help="answer mmi.* (RFC 8)")
    parser.add_argument("--heartbeat-ms", type=int, default=2500)
    parser.add_argument("--liveness", type=int, default=3)
    parser.add_argument("--request-expiry-ms", type=int, default=30000)
    args = parser.parse_args()
    broker = Broker(args)

    def stop(_signum, _frame):
        broker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return broker.run()


if __name__ == "__main__":
    sys.exit(main())
