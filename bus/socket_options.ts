/**
 * What every bus socket (publisher, proxy, subscriber, capture) sets alike.
 *
 * @module
 */

/**
 * Bytes libzmq moves per system call on every bus connection (publishers,
 * proxy, subscribers), 8 times libzmq's 8 KiB. Measured (bench:bus, 3
 * alternating pairs): 1 KiB messages through a bus 1.6-2.0x faster, 16 B ones
 * unchanged. It costs 2 x 64 KiB of buffers per connection.
 */
export const BUS_BATCH_BYTES = 64 * 1024;
