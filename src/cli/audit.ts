import { type Command, InvalidArgumentError } from 'commander';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  type Row,
  allEvents,
  collect,
  type FileProblem,
  checkLedgerFile,
  unguardedTail,
  recordedHead,
  history,
  inWindow,
  jsonLine,
  openLedger,
  replay,
  rowsOf,
  rowProblems,
  whoHad,
  withoutTails,
} from '../audit/audit.js';
import { ChainCheck, LegacyRun } from '../audit/chain.js';
import { LedgerDigest } from '../audit/digest.js';
import { type Checkpoint, checkExtends, checkPublished, checkpointOf, keyId } from '../audit/checkpoint.js';
import { DEMO_CONFIG, dataDirOf, isEventStoreUrl, loadConfig } from '../config/config.js';
import { BACKUP_UNFINISHED, LEDGER_FILE } from '../adapters/eventstore/data-dir-lock.js';
import { RowNotAnEventError } from '../adapters/eventstore/sqlite-event-store.js';
import type { EventStore, RecordedEvent } from '../application/ports/event-store.port.js';
import { parseIsoTime } from '../domain/decide.js';
import { formatTable } from '../domain/text-table.js';
import { UsageError } from './client.js';
import { printable } from './printable.js';

// The server's own reading of a time (no offset is UTC): \`new Date\` took "1" for 2001 and an offset-less time in the host's TZ.
const time = (v: string) => {
  const ms = parseIsoTime(v);
  if (ms === undefined) throw new InvalidArgumentError(`not an ISO 8601 time (e.g. 2026-11-29T20:08:20Z; UTC without an offset): ${v}`);
  return new Date(ms);
};

/**
 * The ledger to read: --ledger, else DUFFY_EVENTSTORE, else the embedded file in DUFFY_DATA_DIR (./data). Never a
 * backup cut short: it may hold no events yet (verify would read every event removed) or all of them (an OK, a
 * checkpoint, a replay of a copy that was never checked).
 */
function ledgerOf(opts: { ledger?: string }): string {
  const ledger = opts.ledger ?? (process.env.DUFFY_EVENTSTORE || join(dataDirOf(), LEDGER_FILE));
  if (!isEventStoreUrl(ledger) && existsSync(join(dirname(ledger), BACKUP_UNFINISHED))) {
    throw new UsageError(`${ledger} is a backup cut short (${BACKUP_UNFINISHED} is beside it: its duffy backup was killed or is still running): not read; take another`);
  }
  return ledger;
}

const COLUMNS: Array<[keyof Row, string]> = [
  ['time', 'time'],
  ['position', 'pos'],
  ['event', 'event'],
  ['session', 'session'],
  ['tenant', 'tenant'],
  ['machine', 'machine'],
  ['actor', 'actor'],
  ['ended', 'session ended'],
  ['detail', 'detail'],
];

/** A checkpoint file; a usage error (printed, exit 2) when it is none: it is read in the action, where commander prints nothing. */
export function readCheckpoint(file: string): Checkpoint {
  let cp: Checkpoint;
  try {
    cp = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new UsageError(`cannot read checkpoint ${file}: ${(err as Error).message}`);
  }
  const valid =
    Number.isInteger(cp?.size) && cp.size >= 0 && typeof cp.rootHash === 'string' && /^[0-9a-f]{64}$/.test(cp.rootHash) &&
    // Its time dates what may follow it (the back-dating check): a checkpoint without one would skip that check.
    typeof cp.time === 'string' && ISO_TIME.test(cp.time) && !Number.isNaN(Date.parse(cp.time)) && /^[0-9]+$/.test(String(cp.lastPosition));
  if (!valid) {
    throw new UsageError(`${file} is not a checkpoint (size, lastPosition, rootHash, time)`);
  }
  return cp;
}

/** A checkpoint's time as Duffy writes it (UTC, ISO 8601): `Date.parse` alone takes "0" for the year 2000. */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/;

class UnreadableLedgerError extends Error {}

