/**
 * A reply frame as JSON, the same for every client that shows one (the
 * gateway's REST and WebSocket replies, the CLI's `call`).
 *
 * @module
 */

/** A frame: text when UTF-8 (plus the parsed value when JSON), else base64. */
export interface FrameJson {
  text?: string;
  json?: unknown;
  base64?: string;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/** A reply frame as JSON: text when UTF-8 (plus the parsed value when JSON), else base64. */
export function frameToJson(frame: Uint8Array): FrameJson {
  let text: string;
  try {
    text = decoder.decode(frame);
  } catch {
    let binary = "";
    for (const byte of frame) binary += String.fromCharCode(byte);
    return { base64: btoa(binary) };
  }
  try {
    return { text, json: JSON.parse(text) };
  } catch {
    return { text };
  }
}
