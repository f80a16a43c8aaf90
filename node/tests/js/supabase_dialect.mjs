// Drives a running Meshlite node with the real @supabase/supabase-js client: the PostgREST
// dialect beyond the basics (issue 9): or/and trees, JSON paths, cs/cd/ov, match/imatch, CSV,
// embedding through declared relations, insertion order, the OpenAPI root.
// Usage: node supabase_dialect.mjs <node_modules dir> <http://127.0.0.1:PORT>
// Asserts every answer itself; exits non-zero with the failing step on the first mismatch, and
// prints one JSON summary line on success for the Rust test to check.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';

const [modules, url] = process.argv.slice(2);
const require = createRequire(path.join(modules, 'noop.js'));
const { createClient } = require('@supabase/supabase-js');
const ws = require('ws');

const supabase = createClient(url, 'dummy-anon-key', {
  auth: { persistSession: false, autoRefreshToken: false },
  realtime: { transport: ws },
});
const users = () => supabase.from('users');
const messages = () => supabase.from('messages');
const steps = [];

async function step(name, f) {
  try {
    await f();
    steps.push(name);
  } catch (e) {
    console.error(`step "${name}" failed:`, e);
    process.exit(1);
  }
}

function ok(res) {
  assert.equal(res.error, null, JSON.stringify(res.error));
  return res;
}
const ids = async (q) => ok(await q).data.map((r) => r.id);

await step('seed (out of key order)', async () => {
  ok(await users().insert([{ id: 12, name: 'cy' }, { id: 10, name: 'ann' }, { id: 11, name: 'bob' }]));
  ok(
    await messages().insert([
      { id: 3, author_id: 10, body: 'hello, world', meta: { lang: 'en', n: 5, nested: { k: 'a' } }, tags: ['x', 'y'] },
      { id: 1, author_id: 11, body: 'hola', meta: { lang: 'es', n: 40 }, tags: ['y'] },
      { id: 2, author_id: 10, body: '(paren) "q"', meta: { lang: 'en', n: 7 }, tags: [] },
      { id: 4, author_id: null, body: 'orphan', meta: null, tags: null },
    ]),
  );
});

await step('rows without order= come back in insertion order', async () => {
  assert.deepEqual(await ids(users().select('id')), [12, 10, 11]);
  assert.deepEqual(await ids(messages().select('id')), [3, 1, 2, 4]);
  // Ties of order= keep insertion order.
  assert.deepEqual(await ids(messages().select('id').order('author_id')), [3, 2, 1, 4]);
});

await step('or / and trees, nested, quoted values', async () => {
  assert.deepEqual(await ids(messages().select('id').or('author_id.eq.11,body.eq."hello, world"')), [3, 1]);
  assert.deepEqual(
    await ids(messages().select('id').or('id.eq.4,and(author_id.eq.10,meta->>lang.eq.en,body.not.like.*world*)')),
    [2, 4],
  );
  assert.deepEqual(
    await ids(messages().select('id').or('body.in.("hello, world","(paren) \\"q\\""),id.gt.3').order('id')),
    [2, 3, 4],
  );
  // Several or= (and a plain filter) all hold.
  assert.deepEqual(await ids(messages().select('id').or('id.eq.1,id.eq.2').or('id.eq.2,id.eq.3')), [2]);
  const bad = await messages().select('id').or('id.eq.1,and(id.eq.2');
  assert.equal(bad.status, 400);
  assert.equal(bad.error.code, 'PGRST100');
});

await step('JSON paths in select, filters and order', async () => {
  const r = ok(await messages().select('id, lang:meta->>lang, meta->n, meta->nested->>k').eq('id', 3).single());
  assert.deepEqual(r.data, { id: 3, lang: 'en', n: 5, k: 'a' });
  assert.deepEqual(await ids(messages().select('id').eq('meta->>lang', 'es')), [1]);
  assert.deepEqual(await ids(messages().select('id').gt('meta->n', 6)), [1, 2]);
  assert.deepEqual(await ids(messages().select('id').order('meta->n', { ascending: false })), [4, 1, 2, 3]);
  const typed = await messages().select('id').eq('body->x', 1);
  assert.equal(typed.error.code, '42883');
});