/** `fn` over the open ledger; a row that is not JSON, or an event without the fields its type has, is a rewritten row, which verify names. */
async function withStoreAt<T>(location: string, fn: (store: EventStore) => Promise<T>): Promise<T> {
  const store = await openLedger(location);
  try {
    return await fn(store);
  } catch (err) {
    // An event whose fields are not what its type has (a TypeError in the readers) may be hashed as it is: verify then says OK.
    if (err instanceof TypeError) {
      throw new UnreadableLedgerError(
        `${location} holds an event this command cannot read (${err.message}): verify names it if it was edited; with verify OK its hashes cover it as it is: ` +
          'forged with its chains recomputed past the last checkpoint (verify --checkpoint with one taken before shows it), or written so by a Duffy (report it)',
      );
    }
    if (err instanceof SyntaxError || err instanceof RowNotAnEventError) {
      const why = err instanceof RowNotAnEventError ? `position ${err.position}: ${err.why}` : err.message;
      throw new UnreadableLedgerError(`${location} holds a row that is not an event as Duffy writes it (${why}): \`duffy audit verify\` names it`);
    }
    throw err;
  } finally {
    await store.close();
  }
}

export interface Verification {
  problems: FileProblem[];
  /** What was checked and held. */
  verified: string[];
  /** What could not be checked (the newest events' deletion without a head record, past a checkpoint given if any). */
  unchecked: string[];
}

/**
 * One read of the ledger for verify: each event's stream chain checked as it passes, and what the other checks need
 * of it kept in a LedgerDigest (not the events: a ledger of millions would not fit). The events of the older format
 * are found first, in a read that stops where they end (at the first event of a ledger written since).
 */
async function digestLedger(store: EventStore) {
  const legacy = new LegacyRun();
  for await (const e of allEvents(store)) if (!legacy.add(e)) break;
  const chains = new ChainCheck(legacy.through);
  const digest = await LedgerDigest.read(allEvents(store), (e) => chains.add(e));
  return { legacyThrough: legacy.through, chains, digest };
}

