// Drives a running Meshlite node with the real @supabase/supabase-js client (basics of
// issue 9). Usage: node supabase_slice.mjs <node_modules dir> <http://127.0.0.1:PORT>
// Asserts every answer itself; exits non-zero with the failing step on the first mismatch, and
// prints one JSON summary line on success for the Rust test to check.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';

const [modules, url] = process.argv.slice(2);
const require = createRequire(path.join(modules, 'noop.js'));
const { createClient } = require('@supabase/supabase-js');
// Node 20 has no native WebSocket; the Realtime client is built (not used) with the client.
const ws = require('ws');

// A dummy anon key: auth is not in this slice and the node ignores it.
const supabase = createClient(url, 'dummy-anon-key', {
  auth: { persistSession: false, autoRefreshToken: false },
  realtime: { transport: ws },
});
const todos = () => supabase.from('todos');
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

await step('insert one (201, no body by default)', async () => {
  const r = await todos().insert({ id: 1, title: 'buy milk', qty: 2, done: false });
  ok(r);
  assert.equal(r.status, 201);
  assert.equal(r.statusText, 'Created');
  assert.equal(r.data, null);
});

await step('bulk insert with select() (one transaction, representation)', async () => {
  const r = ok(
    await todos()
      .insert([
        { id: 2, title: 'walk dog', qty: 1, done: true, due: '2024-05-01T10:00:00Z' },
        { id: 3, title: 'Buy bread', qty: 5, hits: 3 },
        { id: 4, title: 'fix bike, again', qty: null, done: false, tags: ['a', 'b'] },
        { id: 5, title: 'call mom', qty: 3, done: true, due: '2024-05-01T12:00:00+03:00' },
      ])
      .select('id, title'),
  );
  assert.equal(r.status, 201);
  assert.deepEqual(r.data.map((t) => t.id), [2, 3, 4, 5]);
  assert.deepEqual(Object.keys(r.data[0]).sort(), ['id', 'title']);
});

await step('plain insert of an existing id is 23505 and writes nothing', async () => {
  const r = await todos().insert([{ id: 6, title: 'new' }, { id: 1, title: 'dup' }]);
  assert.equal(r.status, 409);
  assert.equal(r.statusText, 'Conflict');
  assert.equal(r.error.code, '23505');
  const six = ok(await todos().select('id').eq('id', 6));
  assert.deepEqual(six.data, []);
});

await step('select * returns every declared column', async () => {
  const r = ok(await todos().select().eq('id', 1).single());
  assert.deepEqual(r.data, {
    id: 1, title: 'buy milk', qty: 2, done: false, hits: null, due: null, tags: null,
  });
});

await step('filters: eq, neq, gt, gte, lt, lte, like, ilike, in, is, not', async () => {
  const ids = async (q) => ok(await q).data.map((t) => t.id);
  assert.deepEqual(await ids(todos().select('id').gt('qty', 2)), [3, 5]);
  assert.deepEqual(await ids(todos().select('id').gte('qty', 2)), [1, 3, 5]);
  assert.deepEqual(await ids(todos().select('id').lt('qty', 2)), [2]);
  assert.deepEqual(await ids(todos().select('id').lte('qty', 2)), [1, 2]);
  assert.deepEqual(await ids(todos().select('id').neq('qty', 2)), [2, 3, 5]);
  assert.deepEqual(await ids(todos().select('id').eq('done', true)), [2, 5]);
  assert.deepEqual(await ids(todos().select('id').like('title', 'buy%')), [1]);
  assert.deepEqual(await ids(todos().select('id').ilike('title', 'buy%')), [1, 3]);
  assert.deepEqual(await ids(todos().select('id').in('title', ['walk dog', 'fix bike, again'])), [2, 4]);
  assert.deepEqual(await ids(todos().select('id').is('qty', null)), [4]);
  assert.deepEqual(await ids(todos().select('id').is('done', null)), [3]);
  assert.deepEqual(await ids(todos().select('id').not('title', 'ilike', '%buy%')), [2, 4, 5]);
  assert.deepEqual(await ids(todos().select('id').not('qty', 'is', null).lt('qty', 3)), [1, 2]);
  // 12:00+03:00 is 09:00Z: before 10:00Z.
  assert.deepEqual(await ids(todos().select('id').lt('due', '2024-05-01T09:30:00Z')), [5]);
});

await step('order (several columns, nulls) and alias', async () => {
  const r = ok(
    await todos()
      .select('id, label:title')
      .order('done', { ascending: false, nullsFirst: false })
      .order('qty', { ascending: true }),
  );
  assert.deepEqual(r.data.map((t) => t.id), [2, 5, 1, 4, 3]);
  assert.equal(r.data[0].label, 'walk dog');
  const q = ok(await todos().select('id').order('qty', { ascending: false }));
  assert.deepEqual(q.data.map((t) => t.id), [4, 3, 5, 1, 2], 'nulls first when descending');
});