await step('cs / cd / ov on json, match / imatch; fts refused', async () => {
  assert.deepEqual(await ids(messages().select('id').contains('tags', ['y'])), [3, 1]);
  assert.deepEqual(await ids(messages().select('id').contains('meta', { lang: 'en' })), [3, 2]);
  assert.deepEqual(await ids(messages().select('id').containedBy('tags', ['x', 'y', 'z'])), [3, 1, 2]);
  assert.deepEqual(await ids(messages().select('id').overlaps('tags', ['x', 'q'])), [3]);
  assert.deepEqual(await ids(messages().select('id').not('tags', 'cs', '{y}')), [2]);
  assert.deepEqual(await ids(messages().select('id').filter('body', 'match', '^h')), [3, 1]);
  assert.deepEqual(await ids(messages().select('id').filter('body', 'imatch', '^H')), [3, 1]);
  const fts = await messages().select('id').textSearch('body', 'hello');
  assert.equal(fts.status, 400);
  assert.equal(fts.error.code, 'PGRST100');
  assert.match(fts.error.message, /full-text search/);
});

await step('csv()', async () => {
  const r = ok(await messages().select('id, body, meta->>lang').order('id').csv());
  assert.equal(
    r.data,
    'id,body,lang\n1,hola,es\n2,"(paren) ""q""",en\n3,"hello, world",en\n4,orphan,',
  );
  const empty = ok(await messages().select('id').eq('id', 99).csv());
  assert.equal(empty.data, '\n');
});

await step('embedding: many-to-one, one-to-many, alias, !inner, embedded filters', async () => {
  const m = ok(await messages().select('id, author:users(name)').order('id'));
  assert.deepEqual(m.data, [
    { id: 1, author: { name: 'bob' } },
    { id: 2, author: { name: 'ann' } },
    { id: 3, author: { name: 'ann' } },
    { id: 4, author: null },
  ]);
  const u = ok(await users().select('name, messages(id)').order('id'));
  assert.deepEqual(u.data, [
    { name: 'ann', messages: [{ id: 3 }, { id: 2 }] },
    { name: 'bob', messages: [{ id: 1 }] },
    { name: 'cy', messages: [] },
  ]);
  const inner = ok(await messages().select('id, users!inner(name)', { count: 'exact' }).eq('users.name', 'ann'));
  assert.deepEqual(inner.data.map((r) => r.id), [3, 2]);
  assert.equal(inner.count, 2);
  const left = ok(await users().select('id, messages(id)').eq('messages.id', 1).order('id'));
  assert.deepEqual(left.data, [
    { id: 10, messages: [] },
    { id: 11, messages: [{ id: 1 }] },
    { id: 12, messages: [] },
  ]);
  const none = await users().select('*, todos(*)');
  assert.equal(none.status, 400);
  assert.equal(none.error.code, 'PGRST200');
});

await step('OpenAPI root', async () => {
  const r = await fetch(`${url}/rest/v1/`, { headers: { apikey: 'dummy-anon-key' } });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^application\/openapi\+json/);
  const doc = await r.json();
  assert.equal(doc.swagger, '2.0');
  assert.ok(doc.paths['/messages'].get && doc.paths['/messages'].post);
  const props = doc.definitions.messages.properties;
  assert.deepEqual(props.id, { description: 'Note:\nThis is a Primary Key.<pk/>', format: 'bigint', type: 'integer' });
  assert.equal(props.body.type, 'string');
  assert.equal(props.meta.format, 'jsonb');
  assert.match(props.author_id.description, /<fk table='users' column='id'\/>/);
  assert.deepEqual(doc.definitions.messages.required, ['id']);
});

console.log(JSON.stringify({ ok: true, steps }));
