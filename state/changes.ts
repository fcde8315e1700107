/**
 * How committed changes leave the state service: published on the state bus
 * with envelope = scope name and a JSON payload
 * `{op, scope, key, value, revision, timestamp}`.
 *
 * @module
 */
import type { Change } from "./store.ts";

/** Anything that can publish a topic and a payload (the bus Publisher does). */
export interface ChangeSink {
  publish(topic: string, payload: string): void;
}

/** Publishes each change under its scope. */
export function publishChanges(sink: ChangeSink, changes: Change[]): void {
  for (const change of changes) {
    sink.publish(
      change.scope,
      JSON.stringify({
        op: change.op,
        scope: change.scope,
        key: change.key ?? null,
        value: change.value ?? null,
        revision: change.revision ?? null,
        timestamp: change.timestamp,
      }),
    );
  }
}
