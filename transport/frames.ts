/** A multipart message. Frames stay bytes: identities are binary. */
export type Frames = Uint8Array[];
