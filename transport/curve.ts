/**
 * CURVE keys (RFC 26, CurveZMQ) as libzmq takes them: 32-byte Curve25519 keys
 * written as 40 characters of Z85 (RFC 32). Key pairs are made by libzmq's own
 * `zmq_curve_keypair` (libsodium/tweetnacl inside zeromq.js's addon); a public
 * key is derived from a secret one with `zmq_curve_public`.
 *
 * @module
 */
import { cString, lastErrno, libzmq, ZmqError } from "./libzmq.ts";

/** The 85 characters of Z85, in value order. */
const Z85_CHARS =
  "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

const Z85_VALUES = new Map([...Z85_CHARS].map((c, i) => [c, i]));

/** A CURVE key in Z85: exactly 40 characters of the Z85 alphabet. */
export const Z85_KEY_PATTERN = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;

/** A key pair, both halves in Z85. */
export interface CurveKeyPair {
  publicKey: string;
  secretKey: string;
}

/**
 * The server side of CURVE on a listening socket: its secret key (its public
 * key is derived) and the client public keys it accepts.
 */
export interface CurveServerKeys {
  secretKey: string;
  /**
   * Client public keys (Z85) allowed to connect. Empty or absent: any client
   * that completes a CURVE handshake with this server's public key is
   * accepted (encryption without client authentication).
   */
  allowedKeys?: readonly string[];
}

/**
 * The client side of CURVE: the server's public key and this client's key
 * pair. Without `secretKey` a fresh key pair is made for the socket (enough
 * for a server that accepts any client key).
 */
export interface CurveClientKeys {
  serverKey: string;
  /** Derived from `secretKey` when absent. */
  publicKey?: string;
  secretKey?: string;
}

/** Raised for a key that is not 40 characters of Z85. */
export class CurveKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CurveKeyError";
  }
}

/** Z85-encodes bytes whose length is a multiple of 4. */
export function z85Encode(bytes: Uint8Array): string {
  if (bytes.length % 4 !== 0) throw new RangeError("Z85 encodes multiples of 4 bytes");
  let out = "";
  for (let i = 0; i < bytes.length; i += 4) {
    let value = ((bytes[i]! << 24) | (bytes[i + 1]! << 16) | (bytes[i + 2]! << 8) |
      bytes[i + 3]!) >>> 0;
    const chunk = new Array<string>(5);
    for (let j = 4; j >= 0; j--) {
      chunk[j] = Z85_CHARS[value % 85]!;
      value = Math.floor(value / 85);
    }
    out += chunk.join("");
  }
  return out;
}

/** Decodes Z85 text whose length is a multiple of 5; throws on a bad character. */
export function z85Decode(text: string): Uint8Array {
  if (text.length % 5 !== 0) throw new CurveKeyError("Z85 text length must be a multiple of 5");
  const out = new Uint8Array((text.length / 5) * 4);
  for (let i = 0, o = 0; i < text.length; i += 5, o += 4) {
    let value = 0;
    for (let j = 0; j < 5; j++) {
      const digit = Z85_VALUES.get(text[i + j]!);
      if (digit === undefined) throw new CurveKeyError(`not a Z85 character: '${text[i + j]}'`);
      value = value * 85 + digit;
    }
    if (value > 0xffffffff) throw new CurveKeyError("Z85 group out of range");
    out[o] = value >>> 24;
    out[o + 1] = (value >>> 16) & 0xff;
    out[o + 2] = (value >>> 8) & 0xff;
    out[o + 3] = value & 0xff;
  }
  return out;
}

/** Throws a {@link CurveKeyError} naming `what` unless `key` is a 40-character Z85 key. */
export function checkKey(key: string, what = "CURVE key"): string {
  if (!Z85_KEY_PATTERN.test(key)) {
    throw new CurveKeyError(`${what}: expected 40 characters of Z85, got ${key.length}`);
  }
  z85Decode(key); // rejects the few 40-character texts whose groups overflow 32 bits
  return key;
}

/** Whether this libzmq was built with CURVE (zeromq.js's is). */
export function curveAvailable(): boolean {
  return libzmq().zmq_has(cString("curve")) === 1;
}

function requireCurve(): void {
  if (!curveAvailable()) {
    throw new Error('this libzmq has no CURVE support (zmq_has("curve") is 0)');
  }
}

const decoder = new TextDecoder();

function z85Text(buffer: Uint8Array): string {
  return decoder.decode(buffer.subarray(0, 40));
}

/** A new key pair from libzmq. */
export function curveKeyPair(): CurveKeyPair {
  requireCurve();
  const publicKey = new Uint8Array(41);
  const secretKey = new Uint8Array(41);
  if (libzmq().zmq_curve_keypair(publicKey, secretKey) !== 0) {
    throw new ZmqError("zmq_curve_keypair", lastErrno());
  }
  return { publicKey: z85Text(publicKey), secretKey: z85Text(secretKey) };
}

/** The public key of a secret key. */
export function curvePublicKey(secretKey: string): string {
  requireCurve();
  checkKey(secretKey, "CURVE secret key");
  const publicKey = new Uint8Array(41);
  if (libzmq().zmq_curve_public(publicKey, cString(secretKey)) !== 0) {
    throw new ZmqError("zmq_curve_public", lastErrno());
  }
  return z85Text(publicKey);
}
