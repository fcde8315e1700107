import assert from "node:assert/strict";
import { ReplyTemplates } from "./reply_templates.ts";

Deno.test("ReplyTemplates builds a reply once per object and key, hands out whole copies, keeps at most max", async () => {
  const templates = new ReplyTemplates<object>(2);
  let built = 0;
  const build = (text: string) => () => {
    built++;
    return new Response(text, { headers: { etag: `"${text}"` } });
  };
  const [a, b, c] = [{}, {}, {}];
  for (let i = 0; i < 3; i++) {
    const reply = templates.reply(a, "s", "k", build("a"));
    assert.equal(await reply.text(), "a", "each copy has the whole body");
    assert.equal(reply.headers.get("etag"), '"a"');
  }
  assert.equal(built, 1);
  // The same object asked for under another key gets its own reply.
  assert.equal(await templates.reply(a, "s", "other", build("a2")).text(), "a2");
  templates.reply(b, "s", "k", build("b"));
  templates.reply(c, "s", "k", build("c"));
  assert.equal(templates.size, 2, "the oldest dropped");
  assert.equal(await templates.reply(c, "s", "k", build("c!")).text(), "c", "kept");
  built = 0;
  assert.equal(await templates.reply(a, "s", "other", build("a3")).text(), "a3", "rebuilt");
  assert.equal(built, 1);
});

Deno.test("ReplyTemplates with max 0 builds each reply for its read and keeps none", async () => {
  const templates = new ReplyTemplates<object>(0);
  let built = 0;
  const one = {};
  const build = () => {
    built++;
    return new Response("x");
  };
  for (let i = 0; i < 2; i++) assert.equal(await templates.reply(one, "s", "k", build).text(), "x");
  assert.equal(built, 2);
  assert.equal(templates.size, 0);
  // The built reply itself: no template to copy from.
  const built1 = new Response("y");
  assert.equal(templates.reply(one, "s", "k", () => built1), built1);
});
