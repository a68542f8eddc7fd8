import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import Database from 'better-sqlite3';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { checkLedgerFile, recordedHead } from '../../src/audit/audit.js';
import { GENESIS, eventHash, globalLink } from '../../src/audit/chain.js';
import { type KeyObject } from 'node:crypto';
import { eventLeaf, newSigningKey, privateKeyOf, signCheckpoint } from '../../src/audit/checkpoint.js';
import { CheckpointService, KEY_FILE } from '../../src/audit/checkpoint.service.js';
import { rootOf } from '../../src/audit/merkle.js';
import { APPEND_ONLY_TRIGGERS } from '../../src/adapters/eventstore/sqlite-event-store.js';
import { run } from '../../src/cli/main.js';
import { type Running, instantDemoConfig, ledgerFile, newTenant, startDuffy } from '../support/server.js';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { LedgerDigest } from '../../src/audit/digest.js';

const MAIN = fileURLToPath(new URL('../../dist/src/main.js', import.meta.url));

/** A row of the embedded ledger, parsed. */
interface Row {
  position: number;
  stream: string;
  revision: number;
  id: string;
  type: string;
  data: Record<string, unknown>;
  metadata: Record<string, unknown>;
  chain: string;
}

async function cli(...args: string[]): Promise<{ lines: string[]; exitCode: number }> {
  const lines: string[] = [];
  const exitCode = await run(['node', 'duffy', ...args], (l) => lines.push(...l.split('\n')));
  process.exitCode = 0;
  return { lines, exitCode };
}

/** What the CLI wrote to stderr while `fn` ran (its one-line errors). */
async function stderrOf(fn: () => Promise<void>): Promise<string[]> {
  const errors: string[] = [];
  const stderr = jest.spyOn(process.stderr, 'write').mockImplementation((text) => (errors.push(String(text)), true));
  try {
    await fn();
  } finally {
    stderr.mockRestore();
  }
  return errors;
}

const work = mkdtempSync(join(tmpdir(), 'duffy-tamper-'));
let copies = 0;

/** A copy of the ledger with the writer's head record beside it, as the server left it. */
function copyOf(original: string): string {
  const file = join(work, `copy-${++copies}.sqlite`);
  copyFileSync(original, file);
  copyLedger(`${original}.head`, `${file}.head`);
  return file;
}

/**
 * A SQL shell on `file`: the append-only triggers dropped, `edit` run, and (`careful`, the default) the triggers put
 * back as the store made them, as a tamperer who covers their tracks does.
 */
function shell(file: string, edit: (db: Database.Database) => void, careful = true): string {
  const db = new Database(file);
  db.exec('DROP TRIGGER IF EXISTS events_no_update; DROP TRIGGER IF EXISTS events_no_delete;');
  edit(db);
  if (careful) for (const sql of Object.values(APPEND_ONLY_TRIGGERS)) db.exec(sql);
  db.close();
  return file;
}

/** Raw SQL on a copy of `original`: what the row rewrites of `tampered` cannot write (a schema change, a bare 1e999). */
const sqlTampered = (original: string, sql: string, careful = true): string => shell(copyOf(original), (db) => db.exec(sql), careful);

/**
 * What anyone with a SQL shell on the file can do: drop the append-only triggers, then rewrite the rows.
 * `recompute`: 'streams' redoes the per-stream hashes (the format is public), 'all' the global chain too.
 */
function tampered(original: string, edit: (rows: Row[]) => Row[], recompute: 'none' | 'streams' | 'all' = 'none', resign?: KeyObject): string {
  return rewritten(copyOf(original), edit, recompute, resign);
}

