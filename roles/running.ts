/** Something main.ts started and must stop on SIGINT/SIGTERM. */
export interface Running {
  /** Stops cleanly: peers are told, sockets and servers closed. */
  close(): Promise<void>;
}

/** Stops every part, in reverse order of start. */
export function runningAll(parts: Running[]): Running {
  return {
    async close() {
      for (const part of [...parts].reverse()) await part.close();
    },
  };
}

/** Turns a bind address like `tcp://0.0.0.0:9797` into one a local peer can connect to. */
export function connectableEndpoint(bound: string): string {
  return bound.replace(/^@/, "").replace("://*:", "://127.0.0.1:").replace(
    "://0.0.0.0:",
    "://127.0.0.1:",
  ).replace("://[::]:", "://[::1]:");
}
