// Realtime on a table under the owner rule with the real @supabase/supabase-js client (issue 9,
// "Realtime"; see node/src/realtime/subscription.rs): two signed-in users follow `todos`, the
// service role writes, and each user receives only the changes to its own rows — INSERT and
// UPDATE when the new row is theirs, DELETE of their rows with the primary key only.
// Usage: node realtime_owner.mjs <node_modules dir> <url> <anon key> <service key>
//        <token of u1> <token of u2>
// Each socket delivers changes in commit order, so a sentinel insert written last bounds what
// a user could have received (a failure guard, never a timing assertion). Exits non-zero on the
// first mismatch; prints one JSON summary line on success.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import path from 'node:path';

const [modules, url, anonKey, serviceKey, token1, token2] = process.argv.slice(2);
const require = createRequire(path.join(modules, 'noop.js'));
const { createClient } = require('@supabase/supabase-js');
const ws = require('ws');

const GUARD_MS = 30000;
const client = (key, token) =>
  createClient(url, key, {
    auth: { persistSession: false, autoRefreshToken: false },
    realtime: { transport: ws },
    global: { headers: token ? { Authorization: `Bearer ${token}` } : {} },
  });
const service = client(serviceKey);
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

function waitFor(what, list, pred) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const poll = () => {
      const hit = list.find(pred);
      if (hit !== undefined) return resolve(hit);
      if (Date.now() - started > GUARD_MS) {
        return reject(new Error(`no ${what} within the failure guard; got ${JSON.stringify(list)}`));
      }
      setTimeout(poll, 20);
    };
    poll();
  });
}

function ok(res) {
  assert.equal(res.error, null, JSON.stringify(res.error));
  return res;
}

/// A user's client following every change of `todos`; the events land in the returned list.
async function follow(token) {
  const c = client(anonKey, token);
  // The socket's join carries the user's token, as supabase-js does after sign-in.
  await c.realtime.setAuth(token);
  const events = [];
  await new Promise((resolve, reject) => {
    c.channel('todos')
      .on('postgres_changes', { event: '*', schema: 'public', table: 'todos' }, (p) =>
        events.push(p),
      )
      .subscribe((status, err) => {
        if (status === 'SUBSCRIBED') resolve();
        else if (status !== 'CLOSED') reject(new Error(`${status}: ${err?.message}`));
      });
  });
  return { c, events };
}

const summary = (events) =>
  events.map((p) => [p.eventType, p.eventType === 'DELETE' ? p.old.id : p.new.id]);

let u1;
let u2;
await step('two signed-in users subscribe to the owner-filtered table', async () => {
  u1 = await follow(token1);
  u2 = await follow(token2);
});

await step('the service role writes rows of both users', async () => {
  const row = (id, user) => ({ id, title: id, user_id: user });
  ok(await service.from('todos').insert(row('a', 'u1')));
  ok(await service.from('todos').insert(row('b', 'u2')));
  ok(await service.from('todos').update({ title: 'b2' }).eq('id', 'b'));
  ok(await service.from('todos').update({ user_id: 'u2' }).eq('id', 'a'));
  ok(await service.from('todos').delete().eq('id', 'b'));
  ok(await service.from('todos').insert(row('c', 'u1')));
  ok(await service.from('todos').delete().eq('id', 'c'));
  ok(await service.from('todos').insert(row('z1', 'u1')));
  ok(await service.from('todos').insert(row('z2', 'u2')));
});

await step('u1 receives only its own rows', async () => {
  await waitFor('the sentinel z1', u1.events, (p) => p.new?.id === 'z1');
  assert.deepEqual(summary(u1.events), [
    ['INSERT', 'a'],
    ['INSERT', 'c'],
    ['DELETE', 'c'],
    ['INSERT', 'z1'],
  ]);
  assert.equal(u1.events[0].new.user_id, 'u1');
  assert.deepEqual(u1.events[2].old, { id: 'c' }, 'a delete carries the primary key only');
});

await step('u2 receives its rows, including the one given to it', async () => {
  await waitFor('the sentinel z2', u2.events, (p) => p.new?.id === 'z2');
  assert.deepEqual(summary(u2.events), [
    ['INSERT', 'b'],
    ['UPDATE', 'b'],
    ['UPDATE', 'a'],
    ['DELETE', 'b'],
    ['INSERT', 'z2'],
  ]);
  assert.equal(u2.events[2].new.user_id, 'u2');
  assert.deepEqual(u2.events[3].old, { id: 'b' });
});

await u1.c.removeAllChannels();
await u2.c.removeAllChannels();
console.log(JSON.stringify({ ok: true, steps }));
process.exit(0);
