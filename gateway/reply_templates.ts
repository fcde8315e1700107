/**
 * Replies kept ready for cached state entries: a template Response per entry
 * that each read clones. The headers cost a cached read more than anything
 * else: a Response built with them has Deno check each one and convert the
 * lot into a native response, where a clone copies the checked list and is
 * served from it, much cheaper per read (measured with wrk as
 * bench/gateway.ts does). A template is never served nor read, so its body
 * stays a string every clone shares.
 *
 * A template holds a few KB outside the JS heap, so at most `max` are kept,
 * the oldest dropped first (rebuilt on their next read); the template of an
 * entry the cache has replaced goes the same way. With `max` 0 (a gateway
 * without a read cache) every reply is built for its read.
 *
 * @module
 */

interface Template {
  /** What the template was built for (checked: the object alone may be asked for by another). */
  scope: string;
  key: string;
  response: Response;
}

/** Templates by the object they were built from; see the module doc. */
export class ReplyTemplates<T extends object> {
  readonly #templates = new Map<T, Template>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  /** A fresh copy of the reply to `of` for `scope` and `key`, built with `build` when none is kept. */
  reply(of: T, scope: string, key: string, build: () => Response): Response {
    // Nothing kept (no read cache: every read's entry is new): a template would only cost more.
    if (this.#max === 0) return build();
    let template = this.#templates.get(of);
    if (template === undefined || template.scope !== scope || template.key !== key) {
      template = { scope, key, response: build() };
      this.#templates.delete(of);
      this.#templates.set(of, template);
      if (this.#templates.size > this.#max) {
        this.#templates.delete(this.#templates.keys().next().value!);
      }
    }
    return template.response.clone();
  }

  get size(): number {
    return this.#templates.size;
  }
}
