/**
 * Hashing of the secrets the gateway keeps: passwords with argon2id (slow on
 * purpose, salted, PHC string form) and API key secrets with SHA-256 (they are
 * 256 random bits, so a fast hash cannot be brute-forced and lookups stay cheap).
 *
 * @module
 */
import { argon2id, argon2Verify } from "hash-wasm";
import { base64url } from "jose";

/** OWASP's second argon2id profile: 19 MiB, 2 passes, 1 lane. */
const ARGON2 = { memorySize: 19_456, iterations: 2, parallelism: 1, hashLength: 32 };

/** A PHC-format argon2id hash of `password` with a fresh salt. */
export function hashPassword(password: string): Promise<string> {
  return argon2id({
    password,
    salt: crypto.getRandomValues(new Uint8Array(16)),
    ...ARGON2,
    outputType: "encoded",
  });
}

/** Whether `password` matches a hash made by {@link hashPassword}. */
export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  try {
    return await argon2Verify({ password, hash });
  } catch {
    return false; // a malformed stored hash matches nothing
  }
}

/** `bytes` random bytes as base64url text. */
export function randomToken(bytes = 32): string {
  return base64url.encode(crypto.getRandomValues(new Uint8Array(bytes)));
}

/** Hex SHA-256 of a secret. */
export async function sha256Hex(secret: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(secret));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Compares two strings in time that depends only on their length. */
export function constantTimeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
