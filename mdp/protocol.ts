/**
 * Majordomo frames, pure: bytes to typed messages and back, for the three
 * dialects the broker speaks (plantd's word commands, RFC 7 MDP/0.1 and
 * RFC 18 MDP/0.2). No I/O here. Frame tables: plantd-wire.md (shared docs); extensions: README.
 *
 * @module
 */
import { type Frames, readUint32, writeUint32 } from "../transport/frames.ts";

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
const FINAL_WORD = frame("FINAL");
const PARTIAL_WORD = frame("PARTIAL");
const FINAL_BYTE = Uint8Array.of(CLIENT_BYTES.FINAL);
const PARTIAL_BYTE = Uint8Array.of(CLIENT_BYTES.PARTIAL);

/** Worker command frames, encoded once: plantd words, RFC 7 and RFC 18 bytes. */
const WORKER_FRAMES: Record<Dialect, Partial<Record<WorkerCommand, Uint8Array>>> = {
  plantd: {},
  mdp01: {},
  mdp02: {},
};
/** Worker commands by byte value, per byte dialect. */
const WORKER_BY_BYTE: Record<"mdp01" | "mdp02", Array<WorkerCommand | undefined>> = {
  mdp01: [],
  mdp02: [],
};
for (const dialect of ["mdp01", "mdp02"] as const) {
  for (const [name, byte] of Object.entries(WORKER_BYTES[dialect])) {
    WORKER_FRAMES[dialect][name as WorkerCommand] = Uint8Array.of(byte);
    WORKER_BY_BYTE[dialect][byte] = name as WorkerCommand;
  }
}

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
const WORKER_WORD_FRAMES: Array<[WorkerCommand, Uint8Array]> = [];
for (const word of WORKER_WORDS) {
  const encoded = frame(word);
  WORKER_FRAMES.plantd[word as WorkerCommand] = encoded;
  WORKER_WORD_FRAMES.push([word as WorkerCommand, encoded]);
}

/** The plantd word command in `f`, compared as bytes; undefined when none matches exactly. */
function wordCommand(f: Uint8Array): WorkerCommand | undefined {
  for (const [name, encoded] of WORKER_WORD_FRAMES) if (equalBytes(f, encoded)) return name;
  return undefined;
}

/**
 * Recently decoded short frames (service names, mostly): a frame equal to one
 * of them gets the same string without a UTF-8 decode. Small and fixed: a
 * linear scan of a few byte comparisons.
 */
const TEXT_CACHE_SIZE = 8;
const TEXT_CACHE_MAX_BYTES = 256;
const textCacheBytes: Uint8Array[] = [];
const textCacheText: string[] = [];
let textCacheNext = 0;

/** {@link text}, through the small cache of recent frames. */
export function cachedText(bytes: Uint8Array): string {
  if (bytes.length > TEXT_CACHE_MAX_BYTES) return text(bytes);
  for (let i = 0; i < textCacheBytes.length; i++) {
    if (equalBytes(textCacheBytes[i]!, bytes)) return textCacheText[i]!;
  }
  const decoded = text(bytes);
  textCacheBytes[textCacheNext] = bytes.slice();
  textCacheText[textCacheNext] = decoded;
  textCacheNext = (textCacheNext + 1) % TEXT_CACHE_SIZE;
  return decoded;
}

/** Largest capacity a worker may announce in READY. */
export const MAX_CAPACITY = 4096;

/** Longest envelope stack (frames before the empty delimiter) the broker accepts. */
export const MAX_STACK = 8;

/**
 * Extension: a client's request deadline, as the last envelope frame before
 * the empty delimiter: 8 bytes, the marker `ff 64 6c 01` ("dl", version 1)
 * then the milliseconds the caller still waits (big-endian u32), stamped
 * when the message is handed to a live connection. Relative, not a time of
 * day: the broker's clock need not agree with the client's. Our broker takes
 * the frame off the stack (workers and replies never see it) and drops the
 * request unanswered once that budget has passed; a broker that does not
 * know it returns it with the stack like any other frame, which the client
 * ignores.
 */
export const DEADLINE_FRAME_BYTES = 8;
const DEADLINE_MARKER = [0xff, 0x64, 0x6c, 0x01] as const;