await step('range with count=exact: 206 and the total', async () => {
  const r = ok(await todos().select('id', { count: 'exact' }).order('id').range(1, 2));
  assert.equal(r.status, 206);
  assert.equal(r.count, 5);
  assert.deepEqual(r.data.map((t) => t.id), [2, 3]);
  const all = ok(await todos().select('id', { count: 'exact' }));
  assert.equal(all.status, 200);
  assert.equal(all.count, 5);
  const lim = ok(await todos().select('id').limit(2));
  assert.equal(lim.data.length, 2);
});

await step('head with count', async () => {
  const r = ok(await todos().select('*', { count: 'planned', head: true }).eq('done', true));
  assert.equal(r.count, 2);
  assert.equal(r.data, null);
});

await step('single(): one row is an object, none is PGRST116 (406)', async () => {
  const one = ok(await todos().select('title').eq('id', 3).single());
  assert.deepEqual(one.data, { title: 'Buy bread' });
  const none = await todos().select().eq('id', 99).single();
  assert.equal(none.status, 406);
  assert.equal(none.error.code, 'PGRST116');
  assert.equal(none.error.details, 'The result contains 0 rows');
  const many = await todos().select().single();
  assert.equal(many.error.code, 'PGRST116');
  const maybe = ok(await todos().select().eq('id', 99).maybeSingle());
  assert.equal(maybe.data, null);
});

await step('update with filters; a counter set to a value applies the difference', async () => {
  const r = ok(await todos().update({ done: true, hits: 10 }).eq('id', 3).select());
  assert.equal(r.status, 200);
  assert.equal(r.data.length, 1);
  assert.equal(r.data[0].done, true);
  assert.equal(r.data[0].hits, 10);
  const minimal = ok(await todos().update({ qty: 7 }).in('id', [1, 2]));
  assert.equal(minimal.status, 204);
  const after = ok(await todos().select('id, qty').in('id', [1, 2]).order('id'));
  assert.deepEqual(after.data, [{ id: 1, qty: 7 }, { id: 2, qty: 7 }]);
});

await step('upsert merges into the existing row and inserts new ones', async () => {
  const r = ok(
    await todos()
      .upsert([{ id: 1, title: 'buy oat milk' }, { id: 7, title: 'new via upsert', qty: 1 }])
      .select(),
  );
  assert.equal(r.status, 201);
  const one = ok(await todos().select().eq('id', 1).single()).data;
  assert.equal(one.title, 'buy oat milk');
  // An array is sent with columns= (the union of its keys): a listed column an object lacks
  // is written null, as PostgREST's ON CONFLICT DO UPDATE does.
  assert.equal(one.qty, null, 'a bulk upsert nulls the listed columns an object lacks');
  ok(await todos().upsert({ id: 1, qty: 7 }));
  const kept = ok(await todos().select('title, qty').eq('id', 1).single()).data;
  assert.deepEqual(kept, { title: 'buy oat milk', qty: 7 }, 'one object keeps unnamed columns');
  const seven = ok(await todos().select('title').eq('id', 7).single()).data;
  assert.equal(seven.title, 'new via upsert');
  const ignored = ok(
    await todos().upsert({ id: 7, title: 'ignored' }, { ignoreDuplicates: true }),
  );
  assert.equal(ignored.status, 201);
  const still = ok(await todos().select('title').eq('id', 7).single()).data;
  assert.equal(still.title, 'new via upsert');
});

await step('delete with filters and representation; insert after delete re-creates', async () => {
  const r = ok(await todos().delete().eq('done', true).select('id'));
  assert.deepEqual(r.data.map((t) => t.id).sort(), [2, 3, 5]);
  const left = ok(await todos().select('id', { count: 'exact' }).order('id'));
  assert.deepEqual(left.data.map((t) => t.id), [1, 4, 7]);
  ok(await todos().insert({ id: 2, title: 'walk dog again' }));
  const again = ok(await todos().select('id, title, done').eq('id', 2).single()).data;
  assert.deepEqual(again, { id: 2, title: 'walk dog again', done: null });
  const gone = ok(await todos().delete().eq('id', 2));
  assert.equal(gone.status, 204);
});

await step('errors in PostgREST shape', async () => {
  const col = await todos().select('nope');
  assert.equal(col.status, 400);
  assert.equal(col.error.code, '42703');
  const write = await todos().insert({ id: 50, nope: 1 });
  assert.equal(write.status, 400);
  assert.equal(write.error.code, 'PGRST204');
  const table = await supabase.from('nope').select();
  assert.equal(table.status, 404);
  assert.equal(table.statusText, 'Not Found');
  assert.equal(table.error.code, 'PGRST205');
  const op = await todos().select().filter('qty', 'wat', 1);
  assert.equal(op.error.code, 'PGRST100');
  const typed = await todos().select().eq('qty', 'many');
  assert.equal(typed.error.code, '22P02');
  const bad = await todos().insert({ id: 51, qty: 'many' });
  assert.equal(bad.status, 400);
  const none = ok(await todos().select('id').in('id', [50, 51]));
  assert.deepEqual(none.data, [], 'a refused write writes nothing');
});

console.log(JSON.stringify({ ok: true, steps }));