/** `duffy audit verify`: the hash chains, the file against its writer's head, the signed checkpoints, and `cp` if given. */
export async function verifyLedger(location: string, cp?: { checkpoint: Checkpoint; file: string }): Promise<Verification> {
  const problems: FileProblem[] = [];
  const verified: string[] = [];
  const unchecked: string[] = [];
  const embedded = !isEventStoreUrl(location);
  // Before the events: the writer's head never leads what it committed.
  const head = embedded ? recordedHead(location) : null;
  let read: Awaited<ReturnType<typeof digestLedger>> | undefined;
  let emptied = false;
  try {
    read = await withStoreAt(location, digestLedger);
  } catch (err) {
    // A row that is not an event: name the rows, as any other tampering, instead of the parser's first complaint
    // (and never an OK over events that were not read).
    if (err instanceof UnreadableLedgerError) {
      const rows = embedded ? rowProblems(location) : [];
      problems.push(...(rows.length > 0 ? rows : [{ position: '-', where: 'events', problem: err.message }]));
    }
    // No events table where the writer recorded events: they were removed, which is tampering, not an unreadable file.
    else if (embedded && head && !('problem' in head) && head.position > 0n && /no such table: events/.test(String((err as Error).message))) {
      emptied = true;
      problems.push({
        position: String(head.position),
        where: 'writer head',
        problem: `the writer recorded events up to position ${head.position}, the file has no events table: every event was removed (the file replaced, or its write-ahead log ${location}-wal deleted before SQLite moved it into the file)`,
      });
    } else throw err;
  }
  const digest = read?.digest;
  const legacyThrough = read?.legacyThrough ?? 0n;
  const published = digest && checkPublished(digest, cp?.checkpoint.publicKey ? { publicKey: cp.checkpoint.publicKey, size: cp.checkpoint.size } : undefined);
  let metadataUnsigned: string | undefined;
  if (read) {
    for (const b of read.chains.breaks) problems.push({ position: String(b.position), where: `${b.stream}@${b.revision}`, problem: b.problem });
    // Their metadata is covered only by a signed checkpoint of them: until today's server signs one, say so.
    const signed = !!published && published.covered > 0 && read.digest.position(published.covered - 1) >= legacyThrough;
    verified.push(`${read.chains.checked} events in their stream chains${legacyThrough > 0n ? ` (positions 1..${legacyThrough} written by the Duffy of 2026-11-26, whose stream hashes cover each event's type and data, not its metadata${signed ? ', which a checkpoint signed after them covers' : ''})` : ''}`);
    if (legacyThrough > 0n && !signed) metadataUnsigned = `the metadata (actor, time) of positions 1..${legacyThrough}, written by the Duffy of 2026-11-26: no checkpoint in the ledger signs them yet`;
  }
  if (embedded && digest) problems.push(...rowProblems(location));
  const covered = { given: cp?.checkpoint.size, signed: digest && published?.covered ? { size: published.covered, position: digest.position(published.covered - 1) } : undefined };
  if (embedded && !emptied) {
    const file = await checkLedgerFile(location, head, digest ?? new LedgerDigest(), legacyThrough, covered);
    problems.push(...file.problems);
    // Without the events (a row that is none), the global chain was checked over nothing: claim none of it.
    if (digest) verified.push(...file.verified);
    unchecked.push(...file.unchecked);
  } else if (!embedded) {
    unchecked.push(unguardedTail('a KurrentDB ledger has no head record', covered));
  }
  if (metadataUnsigned) unchecked.push(metadataUnsigned);
  if (digest && published) {
    for (const p of published.problems) problems.push({ position: String(p.position), where: 'audit-checkpoints', problem: p.problem });
    if (published.checked) verified.push(`${published.checked} signed checkpoints in the ledger (key ${[...published.keys].join(', ')})`);
    if (cp) {
      const v = checkExtends(cp.checkpoint, digest);
      if (!v.ok) problems.push({ position: v.position ?? '-', where: `checkpoint ${cp.file}`, problem: v.message });
      else verified.push(`${v.message}${cp.checkpoint.publicKey ? `, signed by ${keyId(cp.checkpoint.publicKey)}` : ''}`);
    }
  }
  return { problems, verified, unchecked };
}

/** The one line `audit verify` ends with. */
export function verdict(v: Verification): string {
  const notChecked = v.unchecked.length ? ` (NOT CHECKED: ${v.unchecked.join('; ')})` : '';
  return v.problems.length === 0 ? `OK${notChecked}: ${v.verified.join('; ')}` : `TAMPERED: ${v.problems.length} problem(s)`;
}

/** `duffy audit ...`: read-only answers for auditors; tables for people, JSON lines with --json. */
export function auditCommands(duffy: Command, out: (line: string) => void): void {
  const json = () => duffy.opts().json === true;
  // Cells are ledger text a tenant may have written: control characters are shown escaped, never sent to the terminal.
  const table = (headers: string[], rows: string[][], left: number[] = []) => out(formatTable(headers, rows.map((r) => r.map(printable)), left));
  const audit = duffy.command('audit').description('read-only checks of a ledger, for auditors').option('--ledger <file|esdb-url>', 'ledger to read');
  const withStore = <T>(fn: (store: EventStore) => Promise<T>): Promise<T> => withStoreAt(ledgerOf(audit.opts()), fn);
  const withLedger = <T>(fn: (events: RecordedEvent[]) => T): Promise<T> => withStore(async (store) => fn(await collect(store)));
  const showEvents = (all: RecordedEvent[], shown: RecordedEvent[], verbose: boolean) => {
    if (json()) {
      for (const e of shown) out(jsonLine(verbose ? e : withoutTails(e)));
      return;
    }
    const rows = rowsOf(all, shown);
    // The detail reads as text: left-aligned.
    table(COLUMNS.map(([, h]) => h), rows.map((r) => COLUMNS.map(([k]) => r[k])), [COLUMNS.length - 1]);
    if (!verbose) return;
    // The playbook output tails, after the table: each under the event it belongs to.
    shown.forEach((e, i) => {
      const tail = (e.data as { run?: { tail?: string } }).run?.tail;
      if (!tail) return;
      out('');
      out(`position ${rows[i].position}, ${e.type} of ${rows[i].machine || e.stream}: the end of the playbook's output`);
      for (const line of tail.split('\n')) out(`    | ${printable(line)}`);
    });
  };

  audit
    .command('replay')
    .description('replay every event and report each broken invariant with the events that show it')
    .option('--config <file>', 'configuration whose tenant defaults apply until the ledger records its own (DefaultsSet; ledgers written before Duffy recorded them)', process.env.DUFFY_CONFIG ?? DEMO_CONFIG)
    .action(async (o: { config: string }, cmd: Command) => {
      // Commander gives a `--config` anywhere on the line to the root's `-c, --config` (the client configuration,
      // which no audit command reads): it was dropped and the replay judged by the default configuration.
      const root = duffy.opts<{ config?: string[] }>().config;
      const config = loadConfig(cmd.getOptionValueSource('config') === 'default' && root?.length ? root[root.length - 1] : o.config);
      const d = config.defaults;
      const { count, violations } = await withLedger((events) => ({
        count: events.length,
        violations: replay(events, { nodeQuota: d['node-quota'], sessionLifetime: d['session-lifetime'], sessionLifetimeMax: d['session-lifetime-max'] }, config.pools),
      }));
      if (json()) {
        for (const v of violations) out(JSON.stringify({ invariant: v.invariant, positions: v.positions.map(String), message: v.message }));
      } else {
        out(`replayed ${count} events`);
        if (violations.length) table(['invariant', 'positions', 'breach'], violations.map((v) => [String(v.invariant), v.positions.join(','), v.message]));
        out(violations.length === 0 ? 'OK: no invariant is broken' : `${violations.length} violation(s)`);
      }
      if (violations.length) process.exitCode = 1;
    });

  audit
    .command('verify')
    .description('recompute the hash chains and the signed checkpoints in the ledger; with --checkpoint, prove the ledger extends it')
    .option('--checkpoint <file>', 'a checkpoint taken earlier (duffy audit checkpoint, or GET /api/v1/audit/checkpoint)')
    .action(async (o: { checkpoint?: string }) => {
      const cp = o.checkpoint ? { checkpoint: readCheckpoint(o.checkpoint), file: o.checkpoint } : undefined;
      const v = await verifyLedger(ledgerOf(audit.opts()), cp);
      if (json()) {
        for (const p of v.problems) out(JSON.stringify(p));
        out(JSON.stringify({ ok: v.problems.length === 0, verified: v.verified, unchecked: v.unchecked }));
      } else {
        if (v.problems.length) table(['position', 'where', 'problem'], v.problems.map((p) => [p.position, p.where, p.problem]));
        out(verdict(v));
      }
      if (v.problems.length) process.exitCode = 1;
    });

  audit
    .command('checkpoint')
    .description("write the ledger's current Merkle tree head (RFC 9162) to a file, to verify the ledger against later")
    .requiredOption('--out <file>', 'where to write the checkpoint (JSON)')
    .action(async (o: { out: string }) => {
      const cp = await withStore(async (store) => checkpointOf(await LedgerDigest.read(allEvents(store)), new Date()));
      writeFileSync(o.out, JSON.stringify(cp) + '\n');
      const { leafPrints: _prints, ...head } = cp;
      out(json() ? JSON.stringify(head) : `checkpoint of ${cp.size} events (last position ${cp.lastPosition}) at ${cp.time}: root ${cp.rootHash} -> ${o.out}`);
    });

  audit
    .command('who-had <hostname>')
    .description('which session and tenant held a machine at a time, and how that session ended')
    .requiredOption('--at <time>', 'ISO 8601 time', time)
    .action(async (hostname: string, o: { at: Date }) => {
      const r = await withLedger((events) => whoHad(events, hostname, o.at));
      if (json()) return out(JSON.stringify(r ?? { hostname, at: o.at.toISOString(), sessionId: null }));
      if (!r) return out(`nobody held ${hostname} at ${o.at.toISOString()}`);
      table(
        ['machine', 'at', 'session', 'tenant', 'from', 'until', 'session ended'],
        [[r.hostname, o.at.toISOString(), String(r.sessionId), r.tenant ?? `#${r.tenantId}`, r.from, r.until ?? '-', r.ended ?? 'open']],
      );
    });

  audit
    .command('history <subject>')
    .description('events of session-<id>, machine-<hostname>, tenant-<name>, or the defaults, admins, api-keys, pools, ids-tenant, ids-machine or audit-checkpoints stream')
    .option('--verbose', 'with playbook output tails')
    .action(async (subject: string, o: { verbose?: boolean }) => {
      await withLedger((all) => showEvents(all, history(all, subject), o.verbose === true));
    });

  audit
    .command('export')
    .description('events in a time window as JSON lines, whole')
    .option('--from <time>', 'from (inclusive)', time)
    .option('--to <time>', 'to (exclusive)', time)
    .action(async (o: { from?: Date; to?: Date }) => {
      await withStore(async (store) => {
        for await (const e of allEvents(store)) if (inWindow(e, o.from, o.to)) out(jsonLine(e));
      });
    });
}