/** A deadline frame with `budgetMs` (see {@link DEADLINE_FRAME_BYTES}). */
export function deadlineFrame(budgetMs: number): Uint8Array {
  const out = new Uint8Array(DEADLINE_FRAME_BYTES);
  out.set(DEADLINE_MARKER);
  writeBudget(out, budgetMs);
  return out;
}

/** Re-stamps a frame made by {@link deadlineFrame} (clamped to 1 ms .. 2^32 - 1 ms). */
export function writeBudget(deadline: Uint8Array, budgetMs: number): void {
  writeUint32(deadline, 4, Math.min(0xffffffff, Math.max(1, Math.ceil(budgetMs))));
}

/** The budget in a deadline frame; undefined when `f` is not one. */
export function readDeadline(f: Uint8Array): number | undefined {
  if (f.length !== DEADLINE_FRAME_BYTES) return undefined;
  for (let i = 0; i < DEADLINE_MARKER.length; i++) {
    if (f[i] !== DEADLINE_MARKER[i]) return undefined;
  }
  return readUint32(f, 4);
}

/** A message a peer sent to the broker, after the ROUTER identity frame. */
export type PeerMessage =
  | {
    kind: "request";
    dialect: Dialect;
    /** Return path frames a client put before the empty delimiter (request ids). */
    stack: Frames;
    service: string;
    body: Frames;
    /** Milliseconds the caller still waits, from a deadline frame (taken off `stack`). */
    budgetMs?: number;
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
    /**
     * RFC 18 commands after a leading empty frame (RFC 18 has none, plantd
     * and RFC 7 framing one): the worker gets one in front of what it is sent.
     */
    emptyFirst?: true;
  }
  | { kind: "heartbeat"; dialect: Dialect }
  | { kind: "disconnect"; dialect: Dialect }
  | { kind: "reply"; dialect: Dialect; final: boolean; client: Uint8Array; body: Frames };

