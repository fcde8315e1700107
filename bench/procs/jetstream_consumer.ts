/**
 * Benchmark child: a JetStream push consumer that acks each message, then
 * answers its publisher over core NATS (the reply subject is in the message:
 * `[u8 length][subject][u32 id][payload]`, answered with `[u32 id][payload]`).
 * Args: server, stream, subject. Prints `READY` once the consumer exists.
 *
 * @module
 */
import { connect } from "@nats-io/transport-node";
import { serveUntilParentExits } from "./_child.ts";

const [servers, stream, subject] = Deno.args;
if (!servers || !stream || !subject) {
  throw new Error("usage: jetstream_consumer.ts <server> <stream> <subject>");
}
const nc = await connect({ servers, timeout: 2000 });
const deliver = `_bench.deliver.${crypto.randomUUID()}`;
const ACK = new TextEncoder().encode("+ACK");
const decoder = new TextDecoder();
nc.subscribe(deliver, {
  callback: (error, msg) => {
    if (error) return;
    const data = msg.data;
    const length = data[0]!;
    const reply = decoder.decode(data.subarray(1, 1 + length));
    if (msg.reply) nc.publish(msg.reply, ACK);
    nc.publish(reply, data.subarray(1 + length));
  },
});
await nc.flush();
const created = await nc.request(
  `$JS.API.CONSUMER.CREATE.${stream}`,
  JSON.stringify({
    stream_name: stream,
    config: {
      deliver_subject: deliver,
      ack_policy: "explicit",
      max_ack_pending: 10_000,
      filter_subject: subject,
      deliver_policy: "all",
    },
  }),
  { timeout: 5000 },
);
const answer = JSON.parse(decoder.decode(created.data));
if (answer.error) throw new Error(`consumer: ${JSON.stringify(answer.error)}`);
await serveUntilParentExits("READY", () => nc.close());
