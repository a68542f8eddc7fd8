import { describe, expect, it, jest } from '@jest/globals';
import { SESSIONS, entities } from '../../projections/entities.projection.js';
import { machineStress } from '../../projections/machine-stress.projection.js';
import { fairness } from '../../projections/fairness.projection.js';
import { PROJECTIONS } from '../../projections/index.js';
import { RETAINED_ENDED, type World } from '../../src/domain/world.js';
import { ProjectionRunner, dropRetired } from '../../src/application/projector.js';
import type { EventStore, RecordedEvent } from '../../src/application/ports/event-store.port.js';
import type { Checkpoint, Doc, DocChange, ReadModelStore } from '../../src/application/ports/read-model.port.js';
import { SqliteReadModels } from '../../src/adapters/readmodels/sqlite-read-models.js';

/** An in-memory store whose writes can be held open or refused, recording what each write was given when called. */
class FakeStore implements ReadModelStore {
  constructor(readonly copiesOnApply = false) {}
  docs = new Map<string, string>();
  checkpoints = new Map<string, Checkpoint>();
  calls: Array<{ given: string; atEnd?: string }> = [];
  refuse = 0;
  gate?: Promise<void>;
  /** Holds every write open until the returned function is called. */
  holdWrites(): () => void {
    let open!: () => void;
    this.gate = new Promise((r) => (open = r));
    return () => {
      open();
      this.gate = undefined;
    };
  }
  /** Resolves once a write has started. */
  async writeStarted(): Promise<void> {
    while (this.calls.length === 0) await new Promise((r) => setTimeout(r, 5));
  }
  async apply(projection: string, version: number, changes: DocChange[], checkpoint: bigint): Promise<void> {
    const call: { given: string; atEnd?: string } = { given: JSON.stringify(changes, big) };
    this.calls.push(call);
    // A copying store has what it writes once apply returns; the others read the documents as they write.
    const copied = this.copiesOnApply ? (JSON.parse(call.given) as DocChange[]) : undefined;
    if (this.gate) await this.gate;
    call.atEnd = JSON.stringify(changes, big);
    if (this.refuse > 0) {
      this.refuse -= 1;
      throw Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
    }
    for (const c of copied ?? changes) {
      if (c.op === 'put') this.docs.set(`${c.collection}/${c.id}`, JSON.stringify(c.doc));
      else this.docs.delete(`${c.collection}/${c.id}`);
    }
    this.checkpoints.set(projection, { position: checkpoint, version });
  }
  async get(): Promise<Doc | undefined> {
    return undefined;
  }
  async find(): Promise<Doc[]> {
    return [];
  }
  async getMany(): Promise<Doc[]> {
    return [];
  }
  async checkpoint(projection: string): Promise<Checkpoint | undefined> {
    return this.checkpoints.get(projection);
  }
  async writtenAfter(): Promise<boolean> {
    return false;
  }
  async reset(): Promise<void> {
    this.docs.clear();
    this.checkpoints.clear();
  }
  async ping(): Promise<void> {}
  async close(): Promise<void> {}
}
const big = (_: string, v: unknown) => (typeof v === 'bigint' ? v.toString() : v);

