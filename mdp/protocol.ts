/**
 * Majordomo frames, pure: bytes to typed messages and back, for the three
 * dialects the broker speaks (plantd's word commands, RFC 7 MDP/0.1 and
 * RFC 18 MDP/0.2). No I/O here. Frame tables: plantd-wire.md (shared docs); extensions: README.
 *
 * @module
 */
import type { Frames } from "../transport/frames.ts";

/** Which Majordomo variant a peer speaks. */
export type Dialect = "plantd" | "mdp01" | "mdp02";

export const DIALECTS: readonly Dialect[] = ["plantd", "mdp01", "mdp02"];

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Encodes a string as a frame. */
export function frame(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Decodes a frame as UTF-8 text. */
export function text(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}

export const EMPTY: Uint8Array = new Uint8Array(0);
const MDPC01 = frame("MDPC01");
const MDPC02 = frame("MDPC02");
const MDPW01 = frame("MDPW01");
const MDPW02 = frame("MDPW02");

/** Worker commands, by name, as each dialect encodes them. */
export type WorkerCommand = "READY" | "REQUEST" | "PARTIAL" | "FINAL" | "HEARTBEAT" | "DISCONNECT";

const WORKER_BYTES: Record<"mdp01" | "mdp02", Partial<Record<WorkerCommand, number>>> = {
  // RFC 7 has one REPLY (0x03): it is read and written as FINAL.
  mdp01: { READY: 1, REQUEST: 2, FINAL: 3, HEARTBEAT: 4, DISCONNECT: 5 },
  mdp02: { READY: 1, REQUEST: 2, PARTIAL: 3, FINAL: 4, HEARTBEAT: 5, DISCONNECT: 6 },
};
const CLIENT_BYTES = { REQUEST: 1, PARTIAL: 2, FINAL: 3 } as const;
const REQUEST_WORD = frame("REQUEST");
const REQUEST_BYTE = Uint8Array.of(CLIENT_BYTES.REQUEST);

/** Service names are few and sent often: encode each once (bounded cache). */
const serviceFrames = new Map<string, Uint8Array>();
function serviceFrame(service: string): Uint8Array {
  let encoded = serviceFrames.get(service);
  if (!encoded) {
    encoded = frame(service);
    if (serviceFrames.size < 1024) serviceFrames.set(service, encoded);
  }
  return encoded;
}
const WORKER_WORDS = new Set<string>([
  "READY",
  "REQUEST",
  "PARTIAL",
  "FINAL",
  "HEARTBEAT",
  "DISCONNECT",
]);

/** Largest capacity a worker may announce in READY. */
export const MAX_CAPACITY = 4096;

/** Longest envelope stack (frames before the empty delimiter) the broker accepts. */
export const MAX_STACK = 8;

/** A message a peer sent to the broker, after the ROUTER identity frame. */
export type PeerMessage =
  | {
    kind: "request";
    dialect: Dialect;
    /** Return path frames a client put before the empty delimiter (request ids). */
    stack: Frames;
    service: string;
    body: Frames;
  }
  | {
    kind: "ready";
    dialect: Dialect;
    service: string;
    /**
     * Extension: requests the worker takes at once, from an optional frame
     * after the service name (decimal). Plain MDP workers send none: 1.
     */
    capacity?: number;
  }
  | { kind: "heartbeat"; dialect: Dialect }
  | { kind: "disconnect"; dialect: Dialect }
  | { kind: "reply"; dialect: Dialect; final: boolean; client: Uint8Array; body: Frames };

/** Why a message could not be read; the broker drops it and counts the reason. */
export interface Malformed {
  kind: "malformed";
  reason: string;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function headerOf(f: Uint8Array | undefined): "C01" | "C02" | "W01" | "W02" | undefined {
  if (!f || f.length !== 6) return undefined;
  if (equalBytes(f, MDPC02)) return "C02";
  if (equalBytes(f, MDPW02)) return "W02";
  if (equalBytes(f, MDPC01)) return "C01";
  if (equalBytes(f, MDPW01)) return "W01";
  return undefined;
}

function malformed(reason: string): Malformed {
  return { kind: "malformed", reason };
}

/**
 * Where the header is: first, or after an envelope stack and its empty
 * delimiter (`id… | "" | header …`; a lone leading `""` is an empty stack).
 */
function splitEnvelope(frames: Frames): { stack: Frames; at: number } | undefined {
  if (headerOf(frames[0]) !== undefined) return { stack: [], at: 0 };
  const delimiter = frames.findIndex((f) => f.length === 0);
  if (delimiter < 0 || delimiter > MAX_STACK) return undefined;
  return { stack: frames.slice(0, delimiter), at: delimiter + 1 };
}

/**
 * Reads a message that arrived on the broker's ROUTER socket, identity frame
 * removed. Accepts an optional leading empty frame in every dialect, and for
 * clients an envelope stack (`id… | "" | header …`) as ROUTER chains produce.
 */
export function decodePeerMessage(frames: Frames): PeerMessage | Malformed {
  if (frames.length === 0) return malformed("empty message");
  const envelope = splitEnvelope(frames);
  if (!envelope) return malformed("unknown header");
  const { stack, at } = envelope;
  const header = headerOf(frames[at]);
  if (header === undefined) return malformed("unknown header");
  const rest = frames.slice(at + 1);
  if (header === "C01" || header === "C02") return decodeClient(header, stack, rest);
  if (stack.length > 0) return malformed("worker message with an envelope stack");
  return decodeWorker(header, rest);
}

function decodeClient(header: "C01" | "C02", stack: Frames, rest: Frames): PeerMessage | Malformed {
  let dialect: Dialect = "mdp01";
  if (header === "C02") {
    const command = rest.shift();
    if (!command) return malformed("missing client command");
    if (command.length === 1 && command[0] === CLIENT_BYTES.REQUEST) dialect = "mdp02";
    else if (text(command) === "REQUEST") dialect = "plantd";
    else return malformed("unknown client command");
  }
  const service = rest.shift();
  if (!service || service.length === 0) return malformed("missing service name");
  return { kind: "request", dialect, stack, service: text(service), body: rest };
}

function decodeWorker(header: "W01" | "W02", rest: Frames): PeerMessage | Malformed {
  const commandFrame = rest.shift();
  if (!commandFrame || commandFrame.length === 0) return malformed("missing worker command");
  let dialect: Dialect;
  let command: WorkerCommand | undefined;
  if (header === "W01") {
    dialect = "mdp01";
    command = commandOfByte("mdp01", commandFrame);
  } else if (commandFrame.length === 1) {
    dialect = "mdp02";
    command = commandOfByte("mdp02", commandFrame);
  } else {
    dialect = "plantd";
    const word = text(commandFrame);
    command = WORKER_WORDS.has(word) ? word as WorkerCommand : undefined;
  }
  switch (command) {
    case "READY": {
      const service = rest[0];
      if (!service || service.length === 0) return malformed("READY without a service name");
      if (rest.length < 2) return { kind: "ready", dialect, service: text(service) };
      const capacity = Number(text(rest[1]!));
      if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_CAPACITY) {
        return malformed("READY with a bad capacity");
      }
      return { kind: "ready", dialect, service: text(service), capacity };
    }
    case "HEARTBEAT":
      return { kind: "heartbeat", dialect };
    case "DISCONNECT":
      return { kind: "disconnect", dialect };
    case "PARTIAL":
    case "FINAL": {
      const client = rest.shift();
      if (!client || client.length === 0) return malformed("reply without a client address");
      if (rest[0]?.length === 0) rest.shift();
      return { kind: "reply", dialect, final: command === "FINAL", client, body: rest };
    }
    default:
      return malformed("unknown worker command");
  }
}

function commandOfByte(dialect: "mdp01" | "mdp02", f: Uint8Array): WorkerCommand | undefined {
  if (f.length !== 1) return undefined;
  const table = WORKER_BYTES[dialect];
  for (const [name, byte] of Object.entries(table)) if (byte === f[0]) return name as WorkerCommand;
  return undefined;
}

function workerCommandFrame(dialect: Dialect, command: WorkerCommand): Uint8Array {
  if (dialect === "plantd") return frame(command);
  const byte = WORKER_BYTES[dialect][command];
  if (byte === undefined) throw new RangeError(`Command '${command}' does not exist in ${dialect}`);
  return Uint8Array.of(byte);
}

function workerHeader(dialect: Dialect): Uint8Array {
  return dialect === "mdp01" ? MDPW01 : MDPW02;
}

// ---------------------------------------------------------------- broker -> peers

/** Broker to client: a reply, in the client's dialect, after the identity frame. */
export function encodeClientReply(
  dialect: Dialect,
  stack: Frames,
  final: boolean,
  service: string | Uint8Array,
  body: Frames,
): Frames {
  const serviceFrame = typeof service === "string" ? frame(service) : service;
  // RFC 7 REQ peers need the delimiter; stacked clients need it to find the header.
  const prefix = stack.length > 0 || dialect === "mdp01" ? [...stack, EMPTY] : [];
  if (dialect === "mdp01") return [...prefix, MDPC01, serviceFrame, ...body];
  const command = dialect === "plantd"
    ? frame(final ? "FINAL" : "PARTIAL")
    : Uint8Array.of(final ? CLIENT_BYTES.FINAL : CLIENT_BYTES.PARTIAL);
  return [...prefix, MDPC02, command, serviceFrame, ...body];
}

/** Broker to worker: a request for `client`. */
export function encodeWorkerRequest(dialect: Dialect, client: Uint8Array, body: Frames): Frames {
  const head = [workerHeader(dialect), workerCommandFrame(dialect, "REQUEST"), client, EMPTY];
  return dialect === "mdp01" ? [EMPTY, ...head, ...body] : [...head, ...body];
}

/** Broker to worker: HEARTBEAT or DISCONNECT. */
export function encodeWorkerControl(dialect: Dialect, command: "HEARTBEAT" | "DISCONNECT"): Frames {
  const head = [workerHeader(dialect), workerCommandFrame(dialect, command)];
  return dialect === "mdp01" ? [EMPTY, ...head] : head;
}

// ---------------------------------------------------------------- peers -> broker

/** Client to broker. `stack` carries request ids for clients that multiplex. */
export function encodeClientRequest(
  dialect: Dialect,
  service: string,
  body: Frames,
  stack: Frames = [],
): Frames {
  const lead = stack.length > 0 || dialect !== "mdp02" ? [...stack, EMPTY] : [];
  if (dialect === "mdp01") return [...lead, MDPC01, frame(service), ...body];
  const command = dialect === "plantd" ? REQUEST_WORD : REQUEST_BYTE;
  return [...lead, MDPC02, command, serviceFrame(service), ...body];
}

/** A reply as a client reads it. */
export interface ClientReply {
  kind: "reply";
  stack: Frames;
  final: boolean;
  service: string;
  body: Frames;
}

/** Reads a broker reply on a client's DEALER socket. */
export function decodeClientReply(frames: Frames): ClientReply | Malformed {
  const envelope = splitEnvelope(frames);
  if (!envelope) return malformed("unknown header");
  const { stack, at } = envelope;
  const header = headerOf(frames[at]);
  if (header === "C01") {
    const service = frames[at + 1];
    if (!service) return malformed("missing service name");
    return {
      kind: "reply",
      stack,
      final: true,
      service: text(service),
      body: frames.slice(at + 2),
    };
  }
  if (header !== "C02") return malformed("unknown header");
  const command = frames[at + 1];
  const service = frames[at + 2];
  if (!command || !service) return malformed("short reply");
  let final: boolean;
  if (command.length === 1) {
    if (command[0] !== CLIENT_BYTES.PARTIAL && command[0] !== CLIENT_BYTES.FINAL) {
      return malformed("unknown reply command");
    }
    final = command[0] === CLIENT_BYTES.FINAL;
  } else {
    const word = text(command);
    if (word !== "PARTIAL" && word !== "FINAL") return malformed("unknown reply command");
    final = word === "FINAL";
  }
  return { kind: "reply", stack, final, service: text(service), body: frames.slice(at + 3) };
}

/** Worker to broker: READY, HEARTBEAT or DISCONNECT. */
export function encodeWorkerSignal(
  dialect: Dialect,
  command: "READY" | "HEARTBEAT" | "DISCONNECT",
  service?: string,
  capacity = 1,
): Frames {
  const head = [workerHeader(dialect), workerCommandFrame(dialect, command)];
  if (command === "READY") {
    head.push(frame(service ?? ""));
    // Only a worker that takes several requests at once says so: plain MDP otherwise.
    if (capacity > 1) head.push(frame(String(capacity)));
  }
  return dialect === "mdp02" ? head : [EMPTY, ...head];
}

/** Worker to broker: a PARTIAL or FINAL reply for `client`. */
export function encodeWorkerReply(
  dialect: Dialect,
  final: boolean,
  client: Uint8Array,
  body: Frames,
): Frames {
  if (!final && dialect === "mdp01") {
    throw new RangeError("MDP/0.1 has no partial replies");
  }
  const head = [workerHeader(dialect), workerCommandFrame(dialect, final ? "FINAL" : "PARTIAL")];
  if (dialect === "plantd") return [EMPTY, ...head, client, ...body];
  const message = [...head, client, EMPTY, ...body];
  return dialect === "mdp01" ? [EMPTY, ...message] : message;
}

/** What a worker reads from the broker. */
export type BrokerToWorker =
  | { kind: "request"; client: Uint8Array; body: Frames }
  | { kind: "heartbeat" }
  | { kind: "disconnect" };

/** Reads a message on a worker's DEALER socket. */
export function decodeBrokerToWorker(frames: Frames): BrokerToWorker | Malformed {
  const at = frames[0]?.length === 0 ? 1 : 0;
  const header = headerOf(frames[at]);
  if (header !== "W01" && header !== "W02") return malformed("unknown header");
  const commandFrame = frames[at + 1];
  if (!commandFrame) return malformed("missing worker command");
  const command = commandFrame.length === 1
    ? commandOfByte(header === "W01" ? "mdp01" : "mdp02", commandFrame)
    : text(commandFrame);
  if (command === "HEARTBEAT") return { kind: "heartbeat" };
  if (command === "DISCONNECT") return { kind: "disconnect" };
  if (command !== "REQUEST") return malformed("unknown worker command");
  const client = frames[at + 2];
  if (!client) return malformed("request without a client address");
  const bodyAt = frames[at + 3]?.length === 0 ? at + 4 : at + 3;
  return { kind: "request", client, body: frames.slice(bodyAt) };
}
