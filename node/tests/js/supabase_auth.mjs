// Drives a Meshlite node started with JWT_SECRET with the real @supabase/supabase-js client:
// keys signed with the node's secret, the schema's per-collection grants and the owner rule.
// Usage: node supabase_auth.mjs <node_modules dir> <url> <anon key> <service key> <token of
// user u1> <expired token> <key signed with another secret>
// Asserts every answer itself; exits non-zero with the failing step on the first mismatch, and
// prints one JSON summary line on success for the Rust test to check.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';

const [modules, url, anonKey, serviceKey, userToken, expired, forged] = process.argv.slice(2);
const require = createRequire(path.join(modules, 'noop.js'));
const { createClient } = require('@supabase/supabase-js');
// Node 20 has no native WebSocket; the Realtime client is built (not used) with the client.
const ws = require('ws');

function client(key, token) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  return createClient(url, key, {
    auth: { persistSession: false, autoRefreshToken: false },
    realtime: { transport: ws },
    global: { headers },
  });
}

const anon = client(anonKey);
const service = client(serviceKey);
const user = client(anonKey, userToken);
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

function refused(res, status, code) {
  assert.equal(res.status, status, JSON.stringify(res));
  assert.equal(res.error?.code, code, JSON.stringify(res.error));
  assert.equal(res.data, null);
}

await step('service_role key writes every collection', async () => {
  ok(await service.from('posts').insert({ id: 'p1', title: 'hello' }));
  ok(await service.from('todos').insert([
    { id: 'a', title: 'mine', user_id: 'u1' },
    { id: 'b', title: 'theirs', user_id: 'u2' },
  ]));
});

await step('anon key reads what the schema grants it', async () => {
  const r = ok(await anon.from('posts').select('id, title'));
  assert.deepEqual(r.data, [{ id: 'p1', title: 'hello' }]);
});

await step('anon key may not write (403 42501)', async () => {
  const r = await anon.from('posts').insert({ id: 'p2', title: 'spam' });
  refused(r, 403, '42501');
  assert.equal(r.error.message, 'permission denied for table posts');
  refused(await anon.from('todos').select('*'), 403, '42501');
});

await step('a user sees only its own rows', async () => {
  const r = ok(await user.from('todos').select('id'));
  assert.deepEqual(r.data, [{ id: 'a' }]);
});

await step("a user's update of another's row matches nothing", async () => {
  const r = ok(await user.from('todos').update({ title: 'stolen' }).eq('id', 'b').select());
  assert.deepEqual(r.data, []);
  const check = ok(await service.from('todos').select('title').eq('id', 'b').single());
  assert.equal(check.data.title, 'theirs');
});

await step('a user insert is stamped with its id', async () => {
  const r = ok(await user.from('todos').insert({ id: 'c', title: 'new' }).select().single());
  assert.equal(r.data.user_id, 'u1');
});

await step('expired token: 401 PGRST303', async () => {
  const r = await client(expired).from('posts').select('*');
  refused(r, 401, 'PGRST303');
  assert.equal(r.error.message, 'JWT expired');
});

await step('key signed with another secret: 401 PGRST301', async () => {
  refused(await client(forged).from('posts').select('*'), 401, 'PGRST301');
});

console.log(JSON.stringify({ ok: true, steps }));