/** As `tampered`, on `file` itself (also under a running server); `resign`: every CheckpointPublished signed again with this key. */
function rewritten(file: string, edit: (rows: Row[]) => Row[], recompute: 'none' | 'streams' | 'all', resign?: KeyObject): string {
  return shell(file, (db) => {
    db.pragma('busy_timeout = 5000');
    const rows = (db.prepare('SELECT * FROM events ORDER BY position').all() as Array<Record<string, unknown>>).map(
      (r) => ({ ...r, data: JSON.parse(String(r.data)), metadata: JSON.parse(String(r.metadata)) }) as Row,
    );
    const out = edit(rows);
    if (recompute !== 'none') {
      const heads = new Map<string, string>();
      let chain = GENESIS;
      const leaves: Buffer[] = [];
      for (const r of out) {
        if (resign && r.type === 'CheckpointPublished') {
          const size = Number(r.data.size);
          r.data = { ...signCheckpoint({ size, lastPosition: String(out[size - 1]?.position ?? 0), rootHash: rootOf(leaves, 0, size).toString('hex'), time: String(r.data.time) }, resign) };
        }
        const prev = heads.get(r.stream) ?? GENESIS;
        const metadata: Record<string, unknown> = { ...r.metadata, prevHash: prev };
        delete metadata.hash;
        r.metadata = { ...metadata, hash: eventHash(prev, { ...r, metadata }) };
        heads.set(r.stream, String(r.metadata.hash));
        if (recompute === 'all') r.chain = chain = globalLink(chain, BigInt(r.position), String(r.metadata.hash));
        leaves.push(eventLeaf({ ...r, position: BigInt(r.position) }));
      }
    }
    db.transaction(() => {
      db.exec('DELETE FROM events');
      const insert = db.prepare('INSERT INTO events (position, stream, revision, id, type, data, metadata, chain) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
      for (const r of out) insert.run(r.position, r.stream, r.revision, r.id, r.type, JSON.stringify(r.data), JSON.stringify(r.metadata), r.chain);
    })();
  });
}

/**
 * The careful tamperer's cover, after an edit: the writer's head record rewritten to the file's last row, and
 * (`counter`) SQLite's AUTOINCREMENT counter of `events` set back to it too.
 */
function covered(file: string, counter = false): string {
  const db = new Database(file);
  const last = db.prepare('SELECT position, chain FROM events ORDER BY position DESC LIMIT 1').get() as { position: number; chain: string };
  if (counter) db.prepare("UPDATE sqlite_sequence SET seq = ? WHERE name = 'events'").run(last.position);
  db.close();
  writeFileSync(`${file}.head`, JSON.stringify({ position: String(last.position), chain: last.chain }));
  return file;
}

function copyLedger(from: string, to: string): void {
  if (existsSync(from)) copyFileSync(from, to);
}

/** Positions 1..n in the new order, as an attacker who moves or inserts rows must renumber them. */
const renumber = (rows: Row[]) => rows.map((r, i) => ({ ...r, position: i + 1 }));
const pick = (rows: Row[], test: (r: Row) => boolean, what: string): Row => {
  const r = rows.find(test);
  if (!r) throw new Error(`fixture has no ${what}`);
  return r;
};
const lastOfStream = (rows: Row[], stream: string) => rows.filter((r) => r.stream === stream).at(-1)!;
/**
 * A forged SessionExtended appended at the end with valid hashes, claiming a time an hour before its session began
 * ('both' times, or the data's only), or ('unreadable') no time a reader can read.
 */
const forgedExtension = (ledger: string, backdated: 'both' | 'data' | 'unreadable'): string =>
  tampered(ledger, (rows) => {
    const started = pick(rows, (r) => r.type === 'SessionStarted', 'session start');
    const last = lastOfStream(rows, started.stream);
    const at = backdated === 'unreadable' ? 'yesterday' : new Date(Date.parse(String(started.data.at)) - 3600_000).toISOString();
    const forged: Row = {
      ...last,
      id: 'forged',
      position: rows.at(-1)!.position + 1,
      revision: last.revision + 1,
      type: 'SessionExtended',
      data: { sessionId: started.data.sessionId, expiresAt: '2099-01-01T00:00:00.000Z', at },
      metadata: { ...last.metadata, at: backdated === 'data' ? new Date().toISOString() : at },
    };
    return [...rows, forged];
  }, 'all');
const APPEND_ONLY_TRIGGERS_NEUTERED = Object.values(APPEND_ONLY_TRIGGERS)
  .map((sql) => `${sql.replace(/BEGIN .* END$/, 'BEGIN SELECT 1; END')};`)
  .join('\n');

describe('an auditor against a tamperer with the ledger file', () => {
  let duffy: Running;
  let ledger: string;
  let checkpointFile: string;
  let signedFile: string;
  let grownLedger: string;

  beforeAll(async () => {
    process.env.DUFFY_CHECKPOINT_EVERY_EVENTS = '25';
    duffy = await startDuffy();
    const carol = await newTenant(duffy, 'carol');
    const carolId = (await duffy.admin.get('/api/v1/tenants')).body.tenants.find((t: { name: string }) => t.name === 'carol').id;
    await carol.post('/api/v1/sessions', { nodes_specs: [{ type: 'vm', quantity: 1 }] });
    const alice = await newTenant(duffy, 'alice');
    const bob = await newTenant(duffy, 'bob');
    for (let i = 0; i < 3; i++) {
      const s = (await alice.post('/api/v1/sessions', { nodes_specs: [{ pool: 'metal-intel-x86_64', quantity: 2 }] })).body.session;
      await alice.put(`/api/v1/sessions/${s.id}`, { active: false });
    }
    const b = (await bob.post('/api/v1/sessions', { nodes_specs: [{ type: 'vm', quantity: 1 }] })).body.session;
    expect((await bob.put(`/api/v1/sessions/${b.id}`, { expires_at: '+1h' })).status).toBe(200);
    expect((await duffy.admin.put(`/api/v1/tenants/${carolId}`, { active: false })).status).toBe(200);
    await alice.post('/api/v1/sessions', { nodes_specs: [{ pool: 'metal-amd-x86_64', quantity: 1 }] });
    const head = await duffy.admin.get('/api/v1/audit/checkpoint');
    expect(head.status).toBe(200);
    signedFile = join(work, 'signed-checkpoint.json');
    writeFileSync(signedFile, JSON.stringify(head.body));
    await duffy.close();
    ledger = join(duffy.dataDir, 'ledger.sqlite');
    checkpointFile = join(work, 'checkpoint.json');
    expect((await cli('audit', '--ledger', ledger, 'checkpoint', '--out', checkpointFile)).exitCode).toBe(0);
    // The same ledger, grown by a later run of the server.
    const original = join(work, 'original.sqlite');
    copyLedger(ledger, original);
    copyLedger(`${ledger}.head`, `${original}.head`);
    const again = await startDuffy({ dataDir: duffy.dataDir });
    await again.admin.post('/api/v1/tenants', { name: 'dave', ssh_key: 'ssh-ed25519 AAAAC3Nza dave@ci' });
    await again.close();
    grownLedger = join(work, 'grown.sqlite');
    copyLedger(ledger, grownLedger);
    copyLedger(`${ledger}.head`, `${grownLedger}.head`);
    ledger = original;
  }, 60_000);

  afterAll(() => {
    delete process.env.DUFFY_CHECKPOINT_EVERY_EVENTS;
  });

  it('the clean ledger verifies: stream chains, the global chain and the signed checkpoints the server published', async () => {
    const r = await cli('audit', '--ledger', ledger, 'verify', '--checkpoint', checkpointFile);
    expect(r.exitCode).toBe(0);
    expect(r.lines.at(-1)).toMatch(/^OK: (\d+) events in their stream chains; \1 links of the global chain; the writer.s head at position \1; [1-9]\d* signed checkpoints in the ledger \(key sha256:[0-9a-f]{16}\); the ledger \(\1 events, root [0-9a-f]{64}\) extends the checkpoint of \1 events/);
  });

  it('the server keeps its signing key private and its checkpoint verifies, signature included', async () => {
    expect(statSync(join(duffy.dataDir, KEY_FILE)).mode & 0o777).toBe(0o600);
    const signed = JSON.parse(readFileSync(signedFile, 'utf8'));
    expect(signed).toMatchObject({ size: expect.any(Number), signature: expect.any(String), publicKey: expect.any(String) });
    expect((await cli('audit', '--ledger', ledger, 'verify', '--checkpoint', signedFile)).exitCode).toBe(0);
    const forged = join(work, 'forged-checkpoint.json');
    writeFileSync(forged, JSON.stringify({ ...signed, time: '2020-01-01T00:00:00.000Z' }));
    const r = await cli('audit', '--ledger', ledger, 'verify', '--checkpoint', forged);
    expect(r.exitCode).toBe(1);
    expect(r.lines.join('\n')).toMatch(/the checkpoint signature does not verify/);
  });

  it('a ledger that only grew after the checkpoint passes it', async () => {
    for (const cp of [checkpointFile, signedFile]) {
      const r = await cli('audit', '--ledger', grownLedger, 'verify', '--checkpoint', cp);
      expect(r.lines.at(-1)).toMatch(/^OK: .*extends the checkpoint/);
      expect(r.exitCode).toBe(0);
    }
  });

  /**
   * Each tampering, and whether plain `verify` (no checkpoint) must see it: all that keep the hashes do, and so do
   * rewrites of history before the writer's recorded head, and appends back-dated before a checkpoint the server
   * signed into the ledger; only an append with valid hashes and a time after that needs the auditor's checkpoint.
   */
  const tamperings: Array<{ name: string; plain: boolean; make: (ledger: string) => string; factsKept?: true; newest?: true }> = [
    { name: 'data edited (one byte of a MachineReserved)', plain: true, make: (l) => tampered(l, (rows) => (pick(rows, (r) => r.type === 'MachineReserved', 'reservation').data.tenantId = 99, rows)) },
    { name: 'type changed (SessionExtended -> SessionExpired)', plain: true, make: (l) => tampered(l, (rows) => ((pick(rows, (r) => r.type === 'SessionExtended', 'extension').type = 'SessionExpired'), rows)) },
    { name: 'metadata actor edited', plain: true, make: (l) => tampered(l, (rows) => ((pick(rows, (r) => r.type === 'SessionReleased', 'release').metadata.actor = 'bob'), rows)) },
    { name: 'metadata correlationId edited', plain: true, make: (l) => tampered(l, (rows) => ((pick(rows, (r) => r.type === 'MachineRequested', 'request').metadata.correlationId = 'nothing-to-see'), rows)) },
    { name: 'metadata at edited', plain: true, make: (l) => tampered(l, (rows) => ((pick(rows, (r) => r.type === 'MachineReleased', 'release').metadata.at = '2020-01-01T00:00:00.000Z'), rows)) },
    { name: 'IdAllocated edited', plain: true, make: (l) => tampered(l, (rows) => ((pick(rows, (r) => r.type === 'IdAllocated', 'id allocation').data.kind = 'tenant-x'), rows)) },
    { name: 'first event of the ledger edited', plain: true, make: (l) => tampered(l, (rows) => ((rows[0].data.at = '2020-01-01T00:00:00.000Z'), rows)) },
    {
      name: "a stream's last event deleted",
      plain: true,
      make: (l) => tampered(l, (rows) => {
        const victim = lastOfStream(rows, String(pick(rows, (r) => r.type === 'SessionReleased', 'release').stream));
        return rows.filter((r) => r !== victim);
      }),
    },
    {
      name: 'a whole session stream deleted',
      plain: true,
      make: (l) => tampered(l, (rows) => {
        const stream = pick(rows, (r) => r.type === 'SessionReleased', 'release').stream;
        return rows.filter((r) => r.stream !== stream);
      }),
    },
    {
      name: 'TenantRetired moved 23 positions earlier (each stream keeps its order)',
      plain: true,
      make: (l) => tampered(l, (rows) => {
        const i = rows.findIndex((r) => r.type === 'TenantRetired');
        const own = rows.findLastIndex((r, j) => j < i && r.stream === rows[i].stream);
        const to = Math.max(own + 1, i - 23);
        expect(i - to).toBeGreaterThanOrEqual(10);
        const moved = [...rows];
        const [retired] = moved.splice(i, 1);
        moved.splice(to, 0, retired);
        return renumber(moved);
      }),
    },
    {
      name: 'two events of one stream swapped',
      plain: true,
      make: (l) => tampered(l, (rows) => {
        const [a, b] = rows.filter((r) => r.stream === rows.find((x) => x.type === 'SessionReleased')!.stream);
        return rows.map((r) => (r === a ? { ...b, position: a.position } : r === b ? { ...a, position: b.position } : r));
      }),
    },
    { name: 'an event in the middle of a stream deleted', plain: true, make: (l) => tampered(l, (rows) => rows.filter((r) => r !== rows.filter((x) => x.stream.startsWith('machine-') && x.revision === 1)[0])) },
    // No fact changed (the column is derived): the chain check names it, the tree has nothing to show.
    { name: 'only the global chain column edited', plain: true, factsKept: true, make: (l) => tampered(l, (rows) => ((rows[5].chain = GENESIS), rows)) },
    { name: "data edited and that stream's hashes recomputed", plain: true, make: (l) => tampered(l, (rows) => ((pick(rows, (r) => r.type === 'MachineReserved', 'reservation').data.tenantId = 99), rows), 'streams') },
    { name: 'data edited early, every chain recomputed (the signed checkpoints in the ledger still show it)', plain: true, make: (l) => tampered(l, (rows) => ((pick(rows, (r) => r.type === 'MachineReserved', 'reservation').data.tenantId = 99), rows), 'all') },
    {
      name: "the server's signed checkpoints removed, history rewritten, every chain recomputed",
      plain: true,
      make: (l) => tampered(l, (rows) => {
        const kept = rows.filter((r) => r.type !== 'CheckpointPublished');
        pick(kept, (r) => r.type === 'MachineReserved', 'reservation').data.tenantId = 99;
        return renumber(kept);
      }, 'all'),
    },
    {
      name: 'a forged SessionExtended inserted into the session it extends, every chain recomputed, signed checkpoints removed',
      plain: true,
      make: (l) => tampered(l, (rows) => {
        const kept = rows.filter((r) => r.type !== 'CheckpointPublished');
        const started = pick(kept, (r) => r.type === 'SessionStarted', 'session start');
        const stream = kept.filter((r) => r.stream === started.stream);
        const forged: Row = { ...started, id: 'forged', type: 'SessionExtended', data: { sessionId: started.data.sessionId, expiresAt: '2099-01-01T00:00:00.000Z', at: started.data.at } };
        // It takes the place of the stream's next event; the later ones move up a revision.
        const next = stream.find((r) => r.revision === started.revision + 1)!;
        for (const r of stream) if (r.revision > started.revision) r.revision += 1;
        const out = [...kept];
        out.splice(out.indexOf(next), 0, { ...forged, revision: started.revision + 1 });
        return renumber(out);
      }, 'all'),
    },
    // The server's signed checkpoints in the ledger date what came after them, as the auditor's own does.
    { name: 'a forged, back-dated SessionExtended appended at the end with valid hashes', plain: true, make: (l) => forgedExtension(l, 'both') },
    // who-had and the replay read the data's time: the metadata's alone says nothing of what the event claims.
    { name: "a forged SessionExtended appended at the end, its data back-dated, its metadata's time left plausible", plain: true, make: (l) => forgedExtension(l, 'data') },
    // Date.parse reads no time in it: it escaped the back-dating check, and the replay's rules, as a time after every checkpoint.
    { name: 'a forged SessionExtended appended at the end with valid hashes, its times no times', plain: true, make: (l) => forgedExtension(l, 'unreadable') },
    { name: 'the newest event of the ledger deleted (truncation)', plain: true, newest: true, make: (l) => tampered(l, (rows) => rows.slice(0, -1)) },
    // SQLite's AUTOINCREMENT counter remembers the highest position ever written: the file itself says rows went.
    { name: "the newest 3 events deleted and the writer's head record rewritten to match", plain: true, newest: true, make: (l) => covered(tampered(l, (rows) => rows.slice(0, -3))) },
    // Without the column there is no global chain to check, and nothing to hold the writer's head against.
    { name: 'the global chain column dropped and the newest event deleted', plain: true, make: (l) => sqlTampered(l, 'DELETE FROM events WHERE position = (SELECT MAX(position) FROM events); ALTER TABLE events DROP COLUMN chain') },
    {
      // JSON.stringify writes Infinity as null: a hash over the parsed event did not see the change.
      name: "a tenant's null quota made 1e999 (read back as Infinity: no quota at all)",
      plain: true,
      make: (l) => sqlTampered(l, `UPDATE events SET data = replace(data, '"nodeQuota":null', '"nodeQuota":1e999') WHERE position = (SELECT MIN(position) FROM events WHERE type = 'TenantRegistered' AND data LIKE '%"nodeQuota":null%')`),
    },
    // No fact changed: what is gone is the guard against the next edit, which the store does not put back over a trigger of the same name.
    { name: 'the append-only triggers replaced by ones that let everything through', plain: true, factsKept: true, make: (l) => sqlTampered(l, APPEND_ONLY_TRIGGERS_NEUTERED, false) },
    { name: 'the append-only triggers dropped and left so', plain: true, factsKept: true, make: (l) => sqlTampered(l, 'SELECT 1', false) },
    {
      name: 'a trigger added that silently drops every later CheckpointPublished',
      plain: true,
      factsKept: true,
      make: (l) => sqlTampered(l, "CREATE TRIGGER events_quiet BEFORE INSERT ON events WHEN NEW.type = 'CheckpointPublished' BEGIN SELECT RAISE(IGNORE); END"),
    },
    {
      // SQLite stores the table's name as written and compares names without case: it fires on events all the same.
      name: 'a trigger added ON EVENTS (another case) that silently drops every later SessionExtended',
      plain: true,
      factsKept: true,
      make: (l) => sqlTampered(l, "CREATE TRIGGER zz BEFORE INSERT ON EVENTS WHEN NEW.type = 'SessionExtended' BEGIN SELECT RAISE(IGNORE); END"),
    },
    // JSON readers take a key's last value, SQLite's json_extract its first: the hashes cover what JSON readers see.
    {
      name: "a key written twice in one event's data (SQL reads the forged first one, the hashes the second)",
      plain: true,
      factsKept: true,
      make: (l) => sqlTampered(l, `UPDATE events SET data = replace(data, '{"machineId":', '{"machineId":99,"machineId":') WHERE position = (SELECT MIN(position) FROM events WHERE type = 'MachineReserved')`),
    },
    {
      // The same columns, without what the store's schema enforces: and with SQLite's counter gone, deleting the newest events leaves no trace in the file.
      name: 'the events table made again without AUTOINCREMENT, NOT NULL or UNIQUE, its rows copied over',
      plain: true,
      factsKept: true,
      make: (l) =>
        sqlTampered(
          l,
          'ALTER TABLE events RENAME TO old; CREATE TABLE events (position INTEGER PRIMARY KEY, stream, revision, id, type, data, metadata, chain); ' +
            'INSERT INTO events SELECT * FROM old; DROP TABLE old; DELETE FROM sqlite_sequence',
        ),
    },
    { name: 'a column added to the events table', plain: true, factsKept: true, make: (l) => sqlTampered(l, 'ALTER TABLE events ADD COLUMN note TEXT') },
    { name: "an index, a view and a table with a trigger of someone's added", plain: true, factsKept: true, make: (l) => sqlTampered(l, 'CREATE INDEX evx ON events(type); CREATE VIEW v AS SELECT * FROM events; CREATE TABLE junk(x); CREATE TRIGGER junk_t AFTER INSERT ON junk BEGIN SELECT 1; END') },
  ];

  it.each(tamperings.map((t) => [t.name, t] as const))('%s', async (_name, t) => {
    const copy = t.make(ledger);
    const plain = await cli('audit', '--ledger', copy, 'verify');
    expect({ caught: plain.exitCode !== 0, last: plain.lines.at(-1) }).toMatchObject({ caught: t.plain });
    const withCheckpoint = await cli('audit', '--ledger', copy, 'verify', '--checkpoint', checkpointFile);
    expect(withCheckpoint.exitCode).toBe(1);
    expect(withCheckpoint.lines.at(-1)).toMatch(/^TAMPERED/);
    // It says where: the first leaf that differs, or that the ledger is shorter, in the checkpoint's own line.
    if (!t.factsKept) expect(withCheckpoint.lines.join('\n')).toMatch(/checkpoint .*(leaf \d+ \(position \d+|ledger shorter than checkpoint|was appended after the checkpoint)/);
    // The server's checkpoint may not cover the newest event; the writer's head record beside the file does.
    expect((await cli('audit', '--ledger', copy, 'verify', '--checkpoint', signedFile)).exitCode).toBe(1);
  });

  it('beside a writer: rows committed after it read the events wait for the next run, they are not missing hashes', async () => {
    // The writer appended `dave` between the auditor's reads: head record first, then the events, then the file's rows.
    const head = recordedHead(ledger);
    const events = await ledgerFile(ledger);
    expect((await ledgerFile(grownLedger)).length).toBeGreaterThan(events.length);
    const r = await checkLedgerFile(grownLedger, head, LedgerDigest.of(events));
    expect(r).toEqual({ problems: [], verified: [`${events.length} links of the global chain`, `the writer's head at position ${events.length}`], unchecked: [] });
  });

  it('names a row that is no longer JSON, with its position, instead of failing on the parser; replay and export send the reader to verify', async () => {
    const copy = sqlTampered(ledger, "UPDATE events SET data = 'tenantId: 99' WHERE position = 7");
    const r = await cli('audit', '--ledger', copy, 'verify');
    expect(r.exitCode).toBe(1);
    expect(r.lines.join('\n')).toMatch(/^7 +\S+@\d+ +data is not JSON .*: the row was rewritten$/m);
    expect(r.lines.at(-1)).toBe('TAMPERED: 1 problem(s)');
    // The other commands read events and trust them: they send the reader to verify, as they do for an event of the wrong shape.
    const nulled = sqlTampered(ledger, "UPDATE events SET data = 'null' WHERE position = (SELECT MIN(position) FROM events WHERE type = 'MachineReserved')");
    const errors = await stderrOf(async () => {
      expect((await cli('audit', '--ledger', copy, 'replay')).exitCode).toBe(1);
      expect((await cli('audit', '--ledger', nulled, 'replay')).exitCode).toBe(1);
      expect((await cli('audit', '--ledger', copy, 'export')).exitCode).toBe(1);
    });
    const notJson = expect.stringMatching(new RegExp(`^duffy: ${copy} holds a row that is not an event as Duffy writes it \\(.*JSON.*\\): \`duffy audit verify\` names it\n$`));
    expect(errors).toEqual([
      notJson,
      expect.stringMatching(new RegExp(`^duffy: ${nulled} holds a row that is not an event as Duffy writes it \\(position \\d+: its data or metadata is not a JSON object\\): \`duffy audit verify\` names it\n$`)),
      notJson,
    ]);
  });

  it('names an event of a type Duffy does not write, or with no time, every chain and the head recomputed; a start refuses the first in one line', async () => {
    const renamed = covered(tampered(ledger, (rows) => ((pick(rows, (r) => r.type === 'SessionExtended', 'extension').type = 'FooBar'), rows), 'all'), true);
    const r = await cli('audit', '--ledger', renamed, 'verify');
    expect(r.exitCode).toBe(1);
    expect(r.lines.join('\n')).toMatch(/^\d+ +session-\d+@\d+ +type "FooBar" is not one Duffy writes: edited, or written by a newer Duffy$/m);
    const timeless = covered(tampered(ledger, (rows) => (delete pick(rows, (r) => r.type === 'SessionReleased', 'release').metadata.at, rows), 'all'), true);
    const t = await cli('audit', '--ledger', timeless, 'verify');
    expect(t.exitCode).toBe(1);
    expect(t.lines.join('\n')).toMatch(/^\d+ +session-\d+@\d+ +no time \(metadata\.at\), which Duffy writes on every event: forged or rewritten$/m);

    // The World would skip the unknown event, its stream's revisions would no longer add up, and every write to that
    // session would be refused as a conflict: the start stops, naming the event.
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-unknown-type-'));
    copyFileSync(renamed, join(dataDir, 'ledger.sqlite'));
    copyFileSync(`${renamed}.head`, join(dataDir, 'ledger.sqlite.head'));
    const start = spawnSync(process.execPath, [MAIN], { env: { ...process.env, DUFFY_DATA_DIR: dataDir, DUFFY_PORT: '0', DUFFY_CONFIG: instantDemoConfig(), NODE_OPTIONS: '' }, encoding: 'utf8', timeout: 60_000 });
    expect([start.status, start.stderr.trim().split('\n').at(-1)]).toEqual([1, expect.stringMatching(/^duffy: failed to start: the ledger holds an event of a type this Duffy does not know, "FooBar" at position \d+ \(session-\d+@\d+\): written by a newer Duffy \(run that one\), or edited/)]);
  });

  it('an event without what its type carries, its hashes recomputed past the last signed checkpoint and the head rewritten: replay does not send the reader to a verify that says OK', async () => {
    const retyped = covered(tampered(ledger, (rows) => ((rows.at(-1)!.type = 'TenantUpdated'), (rows.at(-1)!.data = { tenantId: 1, at: rows.at(-1)!.data.at }), rows), 'all'), true);
    expect((await cli('audit', '--ledger', retyped, 'verify')).lines.at(-1)).toMatch(/^OK: /);
    let exitCode = 0;
    const errors = await stderrOf(async () => void (exitCode = (await cli('audit', '--ledger', retyped, 'replay')).exitCode));
    expect(exitCode).toBe(1);
    // Before: "... `duffy audit verify` names it", which it does not: the hashes cover the event as it is.
    expect(errors.join('')).toMatch(/holds an event this command cannot read \(.*\): verify names it if it was edited; with verify OK its hashes cover it as it is: forged with its chains recomputed past the last checkpoint \(verify --checkpoint with one taken before shows it\), or written so by a Duffy \(report it\)\n$/);
  });

  it.each(['null', '42', '"s"', 'true', '[1]'])('names a row whose data is the JSON value %s, not an object: never an OK over events it could not read', async (value) => {
    for (const column of ['data', 'metadata']) {
      const copy = sqlTampered(ledger, `UPDATE events SET ${column} = '${value.replace(/'/g, "''")}' WHERE position = 2`);
      for (const args of [[], ['--checkpoint', checkpointFile], ['--checkpoint', signedFile]]) {
        const r = await cli('audit', '--ledger', copy, 'verify', ...args);
        expect({ column, args, exit: r.exitCode, last: r.lines.at(-1) }).toMatchObject({ exit: 1, last: expect.stringMatching(/^TAMPERED/) });
        expect(r.lines.join('\n')).toMatch(new RegExp(`^2 +\\S+@\\d+ +${column} is not a JSON object .*: the row was rewritten$`, 'm'));
      }
    }
  });

  it("says when it could not check for deleted newest events (no writer's head record), and reports a head record it cannot read", async () => {
    // SQLite's counter set back too: nothing in the file is left to tell.
    const copy = covered(tampered(ledger, (rows) => rows.slice(0, -1)), true);
    rmSync(`${copy}.head`);
    const r = await cli('audit', '--ledger', copy, 'verify');
    expect(r.exitCode).toBe(0);
    expect(r.lines.at(-1)).toMatch(/^OK \(NOT CHECKED: deletion of the newest events or a rewrite, its chains recomputed, of any after position \d+, the last a signed checkpoint in the ledger covers \(no writer's head record .*\.head; give --checkpoint\)\): /);
    const asJson = await cli('--json', 'audit', '--ledger', copy, 'verify');
    expect(JSON.parse(asJson.lines.at(-1)!)).toMatchObject({ ok: true, unchecked: [expect.stringMatching(/^deletion of the newest events/)] });
    // A checkpoint taken before covers it.
    expect((await cli('audit', '--ledger', copy, 'verify', '--checkpoint', checkpointFile)).exitCode).toBe(1);
    // One taken after covers only the events it counts: the OK still says what it could not check.
    const after = join(dirname(copy), 'after.json');
    expect((await cli('audit', '--ledger', copy, 'checkpoint', '--out', after)).exitCode).toBe(0);
    const size = JSON.parse(readFileSync(after, 'utf8')).size as number;
    const withAfter = await cli('audit', '--ledger', copy, 'verify', '--checkpoint', after);
    expect([withAfter.exitCode, withAfter.lines.at(-1)]).toEqual([0, expect.stringMatching(new RegExp(`^OK \\(NOT CHECKED: deletion or a rewrite, its chains recomputed, of events after the checkpoint's ${size} \\(no writer's head record .*\\.head\\)\\): `))]);
    writeFileSync(`${copy}.head`, '{"position": "x"}');
    const garbled = await cli('audit', '--ledger', copy, 'verify');
    expect(garbled.exitCode).toBe(1);
    expect(garbled.lines.join('\n')).toMatch(/writer head .*\.head cannot be read \(not \{position, chain\}\): the writer's record was altered/);
  });

  it("without the writer's head record, an OK says that events past the last signed checkpoint may have been rewritten, not only deleted", async () => {
    const rows = await ledgerFile(ledger);
    const lastSigned = rows.findLast((e) => e.type === 'CheckpointPublished')!;
    const size = Number((lastSigned.data as { size: number }).size);
    // The fixture's newest event stands past what that checkpoint covers: a rewrite of it, chains recomputed, shows nowhere.
    expect(rows.length).toBeGreaterThan(size);
    const covers = String(rows[size - 1].position);
    const edit = (all: Row[]) => ((all.at(-1)!.metadata.correlationId = 'rewritten'), all);
    const tail = tampered(ledger, edit, 'all');
    rmSync(`${tail}.head`);
    const r = await cli('audit', '--ledger', tail, 'verify');
    expect(r.exitCode).toBe(0);
    expect(r.lines.at(-1)).toMatch(new RegExp(`^OK \\(NOT CHECKED: deletion of the newest events or a rewrite, its chains recomputed, of any after position ${covers}, the last a signed checkpoint in the ledger covers \\(no writer's head record .*\\.head; give --checkpoint\\)\\): `));
    // No signed checkpoint in the ledger: any event may have been rewritten.
    // (SQLite's counter set back to the renumbered end.)
    const all = covered(tampered(ledger, (rows) => edit(renumber(rows.filter((r) => r.type !== 'CheckpointPublished'))), 'all'), true);
    rmSync(`${all}.head`);
    expect((await cli('audit', '--ledger', all, 'verify')).lines.at(-1)).toMatch(/^OK \(NOT CHECKED: deletion of the newest events or a rewrite of any event, its chains recomputed \(no writer's head record .*\.head; give --checkpoint\)\): /);
    // An auditor's checkpoint covers the events it counts, and no more.
    expect((await cli('audit', '--ledger', tail, 'verify', '--checkpoint', checkpointFile)).exitCode).toBe(1);
  });

  it("a truncation covered everywhere in the data dir (head record and SQLite's counter rewritten) is a consistent older ledger: only a checkpoint taken before shows it", async () => {
    const copy = covered(tampered(ledger, (rows) => rows.slice(0, -3)), true);
    const plain = await cli('audit', '--ledger', copy, 'verify');
    expect({ exitCode: plain.exitCode, last: plain.lines.at(-1) }).toEqual({ exitCode: 0, last: expect.stringMatching(/^OK: /) });
    const r = await cli('audit', '--ledger', copy, 'verify', '--checkpoint', checkpointFile);
    expect(r.exitCode).toBe(1);
    expect(r.lines.join('\n')).toMatch(/ledger shorter than checkpoint/);
  });

  it('with every chain recomputed, plain verify says between which positions the signed checkpoints in the ledger stop holding', async () => {
    let edited = 0;
    const copy = tampered(ledger, (rows) => {
      const r = rows.filter((x) => x.type === 'MachineReserved')[3];
      r.data.tenantId = 99;
      edited = r.position;
      return rows;
    }, 'all');
    const r = await cli('audit', '--ledger', copy, 'verify');
    expect(r.exitCode).toBe(1);
    const ranges = r.lines.flatMap((l) => {
      const m = /the first (\d+) events are not the ones the server signed; (?:the first \d+ are: )?an event at positions (\d+)\.\.(\d+) was changed/.exec(l);
      return m ? [[Number(m[2]), Number(m[3])]] : [];
    });
    expect(ranges.length).toBeGreaterThan(0);
    for (const [from, to] of ranges) expect({ edited, from, to, holds: from <= edited && edited <= to }).toMatchObject({ holds: true });
    // The narrowest names no earlier position than the checkpoints that still hold allow.
    expect(Math.max(...ranges.map(([from]) => from))).toBeGreaterThan(1);
  });

  it('events removed before a signed checkpoint, every chain recomputed, the head rewritten: the checkpoint says events before it were removed', async () => {
    const copy = covered(tampered(ledger, (rows) => {
      const last = rows.findLastIndex((r) => r.type === 'CheckpointPublished');
      // Three it signed, and whatever came between them and its own append (the checkpoint is appended a little later).
      const signed = Number(rows[last].data.size);
      return renumber(rows.filter((_r, i) => i < signed - 3 || i >= last));
    }, 'all'));
    const r = await cli('audit', '--ledger', copy, 'verify');
    expect(r.exitCode).toBe(1);
    expect(r.lines.join('\n')).toMatch(/^\d+ +audit-checkpoints +the server signed \d+ events before this checkpoint, the ledger has \d+: events before it were removed$/m);
  });

  it("history rewritten and every checkpoint in the ledger signed again with another key: the auditor's checkpoint names the changed event, not only the first checkpoint signed again", async () => {
    let edited = 0;
    const copy = covered(tampered(ledger, (rows) => {
      // Soon after the first checkpoint, so it is among the leaves named.
      const first = rows.findIndex((x) => x.type === 'CheckpointPublished');
      const r = pick(rows.slice(first), (x) => x.type === 'MachineReserved', 'reservation after a checkpoint');
      r.data.tenantId = 99;
      edited = r.position;
      return rows;
    }, 'all', privateKeyOf(newSigningKey().privatePem)));
    // The key is named, and nothing in the file alone shows the rewrite.
    const plain = await cli('audit', '--ledger', copy, 'verify');
    expect({ exitCode: plain.exitCode, last: plain.lines.at(-1) }).toEqual({ exitCode: 0, last: expect.stringMatching(/^OK: .*signed checkpoints in the ledger \(key sha256:/) });
    const r = await cli('audit', '--ledger', copy, 'verify', '--checkpoint', checkpointFile);
    expect(r.exitCode).toBe(1);
    const text = r.lines.join('\n');
    expect(text).toMatch(/leaf \d+ \(position \d+, audit-checkpoints@0\) differs from the checkpoint: the covered prefix was changed; also leaves /);
    expect(text).toContain(`(position ${edited}, machine-`);
    // The server's own checkpoint (no leaf prints to point with) shows the rewrite of what it signed; the made-up
    // key's checkpoints inside it are judged by the ledger they match, not refused for their key alone.
    const signed = await cli('audit', '--ledger', copy, 'verify', '--checkpoint', signedFile);
    expect({ exitCode: signed.exitCode, last: signed.lines.at(-1) }).toEqual({ exitCode: 1, last: 'TAMPERED: 1 problem(s)' });
    expect(signed.lines.join('\n')).toMatch(/signed-checkpoint\.json +the first \d+ events are not the ones the checkpoint saw \(root hash differs\)/);
  });

  it("an emptied ledger (its write-ahead log deleted before SQLite moved it into the file: no events table) beside the writer's head record is named as events removed", async () => {
    const copy = copyOf(ledger);
    writeFileSync(copy, '');
    const r = await cli('audit', '--ledger', copy, 'verify');
    expect(r.exitCode).toBe(1);
    expect(r.lines.join('\n')).toMatch(/^\d+ +writer head +the writer recorded events up to position \d+, the file has no events table: every event was removed \(the file replaced, or its write-ahead log .*-wal deleted before SQLite moved it into the file\)$/m);
    expect(r.lines.at(-1)).toBe('TAMPERED: 1 problem(s)');
  });

  it('names a file that is no ledger, and says why it refuses a checkpoint of negative size', async () => {
    const empty = join(work, 'empty.sqlite');
    writeFileSync(empty, '');
    const junk = join(work, 'junk.sqlite');
    writeFileSync(junk, 'not a database '.repeat(100));
    const negative = join(work, 'negative-checkpoint.json');
    writeFileSync(negative, JSON.stringify({ size: -1, lastPosition: '0', rootHash: '0'.repeat(64), time: new Date().toISOString() }));
    // Without its time (or with one Date.parse reads as the year 2000) the back-dating check would be skipped: refused too.
    const timeless = join(work, 'timeless-checkpoint.json');
    writeFileSync(timeless, JSON.stringify({ size: 1, lastPosition: '1', rootHash: '0'.repeat(64) }));
    const zero = join(work, 'zero-time-checkpoint.json');
    writeFileSync(zero, JSON.stringify({ size: 1, lastPosition: '1', rootHash: '0'.repeat(64), time: '0' }));
    const errors = await stderrOf(async () => {
      expect((await cli('audit', '--ledger', empty, 'verify')).exitCode).toBe(1);
      expect((await cli('audit', '--ledger', junk, 'verify')).exitCode).toBe(1);
      expect((await cli('audit', '--ledger', ledger, 'verify', '--checkpoint', negative)).exitCode).toBe(2);
      expect((await cli('audit', '--ledger', ledger, 'verify', '--checkpoint', timeless)).exitCode).toBe(2);
      expect((await cli('audit', '--ledger', ledger, 'verify', '--checkpoint', zero)).exitCode).toBe(2);
    });
    expect(errors).toEqual([
      `duffy: ${empty} is not a readable Duffy ledger: no such table: events\n`,
      `duffy: ${junk} is not a readable Duffy ledger: file is not a database\n`,
      `duffy: ${negative} is not a checkpoint (size, lastPosition, rootHash, time)\n`,
      `duffy: ${timeless} is not a checkpoint (size, lastPosition, rootHash, time)\n`,
      `duffy: ${zero} is not a checkpoint (size, lastPosition, rootHash, time)\n`,
    ]);
  });

  it('is a list of 32 kinds, as the README counts them (it said 27 when there were 26)', () => {
    expect(tamperings).toHaveLength(32);
  });

  it('catches an edit of one event of every type', async () => {
    const types = new Set((new Database(ledger, { readonly: true }).prepare('SELECT DISTINCT type FROM events').all() as Array<{ type: string }>).map((r) => r.type));
    expect(types).toEqual(expect.objectContaining({ size: expect.any(Number) }));
    expect([...types]).toEqual(expect.arrayContaining(['TenantRegistered', 'MachineRegistered', 'MachineReserved', 'SessionReleased', 'CheckpointPublished', 'TenantRetired', 'SessionExtended']));
    for (const type of types) {
      const copy = tampered(ledger, (rows) => ((pick(rows, (r) => r.type === type, type).data.tampered = true), rows));
      const r = await cli('audit', '--ledger', copy, 'verify');
      expect({ type, exitCode: r.exitCode }).toEqual({ type, exitCode: 1 });
    }
  });
});

describe('a tamperer who edits the file under the running server', () => {
  it('is caught by plain verify: the server goes on from what it holds, so its next event breaks the global chain and its next signed checkpoint does not match', async () => {
    const duffy = await startDuffy();
    const file = join(duffy.dataDir, 'ledger.sqlite');
    let edited = 0;
    try {
      const erin = await newTenant(duffy, 'erin');
      expect((await erin.post('/api/v1/sessions', { nodes_specs: [{ type: 'vm', quantity: 1 }] })).status).toBe(201);
      // Every chain recomputed and the head record rewritten: the file alone is consistent again.
      covered(rewritten(file, (rows) => {
        const r = pick(rows, (x) => x.type === 'MachineReserved', 'reservation');
        r.data.tenantId = 99;
        edited = r.position;
        return rows;
      }, 'all'));
      expect((await cli('audit', '--ledger', file, 'verify')).exitCode).toBe(0);
      expect((await duffy.admin.post('/api/v1/tenants', { name: 'frank', ssh_key: 'ssh-ed25519 AAAAC3Nza frank@ci' })).status).toBe(201);
      await duffy.app.get(CheckpointService).publish();
    } finally {
      await duffy.close();
    }
    const r = await cli('audit', '--ledger', file, 'verify');
    expect(r.exitCode).toBe(1);
    const text = r.lines.join('\n');
    expect(text).toMatch(/^\d+ +global chain +global chain broken/m);
    expect(text).toMatch(new RegExp(`audit-checkpoints +the first \\d+ events are not the ones the server signed; an event at positions 1\\.\\.\\d+ was changed`));
    expect(edited).toBeGreaterThan(0);
  }, 60_000);
});
