/**
 * What a caller of a socket's waiting `send` may add: a way to withdraw the
 * message while it still waits (it is then never sent), and a hook run just
 * before each attempt to hand it over (to refresh a time-relative frame).
 *
 * @module
 */

/** Options of a waiting send. */
export interface SendOptions {
  /** Aborted before the socket took the message: it is dropped, and send rejects with the reason. */
  signal?: AbortSignal;
  /** Called before each attempt; it may abort `signal` to give up. */
  beforeTry?: () => void;
}
