/**
 * What every bus socket (publisher, proxy, subscriber, capture) sets alike.
 *
 * @module
 */

/**
 * Bytes libzmq moves per system call on every bus connection (publishers,
 * proxy, subscribers), 8 times libzmq's 8 KiB: with it `bench:bus` moved 1 KiB
 * messages through a bus markedly faster and 16 B ones at the same rate. It
 * costs two such buffers per connection.
 */
export const BUS_BATCH_BYTES = 64 * 1024;