/** Why a message could not be read; the broker drops it and counts the reason. */
export interface Malformed {
  kind: "malformed";
  /** A short fixed phrase (a metric label): never peer data. */
  reason: string;
  /** What exactly was wrong, for the log (may quote the peer's bytes). */
  detail?: string;
  /** The sender reads as a worker of this dialect: it can be told DISCONNECT. */
  worker?: Dialect;
  /** The sender reads as a client that can be answered with an error, in its own dialect. */
  client?: { dialect: Dialect; stack: Frames; service: Uint8Array };
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

function malformed(reason: string, more: Omit<Malformed, "kind" | "reason"> = {}): Malformed {
  return { kind: "malformed", reason, ...more };
}

/** A frame for the log: text when printable ASCII, else hex. */
function shown(f: Uint8Array): string {
  const printable = f.length > 0 && f.length <= 32 && f.every((b) => b >= 0x20 && b < 0x7f);
  if (printable) return JSON.stringify(text(f));
  return "0x" + Array.from(f.subarray(0, 32), (b) => b.toString(16).padStart(2, "0")).join("") +
    (f.length > 32 ? "…" : "");
}

/**
 * `"" | "" | … | MDPWxx | command …`: a worker message after two or more
 * empty frames. No dialect has that shape (RFC 18 has no leading empty frame,
 * plantd and RFC 7 one), so the worker would not parse what the broker sends
 * back; read its dialect so it can be refused in it.
 */
function extraEmptyWorker(frames: Frames, start: number): Malformed | undefined {
  let at = start;
  const end = Math.min(frames.length, start + MAX_STACK + 1);
  while (at < end && frames[at]!.length === 0) at++;
  if (at - start < 2) return undefined;
  const header = headerOf(frames[at]);
  if (header !== "W01" && header !== "W02") return undefined;
  const decoded = decodeWorker(header, frames, at + 1);
  if (decoded.kind === "malformed") return undefined;
  return malformed("worker message with extra empty frames", {
    detail: `${at - start} empty frames before ${
      text(frames[at]!)
    } (RFC 18 workers send none, plantd and RFC 7 workers one)`,
    worker: decoded.dialect,
  });
}

/**
 * Where the header is, from `start`: first, or after an envelope stack and
 * its empty delimiter (`id… | "" | header …`; a lone leading `""` is an empty
 * stack). Returns the header's index, or -1.
 */
function headerIndex(frames: Frames, start: number): number {
  if (headerOf(frames[start]) !== undefined) return start;
  const end = Math.min(frames.length, start + MAX_STACK + 1);
  for (let i = start; i < end; i++) if (frames[i]!.length === 0) return i + 1;
  return -1;
}

/** The stack frames before the header at `at` (none when the header comes first). */
function stackOf(frames: Frames, start: number, at: number): Frames {
  return at === start ? [] : frames.slice(start, at - 1);
}

/**
 * Reads a message that arrived on the broker's ROUTER socket, from frame
 * `start` on (1 skips the ROUTER identity frame; the default 0 expects it
 * removed). Accepts an optional leading empty frame in every dialect, and for
 * clients an envelope stack (`id… | "" | header …`) as ROUTER chains produce.
 */
export function decodePeerMessage(frames: Frames, start = 0): PeerMessage | Malformed {
  if (frames.length <= start) return malformed("empty message");
  const at = headerIndex(frames, start);
  const header = at < 0 ? undefined : headerOf(frames[at]);
  if (header === undefined) {
    return extraEmptyWorker(frames, start) ??
      malformed("unknown header", {
        detail: `no MDPC01/MDPC02/MDPW01/MDPW02 header; frame ${Math.max(at, start) - start} is ${
          shown(frames[Math.max(at, start)] ?? EMPTY)
        }`,
      });
  }
  if (header === "C01" || header === "C02") {
    return decodeClient(header, stackOf(frames, start, at), frames, at + 1);
  }
  if (at !== start && at - 1 > start) return malformed("worker message with an envelope stack");
  const decoded = decodeWorker(header, frames, at + 1);
  // Such a worker reads what it is sent as it framed its READY: mirrored, it parses either way.
  if (decoded.kind === "ready" && decoded.dialect === "mdp02" && at !== start) {
    return { ...decoded, emptyFirst: true };
  }
  return decoded;
}

function decodeClient(
  header: "C01" | "C02",
  stack: Frames,
  frames: Frames,
  at: number,
): PeerMessage | Malformed {
  let dialect: Dialect = "mdp01";
  if (header === "C02") {
    const command = frames[at++];
    if (!command) return malformed("missing client command");
    if (command.length === 1 && command[0] === CLIENT_BYTES.REQUEST) dialect = "mdp02";
    else if (equalBytes(command, REQUEST_WORD) || text(command) === "REQUEST") dialect = "plantd";
    else return unknownClientCommand(stack, command, frames[at]);
  }
  const service = frames[at++];
  if (!service || service.length === 0) return malformed("missing service name");
  const last = stack[stack.length - 1];
  const budgetMs = last === undefined ? undefined : readDeadline(last);
  if (budgetMs !== undefined) {
    return {
      kind: "request",
      dialect,
      stack: stack.slice(0, -1),
      service: cachedText(service),
      body: frames.slice(at),
      budgetMs,
    };
  }
  return {
    kind: "request",
    dialect,
    stack,
    service: cachedText(service),
    body: frames.slice(at),
  };
}

/**
 * A client frame 2 that is not REQUEST (0x02, a worker's REQUEST code, is the
 * usual mistake). With a service name the client can be answered: a one-byte
 * command marks RFC 18, a word plantd.
 */
function unknownClientCommand(
  stack: Frames,
  command: Uint8Array,
  service: Uint8Array | undefined,
): Malformed {
  const dialect: Dialect = command.length === 1 ? "mdp02" : "plantd";
  const expected = dialect === "mdp02" ? "0x01" : '"REQUEST"';
  return malformed("unknown client command", {
    detail: `client command ${shown(command)} is not REQUEST (${expected})`,
    ...(service && service.length > 0 ? { client: { dialect, stack, service } } : {}),
  });
}

function decodeWorker(header: "W01" | "W02", frames: Frames, at: number): PeerMessage | Malformed {
  const commandFrame = frames[at++];
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
    command = wordCommand(commandFrame);
    if (command === undefined) {
      const word = text(commandFrame);
      command = WORKER_WORDS.has(word) ? word as WorkerCommand : undefined;
    }
  }
  switch (command) {
    case "READY": {
      const rest = frames.slice(at);
      const service = rest[0];
      // A worker refused here would wait for requests forever: it is told DISCONNECT.
      if (!service || service.length === 0) {
        return malformed("READY without a service name", { worker: dialect });
      }
      if (rest.length < 2) return { kind: "ready", dialect, service: text(service) };
      const capacity = Number(text(rest[1]!));
      if (!Number.isInteger(capacity) || capacity < 1 || capacity > MAX_CAPACITY) {
        return malformed("READY with a bad capacity", {
          detail: `capacity ${shown(rest[1]!)}, not an integer from 1 to ${MAX_CAPACITY}`,
          worker: dialect,
        });
      }
      return { kind: "ready", dialect, service: text(service), capacity };
    }
    case "HEARTBEAT":
      return { kind: "heartbeat", dialect };
    case "DISCONNECT":
      return { kind: "disconnect", dialect };
    case "PARTIAL":
    case "FINAL": {
      const client = frames[at++];
      if (!client || client.length === 0) return malformed("reply without a client address");
      if (frames[at]?.length === 0) at++;
      return {
        kind: "reply",
        dialect,
        final: command === "FINAL",
        client,
        body: frames.slice(at),
      };
    }
    default:
      return malformed("unknown worker command");
  }
}

