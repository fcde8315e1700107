/**
 * Replies kept ready for cached state entries: a template Response per entry
 * that each read clones. The headers cost a cached read more than anything
 * else: a Response built with them has Deno check each one and convert the
 * lot into a native response, where a clone copies the checked list and is
 * served from it, much cheaper per read (measured with wrk as
 * bench/gateway.ts does). A template is never served nor read, so its body
 * stays a string every clone shares.
 *
 * The template hangs on the entry object itself, so a read that has the
 * entry finds it without another lookup (a second map of 10,000 entries
 * made each read of many keys measurably slower). A template holds a few KB
 * outside the JS heap, so at most `max` are kept, the oldest dropped first
 * (rebuilt on their next read); the template of an entry the cache has
 * replaced goes the same way. With `max` 0 (a gateway without a read cache)
 * every reply is built for its read.
 *
 * @module
 */

const TEMPLATE = Symbol("reply template");

interface Template {
  /** What the template was built for (checked: the object alone may be asked for by another). */
  scope: string;
  key: string;
  response: Response;
}

type Holder = { [TEMPLATE]?: Template };

/** Templates on the objects they were built from; see the module doc. */
export class ReplyTemplates<T extends object> {
  /** The objects holding a template, oldest first. */
  readonly #holders = new Set<T>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  /** A fresh copy of the reply to `of` for `scope` and `key`, built with `build` when none is kept. */
  reply(of: T, scope: string, key: string, build: () => Response): Response {
    // Nothing kept (no read cache: every read's entry is new): a template would only cost more.
    if (this.#max === 0) return build();
    const holder = of as T & Holder;
    let template = holder[TEMPLATE];
    if (template === undefined || template.scope !== scope || template.key !== key) {
      template = { scope, key, response: build() };
      holder[TEMPLATE] = template;
      this.#holders.delete(of);
      this.#holders.add(of);
      if (this.#holders.size > this.#max) {
        const oldest = this.#holders.values().next().value! as T & Holder;
        this.#holders.delete(oldest);
        delete oldest[TEMPLATE];
      }
    }
    return template.response.clone();
  }

  get size(): number {
    return this.#holders.size;
  }
}