/** Two machines reserved and released in turn: machine-stress folds its documents in place. */
function ledger(cycles: number): RecordedEvent[] {
  const out: RecordedEvent[] = [];
  let position = 0n;
  const at = (i: number) => new Date(Date.UTC(2026, 0, 1) + i * 60_000).toISOString();
  const add = (stream: string, type: string, data: Record<string, unknown>) =>
    out.push({ id: `e${position + 1n}`, stream, revision: 0, position: ++position, type, data, metadata: { at: at(Number(position)) } });
  for (const id of [1, 2]) add(`machine-m${id}`, 'MachineRegistered', { machineId: id, hostname: `m${id}`, ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready', at: at(0) });
  for (let s = 1; s <= cycles; s++) {
    const id = (s % 2) + 1;
    add(`machine-m${id}`, 'MachineReserved', { machineId: id, hostname: `m${id}`, sessionId: s, tenantId: 1, pool: 'p', platform: 'intel', affinity: 'kept', contextualize: false, at: at(2 * s) });
    add(`machine-m${id}`, 'MachineReleased', { machineId: id, sessionId: s, reason: 'done', at: at(2 * s + 1) });
  }
  return out;
}

/** A ledger empty when the runner starts (events are then pushed by hand): nothing to rebuild. */
const noLedger = { readLast: async () => [] } as unknown as EventStore;

async function reference(events: RecordedEvent[]): Promise<Map<string, string>> {
  const store = new FakeStore();
  const runner = new ProjectionRunner(machineStress, noLedger, store);
  await runner.prepare();
  for (const e of events) await runner.push(e);
  await runner.caughtUp(events.at(-1)!.position);
  return store.docs;
}

describe('projection runner', () => {
  it('does not change documents a write is still reading: events arriving meanwhile wait for the next batch', async () => {
    const events = ledger(40);
    const store = new FakeStore();
    const release = store.holdWrites();
    const runner = new ProjectionRunner(machineStress, noLedger, store);
    await runner.prepare();
    for (const e of events.slice(0, 20)) runner.push(e);
    // Let the first batch start its write, which the store holds open.
    await store.writeStarted();
    for (const e of events.slice(20)) runner.push(e);
    release();
    await runner.caughtUp(events.at(-1)!.position);
    expect(store.calls.length).toBeGreaterThanOrEqual(2);
    for (const call of store.calls) expect(call.atEnd).toBe(call.given);
    expect(store.docs).toEqual(await reference(events));
    expect(store.checkpoints.get(machineStress.name)!.position).toBe(events.at(-1)!.position);
  });

  it('writes what a reader waits for at once, without waiting out the time batches gather', async () => {
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask'] });
    try {
      const store = new FakeStore();
      const runner = new ProjectionRunner(machineStress, noLedger, store);
      await runner.prepare();
      const events = ledger(3);
      for (const e of events) runner.push(e);
      let caught = false;
      void runner.caughtUp(events.at(-1)!.position).then(() => (caught = true));
      // No timer ever fires here: only the reader can have started the write.
      for (let i = 0; i < 100 && !caught; i++) await new Promise((r) => setImmediate(r));
      expect(caught).toBe(true);
      expect(store.checkpoints.get(machineStress.name)!.position).toBe(events.at(-1)!.position);
    } finally {
      jest.useRealTimers();
    }
  });

  it('answers a reader it cannot catch up with in time as unavailable (503), not as a fault', async () => {
    const store = new FakeStore();
    const release = store.holdWrites();
    const runner = new ProjectionRunner(machineStress, noLedger, store);
    await runner.prepare();
    const events = ledger(3);
    for (const e of events) runner.push(e);
    await expect(runner.caughtUp(events.at(-1)!.position, 50)).rejects.toMatchObject({ kind: 'unavailable', message: expect.stringMatching(/^the read models are behind the ledger \(projection machine-stress written up to 0 of \d+, read up to \d+: being rebuilt\?\); try again shortly$/) });
    release();
    await runner.caughtUp(events.at(-1)!.position);
  });

  it('keeps a refused batch and writes it, with what came after, once the store takes writes again', async () => {
    const events = ledger(30);
    const store = new FakeStore();
    store.refuse = 1;
    const runner = new ProjectionRunner(machineStress, noLedger, store);
    await runner.prepare();
    for (const e of events.slice(0, 25)) runner.push(e);
    while (!runner.writeFailure) await new Promise((r) => setTimeout(r, 5));
    expect(runner.position).toBe(0n);
    // A reader meanwhile is told why its answer waits, not that it could not write.
    await expect(runner.caughtUp(events[24].position)).rejects.toMatchObject({ kind: 'unavailable', message: 'Duffy cannot bring the read models it answers from up to date: the disk is full (SQLITE_FULL); try again later' });
    for (const e of events.slice(25)) runner.push(e);
    while (runner.position < events.at(-1)!.position) await new Promise((r) => setTimeout(r, 20));
    expect(runner.writeFailure).toBeUndefined();
    expect(store.docs).toEqual(await reference(events));
  });

  it('folds the next events while a store that copies on apply writes, and waits only past the high-water mark', async () => {
    const events = ledger(40);
    const store = new FakeStore(true);
    const release = store.holdWrites();
    const runner = new ProjectionRunner(machineStress, noLedger, store);
    await runner.prepare();
    for (const e of events.slice(0, 20)) runner.push(e);
    await store.writeStarted();
    for (const e of events.slice(20)) expect(runner.push(e)).toBeUndefined();
    release();
    await runner.caughtUp(events.at(-1)!.position);
    // Folded at once: the documents changed under the write, which had copied them.
    expect(store.calls[0].atEnd).not.toBe(store.calls[0].given);
    expect(store.docs).toEqual(await reference(events));
  });

  it('writes a refused batch again with what was folded while it was under way', async () => {
    const events = ledger(30);
    const store = new FakeStore(true);
    store.refuse = 1;
    const release = store.holdWrites();
    const runner = new ProjectionRunner(machineStress, noLedger, store);
    await runner.prepare();
    for (const e of events.slice(0, 25)) runner.push(e);
    await store.writeStarted();
    // One event, on one machine: the other machine's document is only in the refused batch.
    runner.push(events[25]);
    release();
    while (runner.position < events[25].position) await new Promise((r) => setTimeout(r, 20));
    expect(store.calls.length).toBeGreaterThanOrEqual(2);
    expect(runner.writeFailure).toBeUndefined();
    expect(store.docs).toEqual(await reference(events.slice(0, 26)));
  });

  it('past the high-water mark with a store refusing writes, waits for the retry instead of retrying with every event', async () => {
    const events = ledger(10_001);
    const store = new FakeStore(true);
    store.refuse = Number.POSITIVE_INFINITY;
    const runner = new ProjectionRunner(machineStress, noLedger, store);
    await runner.prepare();
    const pushing = (async () => {
      for (const e of events) await runner.push(e);
    })();
    await new Promise((r) => setTimeout(r, 300));
    expect(runner.writeFailure).toBeDefined();
    expect(store.calls.length).toBeLessThanOrEqual(2);
    store.refuse = 0;
    await pushing;
    await runner.caughtUp(events.at(-1)!.position);
    expect(store.docs).toEqual(await reference(events));
  });

  it("reports as lag how long events a refusing store has not taken have waited, not the last written batch's lag", async () => {
    const minutesAgo = (m: number) => (e: RecordedEvent): RecordedEvent => ({ ...e, metadata: { at: new Date(Date.now() - m * 60_000).toISOString() } });
    const events = ledger(4);
    const store = new FakeStore();
    const runner = new ProjectionRunner(machineStress, noLedger, store);
    await runner.prepare();
    const first = events.slice(0, 4).map(minutesAgo(0));
    for (const e of first) runner.push(e);
    await runner.caughtUp(first.at(-1)!.position);
    expect(runner.lagMs()).toBeLessThan(5_000);
    // A full disk: the next events are not written; a minute later they have waited a minute.
    store.refuse = Number.POSITIVE_INFINITY;
    const later = events.slice(4).map(minutesAgo(0));
    for (const e of later) runner.push(e);
    while (!runner.writeFailure) await new Promise((r) => setTimeout(r, 5));
    expect(runner.lagMs(Date.now() + 60_000)).toBeGreaterThanOrEqual(60_000);
    store.refuse = 0;
    while (runner.position < later.at(-1)!.position) await new Promise((r) => setTimeout(r, 20));
    expect(runner.writeFailure).toBeUndefined();
  });

  it('reports a rebuild of old events, once written, as the time the rebuild took, not the age of the events (an idle farm alerted for good after each restart)', async () => {
    const events = ledger(4).map((e): RecordedEvent => ({ ...e, metadata: { at: new Date(Date.now() - 3_600_000).toISOString() } }));
    const runner = new ProjectionRunner(machineStress, noLedger, new FakeStore());
    await runner.prepare();
    for (const e of events) runner.push(e);
    await runner.caughtUp(events.at(-1)!.position);
    expect(runner.lagMs()).toBeLessThan(5_000);
  });

  it('ignores an event delivered again', async () => {
    const events = ledger(6);
    const store = new FakeStore();
    const runner = new ProjectionRunner(machineStress, noLedger, store);
    await runner.prepare();
    for (const e of events) runner.push(e);
    for (const e of events) expect(runner.push(e)).toBeUndefined();
    await runner.caughtUp(events.at(-1)!.position);
    expect(store.docs).toEqual(await reference(events));
  });

  it('rebuilds from 0 rather than restore documents written after its checkpoint (a crash between the two on MongoDB)', async () => {
    const events = ledger(40);
    const [checkpointed, written] = [events[30].position, events[60].position];
    const store = new SqliteReadModels(':memory:');
    // The documents as of `written`, under the checkpoint of `checkpointed`.
    const ahead = [...(await reference(events.filter((e) => e.position <= written))).entries()].map(([key, doc]): DocChange => {
      const [collection, id] = key.split('/');
      return { op: 'put', collection, id, doc: JSON.parse(doc) as Doc, position: written };
    });
    await store.apply(machineStress.name, machineStress.version, ahead, checkpointed);

    const runner = new ProjectionRunner(machineStress, noLedger, store);
    expect(await runner.prepare()).toBe(0n);
    expect(runner.rebuiltBecause).toMatch(/after its checkpoint/);
    // Folded again over the documents, not after dropping them: a reader of the store meanwhile still finds them.
    expect((await store.find(machineStress.collections[0])).length).toBeGreaterThan(0);
    for (const e of events) await runner.push(e);
    await runner.caughtUp(events.at(-1)!.position);

    const docs = new Map<string, string>();
    for (const collection of machineStress.collections) for (const doc of await store.find(collection)) docs.set(`${collection}/${String(doc.__id)}`, JSON.stringify(doc));
    expect(docs).toEqual(await reference(events));
    await store.close();
  });

  it('rebuilds from 0 and says why when the stored version is an older one (an upgrade)', async () => {
    const store = new SqliteReadModels(':memory:');
    const stale: DocChange = { op: 'put', collection: machineStress.collections[0], id: 'gone', doc: { id: 'gone' }, position: 5n };
    await store.apply(machineStress.name, machineStress.version - 1, [stale], 5n);
    const runner = new ProjectionRunner(machineStress, noLedger, store);
    expect(await runner.prepare()).toBe(0n);
    expect(runner.rebuiltBecause).toBe(`its version changed from ${machineStress.version - 1} to ${machineStress.version}`);
    expect(await store.find(machineStress.collections[0])).toEqual([]);
    // The same version again: nothing to say.
    await store.apply(machineStress.name, machineStress.version, [], 5n);
    await runner.prepare();
    expect(runner.rebuiltBecause).toBeUndefined();
    await store.close();
  });

  it("removes a retired projection's documents and checkpoint, and leaves the others' alone", async () => {
    const store = new SqliteReadModels(':memory:');
    const put = (collection: string, id: string): DocChange => ({ op: 'put', collection, id, doc: { id }, position: 5n });
    await store.apply('old', 1, [put('old_docs', 'a'), put('old_docs', 'b')], 5n);
    await store.apply(machineStress.name, machineStress.version, [put(machineStress.collections[0], 'm1')], 5n);
    const retired = [{ name: 'old', collections: ['old_docs'] }, { name: 'never-stored', collections: ['never_docs'] }];
    expect(await dropRetired(store, retired)).toEqual(['old']);
    expect(await store.find('old_docs')).toEqual([]);
    expect(await store.checkpoint('old')).toBeUndefined();
    expect(await store.find(machineStress.collections[0])).toHaveLength(1);
    expect(await store.checkpoint(machineStress.name)).toEqual({ position: 5n, version: machineStress.version });
    // Once gone, nothing to report.
    expect(await dropRetired(store, retired)).toEqual([]);
    // Documents a crash left without their checkpoint (MongoDB writes them first) go too.
    await store.apply('old', 1, [put('old_docs', 'c')], 7n);
    await store.reset('old', []);
    expect(await store.checkpoint('old')).toBeUndefined();
    expect(await dropRetired(store, retired)).toEqual([]);
    expect(await store.find('old_docs')).toEqual([]);
    await store.close();
  });
});

/** A tenant, two machines, then `sessions` whole request + release cycles, as the server records them. */
function sessionCycles(sessions: number): RecordedEvent[] {
  const out: RecordedEvent[] = [];
  let position = 0n;
  const at = new Date(Date.UTC(2026, 0, 1)).toISOString();
  const add = (stream: string, type: string, data: Record<string, unknown>) =>
    out.push({ id: `e${position + 1n}`, stream, revision: 0, position: ++position, type, data: { ...data, at }, metadata: { at } });
  add('tenant-t', 'TenantRegistered', { tenantId: 1, name: 't', apiKeyDigest: 'x', isAdmin: false, sshKey: 'ssh-ed25519 AAAA', nodeQuota: null, sessionLifetime: null, sessionLifetimeMax: null });
  for (const id of [1, 2]) add(`machine-m${id}`, 'MachineRegistered', { machineId: id, hostname: `m${id}`, ipaddr: null, pool: 'p', reusable: true, data: {}, state: 'ready' });
  for (let s = 1; s <= sessions; s++) {
    const machineId = (s % 2) + 1;
    add(`session-${s}`, 'MachineRequested', { sessionId: s, tenantId: 1, tenant: 't', specs: [{ pool: 'p', quantity: 1 }], expiresAt: at });
    add('tenant-t', 'QuotaClaimed', { tenantId: 1, sessionId: s, count: 1 });
    add(`machine-m${machineId}`, 'MachineReserved', { machineId, hostname: `m${machineId}`, sessionId: s, tenantId: 1, pool: 'p', platform: 'intel', affinity: 'kept', contextualize: false });
    add(`session-${s}`, 'SessionStarted', { sessionId: s, machineIds: [machineId] });
    add(`session-${s}`, 'SessionReleased', { sessionId: s, reason: 'done' });
    add(`machine-m${machineId}`, 'MachineReleased', { machineId, sessionId: s, reason: 'done' });
    add('tenant-t', 'QuotaReturned', { tenantId: 1, sessionId: s, count: 1 });
    add(`machine-m${machineId}`, 'MachineRecycled', { machineId, policy: 'reuse', state: 'ready' });
  }
  return out;
}

/** The runner's in-memory state (private: what the bound is about). */
const stateOf = (runner: ProjectionRunner) => (runner as unknown as { state: World }).state;

/** The documents of `collections` (every projection's by default), by collection. */
const documents = async (store: SqliteReadModels, collections = PROJECTIONS.flatMap((p) => p.collections)) =>
  Object.fromEntries(await Promise.all(collections.map(async (c) => [c, await store.find(c)])));

/** A ledger whose last event, when the runner starts, is `last`: a runner starting from 0 rebuilds up to it. */
const ledgerEndingAt = (last: RecordedEvent) => ({ readLast: async () => [last] }) as unknown as EventStore;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The ids of the documents of `collection` a store write was given. */
const idsIn = (call: { given: string }, collection: string) => (JSON.parse(call.given) as DocChange[]).filter((c) => c.collection === collection).map((c) => c.id);

describe('a rebuild', () => {
  /** Pushes `events` in `chunks`, waiting after each but the last for the batch it makes to be written. */
  const inBatches = async (runner: ProjectionRunner, events: RecordedEvent[], chunks: number, writes: () => number, eachWritten?: () => void) => {
    const size = Math.ceil(events.length / chunks);
    for (let i = 0; i < events.length; i += size) {
      const before = writes();
      for (const e of events.slice(i, i + size)) runner.push(e);
      if (i + size >= events.length) break;
      while (writes() === before) await sleep(5);
      eachWritten?.();
    }
  };

  it('holds back the documents every batch changes until the rebuild ends, and keeps its checkpoint until then', async () => {
    const events = ledger(40);
    const last = events.at(-1)!;
    const store = new FakeStore();
    const runner = new ProjectionRunner(machineStress, ledgerEndingAt(last), store);
    await runner.prepare();
    await inBatches(runner, events, 4, () => store.calls.length, () => {
      expect(store.checkpoints.get(machineStress.name)?.position ?? 0n).toBe(0n);
      expect(runner.position).toBe(0n);
    });
    await runner.caughtUp(last.position);
    expect(store.calls).toHaveLength(4);
    // Both machines change in every batch: written by the first batch and the last, not the two between.
    expect(store.calls.map((c) => idsIn(c, 'machine_stress').sort())).toEqual([['1', '2'], [], [], ['1', '2']]);
    expect(store.docs).toEqual(await reference(events));
    expect(store.checkpoints.get(machineStress.name)!.position).toBe(last.position);
  });

  it('writes a document held back once three batches running leave it unchanged', async () => {
    // Machine 2 only in the first 26 events (two batches of 13): written by the first, held back by the second, left
    // alone by the next three and written by the third of them; the last batch has nothing of it.
    const events = ledger(60).filter((e, i) => i < 26 || e.stream !== 'machine-m2');
    const store = new FakeStore();
    const runner = new ProjectionRunner(machineStress, ledgerEndingAt(events.at(-1)!), store);
    await runner.prepare();
    await inBatches(runner, events, 6, () => store.calls.length);
    await runner.caughtUp(events.at(-1)!.position);
    expect(store.calls.map((c) => idsIn(c, 'machine_stress').includes('2'))).toEqual([true, false, false, false, true, false]);
    expect(store.docs).toEqual(await reference(events));
  });

  it('stopped halfway, writes what it held back and moves its checkpoint to what it folded', async () => {
    const events = ledger(40);
    const store = new FakeStore();
    const runner = new ProjectionRunner(machineStress, ledgerEndingAt(events.at(-1)!), store);
    await runner.prepare();
    const half = events.slice(0, 60);
    await inBatches(runner, half, 3, () => store.calls.length);
    while (store.calls.length < 3) await sleep(5);
    expect(store.checkpoints.get(machineStress.name)?.position ?? 0n).toBe(0n);
    await runner.stop();
    expect(store.docs).toEqual(await reference(half));
    expect(store.checkpoints.get(machineStress.name)!.position).toBe(half.at(-1)!.position);
  });

  it('folded again over the documents a crash left ahead of its checkpoint, removes those created and removed within one batch since', async () => {
    const events = sessionCycles(10);
    const last = events.at(-1)!;
    const onePass = new SqliteReadModels(':memory:');
    const plain = new ProjectionRunner(fairness, noLedger, onePass);
    await plain.prepare();
    for (const e of events) plain.push(e);
    await plain.caughtUp(last.position);

    const store = new SqliteReadModels(':memory:');
    let written = 0;
    const apply = store.apply.bind(store);
    store.apply = async (...args) => {
      await apply(...args);
      written += 1;
    };
    const crashed = new ProjectionRunner(fairness, ledgerEndingAt(last), store);
    await crashed.prepare();
    // Its first batch ends between session 6's reservation and its release: the machine's hold is written, and then
    // the process dies (the runner is never stopped).
    for (const e of events.slice(0, 3 + 8 * 5 + 3)) crashed.push(e);
    while (written === 0) await sleep(5);
    const again = new ProjectionRunner(fairness, ledgerEndingAt(last), store);
    await again.prepare();
    expect(again.rebuiltBecause).toMatch(/^documents written after its checkpoint/);
    // One batch now: the hold is created and removed within it.
    for (const e of events) again.push(e);
    await again.caughtUp(last.position);
    expect(await documents(store, fairness.collections)).toEqual(await documents(onePass, fairness.collections));
    for (const r of [plain, again]) await r.stop();
    await onePass.close();
    await store.close();
  });

  it('of every projection, in batches, leaves the documents one pass without holding back leaves', async () => {
    // Batches of more sessions than the World keeps ended: a session held back across one must stay until written.
    const events = sessionCycles(RETAINED_ENDED * 4);
    const once = new SqliteReadModels(':memory:');
    const plain = PROJECTIONS.map((p) => new ProjectionRunner(p, noLedger, once));
    for (const r of plain) await r.prepare();
    for (const e of events) for (const r of plain) r.push(e);
    for (const r of plain) await r.caughtUp(events.at(-1)!.position);

    const rebuilt = new SqliteReadModels(':memory:');
    let writes = 0;
    const apply = rebuilt.apply.bind(rebuilt);
    rebuilt.apply = (...args) => ((writes += 1), apply(...args));
    const runners = PROJECTIONS.map((p) => new ProjectionRunner(p, ledgerEndingAt(events.at(-1)!), rebuilt));
    for (const r of runners) await r.prepare();
    const all = { push: (e: RecordedEvent) => (runners.forEach((r) => r.push(e)), undefined) } as unknown as ProjectionRunner;
    // Each chunk is one batch of every runner: the next chunk waits for all three writes.
    await inBatches(all, events, 3, () => Math.floor(writes / runners.length));
    for (const r of runners) await r.caughtUp(events.at(-1)!.position);
    expect(writes).toBeGreaterThanOrEqual(3 * runners.length);
    expect(await documents(rebuilt)).toEqual(await documents(once));
    expect(stateOf(runners[0]).sessions.size).toBeLessThanOrEqual(RETAINED_ENDED);
    for (const r of [...plain, ...runners]) await r.stop();
    await once.close();
    await rebuilt.close();
  });
});

describe('entities projection over a long history', () => {
  const sessions = RETAINED_ENDED * 3;

  it("keeps only what later events can change in memory (the World's bound), every session's document in the store, and restarts with as little", async () => {
    const events = sessionCycles(sessions);
    const store = new SqliteReadModels(':memory:');
    const runner = new ProjectionRunner(entities, noLedger, store);
    await runner.prepare();
    // In slices, so the state is let go of after several writes, not once at the end.
    for (let i = 0; i < events.length; i += 4000) {
      for (const e of events.slice(i, i + 4000)) runner.push(e);
      await runner.caughtUp(events[Math.min(i + 4000, events.length) - 1].position);
    }
    expect(stateOf(runner).sessions.size).toBeLessThanOrEqual(RETAINED_ENDED);
    const docs = await store.find(SESSIONS);
    expect(docs).toHaveLength(sessions);
    expect(docs.every((d) => d.status === 'released' && (d.machineIds as number[]).length === 1)).toBe(true);
    await runner.stop();

    // A restart reads back what the state keeps, not every session ever made (it read all 3,000 before).
    let read = 0;
    const counted = Object.assign(Object.create(store) as SqliteReadModels, {
      find: async (...args: Parameters<SqliteReadModels['find']>) => ((docs) => ((read += docs.length), docs))(await store.find(...args)),
      getMany: async (...args: Parameters<SqliteReadModels['getMany']>) => ((docs) => ((read += docs.length), docs))(await store.getMany(...args)),
    });
    const again = new ProjectionRunner(entities, noLedger, counted);
    expect(await again.prepare()).toBe(events.at(-1)!.position);
    expect(stateOf(again).sessions.size).toBe(0);
    expect(stateOf(again).machines.size).toBe(2);
    expect(read).toBeLessThanOrEqual(2 + 1);
    await store.close();
  });

  it('writes every session that ended while a write was under way, though it left the state meanwhile', async () => {
    const events = sessionCycles(sessions);
    const store = new FakeStore(true);
    const release = store.holdWrites();
    const runner = new ProjectionRunner(entities, noLedger, store);
    await runner.prepare();
    const half = events.length / 2;
    for (const e of events.slice(0, half)) runner.push(e);
    await store.writeStarted();
    // Folded while the first batch is written: these sessions end in the next batch, after the first one's write.
    for (const e of events.slice(half)) runner.push(e);
    release();
    await runner.caughtUp(events.at(-1)!.position);
    const written = [...store.docs.keys()].filter((k) => k.startsWith(`${SESSIONS}/`));
    expect(written).toHaveLength(sessions);
    expect(stateOf(runner).sessions.size).toBeLessThanOrEqual(RETAINED_ENDED);
  });
});

describe('projections restarted from their checkpoint', () => {
  const fold = async (store: SqliteReadModels, events: RecordedEvent[]) => {
    const runners = PROJECTIONS.map((p) => new ProjectionRunner(p, noLedger, store));
    for (const r of runners) await r.prepare();
    for (const e of events) for (const r of runners) r.push(e);
    for (const r of runners) await r.caughtUp(events.at(-1)!.position);
    for (const r of runners) await r.stop();
  };

  it('fold on to the documents one pass gives: what a restart reads back from the store is the state the rest of the ledger folds onto', async () => {
    const events = sessionCycles(60);
    const once = new SqliteReadModels(':memory:');
    await fold(once, events);
    const restarted = new SqliteReadModels(':memory:');
    // Cut after session 31's reservation: its wait and its machine's hold are documents the rest of the ledger reads.
    const cut = 3 + 8 * 30 + 3;
    await fold(restarted, events.slice(0, cut));
    await fold(restarted, events.slice(cut));
    expect(await documents(restarted)).toEqual(await documents(once));
    await once.close();
    await restarted.close();
  });
});
