// Drives a running Meshlite node with the real @supabase/supabase-js client: rpc functions,
// Prefer: missing=default (defaultToNull: false), on_conflict on a non-key column, and racing
// plain inserts of one id. Usage: node supabase_semantics.mjs <node_modules dir> <url>
// Asserts every answer itself; exits non-zero with the failing step on the first mismatch, and
// prints one JSON summary line on success for the Rust test (supabase_js.rs) to check.
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

await step('rpc increment returns the new counter value', async () => {
  ok(await supabase.from('counters').insert({ id: 'a', n: 5 }));
  const r = ok(await supabase.rpc('increment', { table: 'counters', id: 'a', column: 'n', by: 3 }));
  assert.equal(r.status, 200);
  assert.equal(r.data, 8);
  const again = ok(await supabase.rpc('increment', { table: 'counters', id: 'a', column: 'n' }));
  assert.equal(again.data, 9);
  const none = ok(await supabase.rpc('increment', { table: 'counters', id: 'zz', column: 'n' }));
  assert.equal(none.data, null);
  const rows = ok(await supabase.from('counters').select('id, n'));
  assert.deepEqual(rows.data, [{ id: 'a', n: 9 }]);
});

await step('rpc of an unknown function is PGRST202 (404)', async () => {
  const r = await supabase.rpc('nope', { x: 1 });
  assert.equal(r.status, 404);
  assert.equal(r.error.code, 'PGRST202');
  assert.equal(r.error.message, 'Could not find the function public.nope(x) in the schema cache');
  const bad = await supabase.rpc('increment', { table: 'counters', id: 'a', column: 'label' });
  assert.equal(bad.status, 400);
  assert.equal(bad.error.code, '22023');
});

await step('defaultToNull: false sends missing=default: absent columns take defaults', async () => {
  const rows = [{ id: 1, title: 'a' }, { id: 2, title: 'b', status: 'done' }];
  ok(await supabase.from('tasks').insert(rows, { defaultToNull: false }));
  ok(await supabase.from('tasks').insert([{ id: 3, title: 'c' }, { id: 4, prio: 1 }]));
  const r = ok(await supabase.from('tasks').select().order('id'));
  assert.deepEqual(r.data, [
    { id: 1, title: 'a', status: 'open', prio: 3 },
    { id: 2, title: 'b', status: 'done', prio: 3 },
    // Without missing=default, a column listed in columns= (the union of the keys) that an
    // object lacks is null; a column no object names is not listed and takes its default.
    { id: 3, title: 'c', status: 'open', prio: null },
    { id: 4, title: null, status: 'open', prio: 1 },
  ]);
});

await step('upsert on a non-key column is 42P10 and writes nothing', async () => {
  const r = await supabase.from('tasks').upsert({ id: 1, title: 'z' }, { onConflict: 'title' });
  assert.equal(r.status, 400);
  assert.equal(r.error.code, '42P10');
  const one = ok(await supabase.from('tasks').select('title').eq('id', 1).single());
  assert.equal(one.data.title, 'a');
});

await step('racing plain inserts of one id: exactly one succeeds, the rest 23505', async () => {
  const attempts = Array.from({ length: 24 }, (_, i) =>
    supabase.from('tasks').insert({ id: 100, title: `t${i}` }),
  );
  const results = await Promise.all(attempts);
  const won = results.filter((r) => r.error === null);
  assert.equal(won.length, 1);
  for (const r of results.filter((x) => x.error !== null)) {
    assert.equal(r.status, 409);
    assert.equal(r.error.code, '23505');
  }
  const rows = ok(await supabase.from('tasks').select('id').eq('id', 100));
  assert.equal(rows.data.length, 1);
});

console.log(JSON.stringify({ ok: true, steps }));