function commandOfByte(dialect: "mdp01" | "mdp02", f: Uint8Array): WorkerCommand | undefined {
  if (f.length !== 1) return undefined;
  return WORKER_BY_BYTE[dialect][f[0]!];
}

function workerCommandFrame(dialect: Dialect, command: WorkerCommand): Uint8Array {
  const encoded = WORKER_FRAMES[dialect][command];
  if (encoded === undefined) {
    throw new RangeError(`Command '${command}' does not exist in ${dialect}`);
  }
  return encoded;
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
  const name = typeof service === "string" ? serviceFrame(service) : service;
  const out: Frames = [];
  // RFC 7 REQ peers need the delimiter; stacked clients need it to find the header.
  if (stack.length > 0 || dialect === "mdp01") {
    for (const f of stack) out.push(f);
    out.push(EMPTY);
  }
  if (dialect === "mdp01") {
    out.push(MDPC01, name);
  } else {
    const command = dialect === "plantd"
      ? (final ? FINAL_WORD : PARTIAL_WORD)
      : (final ? FINAL_BYTE : PARTIAL_BYTE);
    out.push(MDPC02, command, name);
  }
  for (const f of body) out.push(f);
  return out;
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
  const out: Frames = [];
  if (stack.length > 0 || dialect !== "mdp02") {
    for (const f of stack) out.push(f);
    out.push(EMPTY);
  }
  if (dialect === "mdp01") out.push(MDPC01, serviceFrame(service));
  else out.push(MDPC02, dialect === "plantd" ? REQUEST_WORD : REQUEST_BYTE, serviceFrame(service));
  for (const f of body) out.push(f);
  return out;
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
  const at = headerIndex(frames, 0);
  if (at < 0) return malformed("unknown header");
  const stack = stackOf(frames, 0, at);
  const header = headerOf(frames[at]);
  if (header === "C01") {
    const service = frames[at + 1];
    if (!service) return malformed("missing service name");
    return {
      kind: "reply",
      stack,
      final: true,
      service: cachedText(service),
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
  } else if (equalBytes(command, FINAL_WORD)) {
    final = true;
  } else if (equalBytes(command, PARTIAL_WORD)) {
    final = false;
  } else {
    const word = text(command);
    if (word !== "PARTIAL" && word !== "FINAL") return malformed("unknown reply command");
    final = word === "FINAL";
  }
  return { kind: "reply", stack, final, service: cachedText(service), body: frames.slice(at + 3) };
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
  if (dialect === "plantd") {
    // plantd sends no "" after client-id, and brokers (Go's and ours) drop one
    // if present: a body that starts with "" gets one in front so it survives.
    return body[0]?.length === 0
      ? [EMPTY, ...head, client, EMPTY, ...body]
      : [EMPTY, ...head, client, ...body];
  }
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
    : wordCommand(commandFrame) ?? text(commandFrame);
  if (command === "HEARTBEAT") return { kind: "heartbeat" };
  if (command === "DISCONNECT") return { kind: "disconnect" };
  if (command !== "REQUEST") return malformed("unknown worker command");
  const client = frames[at + 2];
  if (!client) return malformed("request without a client address");
  const bodyAt = frames[at + 3]?.length === 0 ? at + 4 : at + 3;
  return { kind: "request", client, body: frames.slice(bodyAt) };
}
