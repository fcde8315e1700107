/**
 * A macrotask yield that is far shorter than a timer tick (about 6 µs against
 * 1-2 ms for `setTimeout(0)` here), used to spin briefly before blocking.
 *
 * A MessagePort keeps the process alive, so the channel exists only while
 * sockets are open: {@link releaseYield} closes it when the last one closes.
 *
 * @module
 */

let channel: MessageChannel | undefined;
const waiting: Array<() => void> = [];

function open(): MessageChannel {
  const created = new MessageChannel();
  created.port1.onmessage = () => waiting.shift()?.();
  return created;
}

/** Resolves after the event loop has had one turn. */
export function yieldToEventLoop(): Promise<void> {
  channel ??= open();
  const port = channel.port2;
  return new Promise((resolve) => {
    waiting.push(resolve);
    port.postMessage(0);
  });
}

/** Closes the channel; pending yields resolve at once. */
export function releaseYield(): void {
  channel?.port1.close();
  channel?.port2.close();
  channel = undefined;
  for (const resolve of waiting.splice(0)) resolve();
}
