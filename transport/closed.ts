/**
 * The one error every socket of transport/ raises once it is closed, whatever
 * implements it (libzmq or the TypeScript ZMTP sockets), so code above
 * transport/ catches one class.
 *
 * @module
 */

/** Raised by an operation on a socket after it was closed. */
export class SocketClosedError extends Error {
  constructor(message = "socket closed") {
    super(message);
    this.name = "SocketClosedError";
  }
}
