// Drives Meshlite's Realtime websocket with the real @supabase/supabase-js client (issue 9,
// "Realtime") on a two-node mesh.
// Usage: node realtime.mjs <node_modules dir> <http://node-a> <http://node-b>
// Subscribes on node A, writes on A and on B (through /rest/v1), and asserts what arrives. It
// waits for each expected event (bounded by a failure guard, never a timing assertion), and
// checks that filtered-out rows never arrive: each excluded write precedes, on the same node,
// a write whose event is awaited, and one socket delivers one node's changes in commit order.
// Exits non-zero on the first mismatch; prints one JSON summary line on success.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';

const [modules, urlA, urlB] = process.argv.slice(2);
const require = createRequire(path.join(modules, 'noop.js'));
const { createClient } = require('@supabase/supabase-js');
// Node 20 has no native WebSocket.
const ws = require('ws');

const GUARD_MS = 30000;
const heartbeats = [];
const client = (url, realtime = {}) =>
  createClient(url, 'dummy-anon-key', {
    auth: { persistSession: false, autoRefreshToken: false },
    realtime: { transport: ws, ...realtime },
  });
const a = client(urlA, {
  heartbeatIntervalMs: 500,
  heartbeatCallback: (status) => heartbeats.push(status),
});
const b = client(urlB);
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

/// Resolves with the first item of `list` (now or later) satisfying `pred`.
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

function subscribed(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve();
      else if (status !== 'CLOSED') reject(new Error(`${status}: ${err?.message}`));
    });
  });
}

function ok(res) {
  assert.equal(res.error, null, JSON.stringify(res.error));
  return res;
}

const running = [];
const inserts = [];
const systems = [];
const idA = randomUUID();
const idB = randomUUID();
const idC = randomUUID();

await step('subscribe with a filter (vsn 2.0.0, the default)', async () => {
  const ch = a
    .channel('running-tasks')
    .on(
      'postgres_changes',
      { event: '*', schema: 'public', table: 'tasks', filter: 'status=eq.running' },
      (p) => running.push(p),
    )
    .on('system', {}, (p) => systems.push(p));
  await subscribed(ch);
  await waitFor('system message', systems, (s) => s.message === 'Subscribed to PostgreSQL');
  assert.equal(systems[0].extension, 'postgres_changes');
  assert.equal(systems[0].status, 'ok');
});

await step('subscribe to INSERTs without a filter (vsn 1.0.0)', async () => {
  const v1 = client(urlA, { vsn: '1.0.0' });
  await subscribed(
    v1
      .channel('inserts')
      .on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'tasks' }, (p) =>
        inserts.push(p),
      ),
  );
});

await step('heartbeats are answered', async () => {
  await waitFor('heartbeat ok', heartbeats, (s) => s === 'ok');
});

await step('local INSERT of a matching row arrives; a non-matching one does not', async () => {
  ok(await a.from('tasks').insert({ id: idB, status: 'queued', notes: 'b' }));
  ok(await a.from('tasks').insert({ id: idA, status: 'running', notes: 'a' }));
  const e = await waitFor('INSERT of A', running, (p) => p.eventType === 'INSERT');
  assert.equal(e.schema, 'public');
  assert.equal(e.table, 'tasks');
  assert.equal(e.new.id, idA);
  assert.equal(e.new.status, 'running');
  assert.equal(e.new.notes, 'a');
  assert.equal(e.new.agent_id, null, 'every declared column, null when absent');
  assert.deepEqual(e.old, {});
  assert.equal(e.errors, null);
  assert.match(e.commit_timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.deepEqual(
    running.map((p) => p.new.id),
    [idA],
    'the queued row was written first and filtered out',
  );
});

await step('the unfiltered INSERT subscription (vsn 1.0.0) gets both rows', async () => {
  await waitFor('INSERT of A on the v1 socket', inserts, (p) => p.new.id === idA);
  assert.deepEqual(inserts.map((p) => p.new.id), [idB, idA]);
});

await step('UPDATE of the matching row arrives with the new row', async () => {
  ok(await a.from('tasks').update({ notes: 'b2' }).eq('id', idB));
  ok(await a.from('tasks').update({ notes: 'a2' }).eq('id', idA));
  const e = await waitFor('UPDATE of A', running, (p) => p.eventType === 'UPDATE');
  assert.equal(e.new.id, idA);
  assert.equal(e.new.notes, 'a2');
  assert.equal(e.old.id, idA);
  assert.equal(running.length, 2);
});

await step('a change written on the other node reaches the subscriber', async () => {
  ok(await b.from('tasks').insert({ id: idC, status: 'running', notes: 'from b' }));
  const e = await waitFor('INSERT of C from the peer', running, (p) => p.new?.id === idC);
  assert.equal(e.eventType, 'INSERT');
  assert.equal(e.new.notes, 'from b');
});

await step('DELETE of a matching row arrives with its last state; others do not', async () => {
  ok(await a.from('tasks').delete().eq('id', idB));
  ok(await a.from('tasks').delete().eq('id', idA));
  const e = await waitFor('DELETE of A', running, (p) => p.eventType === 'DELETE');
  assert.equal(e.old.id, idA);
  assert.equal(e.old.status, 'running');
  assert.deepEqual(e.new, {});
  ok(await b.from('tasks').delete().eq('id', idC));
  const c = await waitFor(
    'DELETE of C from the peer',
    running,
    (p) => p.eventType === 'DELETE' && p.old.id === idC,
  );
  assert.equal(c.old.notes, 'from b');
  assert.deepEqual(
    running.map((p) => [p.eventType, p.new.id ?? p.old.id]),
    [
      ['INSERT', idA],
      ['UPDATE', idA],
      ['INSERT', idC],
      ['DELETE', idA],
      ['DELETE', idC],
    ],
  );
});

await step('broadcast is refused with an error reply', async () => {
  const ch = a.channel('room', { config: { broadcast: { ack: true } } });
  await subscribed(ch);
  const r = await ch.send({ type: 'broadcast', event: 'cursor', payload: { x: 1 } });
  assert.equal(r, 'error');
  await a.removeChannel(ch);
});

await step('presence is refused at join', async () => {
  const ch = a.channel('lobby').on('presence', { event: 'sync' }, () => {});
  const err = await new Promise((resolve) => {
    ch.subscribe((status, e) => {
      if (status === 'CHANNEL_ERROR') resolve(e);
    });
  });
  assert.match(err.message, /presence is not supported/);
  await a.removeChannel(ch);
});

await step('an unknown table is refused at join', async () => {
  const ch = a
    .channel('bad')
    .on('postgres_changes', { event: '*', schema: 'public', table: 'nope' }, () => {});
  const err = await new Promise((resolve) => {
    ch.subscribe((status, e) => {
      if (status === 'CHANNEL_ERROR') resolve(e);
    });
  });
  assert.match(err.message, /nope/);
  await a.removeChannel(ch);
});

await a.removeAllChannels();
console.log(JSON.stringify({ ok: true, steps, received: running.length }));
process.exit(0);
