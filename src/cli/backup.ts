import Database from 'better-sqlite3';
import type { Command } from 'commander';
import { randomUUID } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { BACKUP_UNFINISHED, LEDGER_FILE, READ_MODELS_FILE, RESTORE_UNFINISHED, headFileOf, lockDataDir, syncToDisk } from '../adapters/eventstore/data-dir-lock.js';
import { makeDirs, whyNotMade } from '../adapters/make-dirs.js';
import { isLegacyLedger } from '../adapters/eventstore/legacy-ledger.js';
import { KEY_FILE } from '../audit/checkpoint.service.js';
import { NotFoundError } from '../audit/not-found.js';
import { storageFault } from '../application/ports/storage-fault.port.js';
import { dataDirOf } from '../config/config.js';
import { verdict, verifyLedger } from './audit.js';
import { offline } from './recover.js';
import { UsageError } from './client.js';
import { SqliteEventStore, assertLedgerReadable } from '../adapters/eventstore/sqlite-event-store.js';
import { decideRecordRestore } from '../domain/decide-restore.js';
import { type LostHours, stream } from '../domain/events.js';
import { machineIdOfHost } from '../domain/world.js';

// A backup that a power cut can take back is none: every file and directory it writes is synced (syncToDisk).
const HEAD_FILE = headFileOf(LEDGER_FILE);
/** In a backup's directory until it is whole and verified: one cut short (killed, a power cut) says so. */

/**
 * How the ledger a restore replaces and the backup compare: the last position both hold alike (`sharedUpTo`) and, when
 * they differ before either ends, where (`disagreement`). The global chain link at a position covers every event up to
 * it, so two histories agree up to some position and differ from the next one on. Undefined when there is nothing
 * to compare (no ledger, one that cannot be read, or one without the chain: a restore is how a damaged ledger is
 * mended).
 */
function compareHistories(current: string, backup: string): { sharedUpTo: bigint; disagreement?: string } | undefined {
  if (!existsSync(current)) return undefined;
  let mine: Database.Database | undefined;
  let theirs: Database.Database | undefined;
  try {
    [mine, theirs] = [new Database(current, { readonly: true, fileMustExist: true }), new Database(backup, { readonly: true, fileMustExist: true })];
    const last = (db: Database.Database) => db.prepare('SELECT position FROM events ORDER BY position DESC LIMIT 1').safeIntegers(true).pluck().get() as bigint | undefined;
    const [a, b] = [last(mine) ?? 0n, last(theirs) ?? 0n];
    const both = a < b ? a : b;
    if (both === 0n) return { sharedUpTo: 0n };
    const linkStatement = (db: Database.Database) => db.prepare('SELECT chain FROM events WHERE position = ?').pluck();
    const [myLink, theirLink] = [linkStatement(mine), linkStatement(theirs)];
    const linksAt = (p: bigint) => [myLink.get(p), theirLink.get(p)] as Array<string | null | undefined>;
    const same = (p: bigint) => {
      const [x, y] = linksAt(p);
      return x != null && x === y;
    };
    const [x, y] = linksAt(both);
    if (x == null || y == null) return undefined;
    if (x === y) return { sharedUpTo: both };
    // The last position both agree at (0: none), found by halving.
    let [agree, differ] = [0n, both];
    while (differ - agree > 1n) {
      const mid = (agree + differ) / 2n;
      if (same(mid)) agree = mid;
      else differ = mid;
    }
    return { sharedUpTo: agree, disagreement: agree === 0n ? 'their first events already differ' : `they are the same up to position ${agree} and differ from ${differ} on` };
  } catch {
    return undefined;
  } finally {
    mine?.close();
    theirs?.close();
  }
}

/** What the ledger a restore replaces holds after `sharedUpTo` (the hours the restore undoes), or undefined if it cannot be read. */
function lostHoursIn(current: string, sharedUpTo: bigint): Omit<LostHours, 'backup' | 'replacedKeptIn'> | undefined {
  let db: Database.Database | undefined;
  try {
    db = new Database(current, { readonly: true, fileMustExist: true });
    // Every id it gave, not only those after the shared part: another history's clients hold ids of theirs too.
    let sessionIdsUpTo = Number(db.prepare("SELECT max(CAST(substr(stream, 9) AS INTEGER)) FROM events WHERE stream GLOB 'session-[0-9]*'").pluck().get() ?? 0);
    let lostSessions = Number(db.prepare("SELECT count(*) FROM events WHERE position > ? AND type = 'MachineRequested'").pluck().get(sharedUpTo));
    // Its service streams too (stream.service, as long a prefix): a machine retired or put in maintenance in those
    // hours is in service in the backup, and would be handed out. A machine those hours only registered was not used
    // (a new host started once to try it registers every machine: they all went to maintenance).
    const machines = new Set(
      db.prepare("SELECT DISTINCT substr(stream, 9) FROM events WHERE position > ? AND ((stream GLOB 'machine-*' AND type != 'MachineRegistered') OR stream GLOB 'service-*')").pluck().all(sharedUpTo) as string[],
    );
    // A ledger restored before holds the hours that restore undid only in its LedgerRestored events: undone again
    // (a second restore, an older backup), they are carried on, or their ids would be given again and their machines
    // handed out.
    const restores = db.prepare("SELECT position > ?, data FROM events WHERE stream = ? AND type = 'LedgerRestored'").raw().all(sharedUpTo, stream.restores) as Array<[number, string]>;
    for (const [undone, data] of restores) {
      const earlier = JSON.parse(data) as LostHours;
      sessionIdsUpTo = Math.max(sessionIdsUpTo, earlier.sessionIdsUpTo);
      if (!undone) continue;
      lostSessions += earlier.lostSessions;
      for (const h of earlier.machines) machines.add(h);
    }
    return { sharedUpTo: String(sharedUpTo), sessionIdsUpTo, lostSessions, machines: [...machines].sort() };
  } catch {
    return undefined;
  } finally {
    db?.close();
  }
}

/**
 * Appends what a restore undoes (LedgerRestored, maintenance for the machines used since) to the restored ledger
 * `file`, and says it in a line; undefined when the restore undoes nothing.
 */
async function recordLostHours(file: string, lost: LostHours): Promise<string | undefined> {
  const actor = 'duffy restore (offline)';
  const said = await offline(new SqliteEventStore(file), async (ledger) => {
    // The ledger's clock, not the host's: one set back would date these before the backup's signed checkpoint (back-dated to verify).
    const now = ledger.clock.now();
    const written = await ledger.decide((world, inFlight) => decideRecordRestore(world, lost, actor, now, inFlight), { actor, correlationId: randomUUID(), at: now });
    if (!written) return undefined;
    const machineOf = (hostname: string) => ledger.world.machines.get(machineIdOfHost(ledger.world, hostname) ?? -1);
    const resting = lost.machines.filter((h) => machineOf(h)?.service === 'maintenance');
    const unknown = lost.machines.filter((h) => machineOf(h) === undefined);
    return (
      `undone: what the replaced ledger holds after position ${lost.sharedUpTo}: ${lost.lostSessions} session(s)` +
      (lost.sessionIdsUpTo > 0 ? `, and new sessions are numbered from ${ledger.world.lastSessionId + 1} on (ids up to ${lost.sessionIdsUpTo} were given: a job's \`duffy done\` of then ends none of them)` : '') +
      (resting.length > 0 ? `; in maintenance, as they may hold a tenant's key or half a playbook's work, until wiped and put back (PUT /api/v1/nodes/{id} {"maintenance": false}): ${resting.join(', ')}` : '') +
      (unknown.length > 0 ? `; registered after the backup, unknown to this ledger, in maintenance too once a start registers them again (the configuration lists them): ${unknown.join(', ')}` : '') +
      ' (recorded in the restored ledger: `duffy audit history restores`)'
    );
  });
  // Closed, the store has folded its WAL into the file: a -wal left beside it would be lost in the rename.
  if (existsSync(`${file}-wal`)) throw new Error(`${file}-wal is still there after the restore's append: nothing restored`);
  return said;
}

function copyDurably(from: string, to: string): void {
  copyFileSync(from, to);
  syncToDisk(to);
}

/**
 * A consistent copy of `ledger` in `to`: one read transaction (`VACUUM INTO`), its WAL included as SQLite reads it,
 * whatever a server commits meanwhile (the backup API would start over at each of its commits).
 */
function snapshot(ledger: string, to: string): void {
  const db = new Database(ledger, { readonly: true, fileMustExist: true });
  try {
    db.prepare('VACUUM INTO ?').run(to);
  } finally {
    db.close();
  }
  syncToDisk(to);
}

const embeddedOnly = () => {
  if (process.env.DUFFY_EVENTSTORE) throw new UsageError("DUFFY_EVENTSTORE is set: a KurrentDB ledger is backed up and restored with KurrentDB's own tools");
};

/**
 * `duffy backup <dir>` and `duffy restore <dir>`: the embedded ledger's backup and restore as the README describes
 * them, without the steps an operator can get wrong (the head record first, the WAL, a server still stopping).
 */
export function backupCommands(duffy: Command, out: (line: string) => void): void {
  duffy
    .command('backup')
    .description('a consistent copy of the embedded ledger, its head record and the signing key, while Duffy runs or not; the copy is verified')
    .argument('<dir>', 'a new or empty directory for the copy')
    .option('--data-dir <dir>', 'the data directory (DUFFY_DATA_DIR, default ./data)')
    .action(async (dir: string, o: { dataDir?: string }) => {
      embeddedOnly();
      const dataDir = o.dataDir !== undefined ? resolve(o.dataDir) : dataDirOf();
      const ledger = join(dataDir, LEDGER_FILE);
      if (!existsSync(ledger)) throw new NotFoundError(`no ledger at ${ledger} (give the data directory with --data-dir or DUFFY_DATA_DIR)`);
      assertLedgerReadable(ledger, isLegacyLedger(ledger));
      const to = resolve(dir);
      if (existsSync(to) && !statSync(to).isDirectory()) throw new UsageError(`${to} is a file: a backup goes into a new or empty directory`);
      try {
        makeDirs(to, 0o700);
      } catch (err) {
        throw new Error(`the backup directory ${to} cannot be created (${whyNotMade(err)}): give a new or empty directory where this user can write`);
      }
      if (readdirSync(to).length > 0) throw new UsageError(`${to} is not empty: a backup never writes over another`);
      try {
        writeFileSync(join(to, BACKUP_UNFINISHED), 'duffy backup has not finished this copy (killed, or still running): take another\n');
        syncToDisk(join(to, BACKUP_UNFINISHED));
        // The head record first: the copy may then be ahead of its head, never behind it (which verify calls deleted events).
        if (existsSync(join(dataDir, HEAD_FILE))) copyDurably(join(dataDir, HEAD_FILE), join(to, HEAD_FILE));
        snapshot(ledger, join(to, LEDGER_FILE));
        if (existsSync(join(dataDir, KEY_FILE))) copyDurably(join(dataDir, KEY_FILE), join(to, KEY_FILE));
        // The whole history and the tenants' keys: the owner's alone, also once the copy leaves its 0700 directory.
        for (const name of readdirSync(to)) chmodSync(join(to, name), 0o600);
        syncToDisk(to);
      } catch (err) {
        // A copy cut short (its disk full) is no backup: removed, so the same command can be run again once there is room.
        for (const name of readdirSync(to)) rmSync(join(to, name), { force: true, recursive: true });
        const fault = storageFault(err);
        throw fault ? new Error(`the backup could not be written in ${to}: ${fault.what} (${fault.code}); nothing of it is left there, ${fault.fix} and run it again`) : err;
      }
      const v = await verifyLedger(join(to, LEDGER_FILE));
      rmSync(join(to, BACKUP_UNFINISHED));
      syncToDisk(to);
      out(`backup of ${ledger} in ${to}: ${readdirSync(to).sort().join(', ')}`);
      out(verdict(v));
      if (v.problems.length > 0) {
        out('the copy does not verify: the ledger it was taken from does not either (`duffy audit verify` names what)');
        process.exitCode = 1;
      }
    });

  duffy
    .command('restore')
    .description("put a backup's ledger back into a data directory whose Duffy is stopped; what it replaces is kept aside")
    .argument('<dir>', 'a directory made by `duffy backup`')
    .option('--data-dir <dir>', 'the data directory (DUFFY_DATA_DIR, default ./data)')
    .action(async (dir: string, o: { dataDir?: string }) => {
      embeddedOnly();
      const from = resolve(dir);
      const dataDir = o.dataDir !== undefined ? resolve(o.dataDir) : dataDirOf();
      if (!existsSync(join(from, LEDGER_FILE))) throw new NotFoundError(`no backup in ${from} (no ${LEDGER_FILE})`);
      if (existsSync(join(from, BACKUP_UNFINISHED))) throw new UsageError(`the backup in ${from} was cut short (${BACKUP_UNFINISHED} is there: its duffy backup was killed or is still running): nothing restored; take another`);
      // Held while files move: a Duffy still running or stopping refuses this, and none starts meanwhile.
      const lock = lockDataDir(dataDir, 'Stop that Duffy first: a restore replaces its ledger');
      try {
        // What is put in place is what was verified: a snapshot of the backup (with a -wal beside it, as SQLite reads
        // both), written under a private name, verified there with the backup's head record, then renamed into place.
        // A copy of the file alone would leave the -wal's events (or its edits) behind.
        const partial = join(dataDir, `${LEDGER_FILE}.restoring`);
        const removePartial = () => [partial, `${partial}-wal`, `${partial}-shm`, headFileOf(partial)].forEach((f) => rmSync(f, { force: true }));
        removePartial();
        if (existsSync(join(from, HEAD_FILE))) copyDurably(join(from, HEAD_FILE), headFileOf(partial));
        let v: Awaited<ReturnType<typeof verifyLedger>>;
        try {
          snapshot(join(from, LEDGER_FILE), partial);
          v = await verifyLedger(partial);
        } catch (err) {
          removePartial();
          throw err;
        }
        if (v.problems.length > 0) {
          removePartial();
          throw new UsageError(`the backup in ${from} does not verify (${verdict(v)}; \`duffy audit --ledger ${join(from, LEDGER_FILE)} verify\` names what): nothing restored`);
        }
        // A backup that verifies may still be another history (another installation's, a new host's first start, or
        // one rewritten whole and chained again): said, and the ledger it replaces kept for whoever audits it.
        const now = new Date().toISOString();
        const unfinished = join(dataDir, RESTORE_UNFINISHED);
        // A restore killed after it began to move the ledger aside: the ledger it replaced is there, and what it left
        // here (its -wal, the read models) joins it, so that this one compares with, and keeps, that ledger whole. A
        // file here that is there already is the killed restore's own (the backup's head, put in place): dropped.
        const earlier = existsSync(unfinished) ? readFileSync(unfinished, 'utf8') : undefined;
        const cutShort = earlier !== undefined && !existsSync(join(dataDir, LEDGER_FILE)) ? earlier : undefined;
        // Killed after it put the backup in place: the ledger it replaced stays where that restore moved it, named
        // here, as that restore never said it (this one replaces what that one put in place).
        const keptBefore = earlier !== undefined && cutShort === undefined && existsSync(join(earlier, LEDGER_FILE)) ? earlier : undefined;
        const aside = cutShort ?? join(dataDir, `replaced-${now.replace(/[:.]/g, '-')}`);
        const oldFiles = [LEDGER_FILE, `${LEDGER_FILE}-wal`, `${LEDGER_FILE}-shm`, HEAD_FILE, READ_MODELS_FILE, `${READ_MODELS_FILE}-wal`, `${READ_MODELS_FILE}-shm`];
        for (const f of cutShort ? oldFiles.filter((f) => existsSync(join(dataDir, f))) : []) {
          if (existsSync(join(aside, f))) rmSync(join(dataDir, f));
          else renameSync(join(dataDir, f), join(aside, f));
        }
        const current = join(cutShort ?? dataDir, LEDGER_FILE);
        const histories = compareHistories(current, partial);
        const disagreement = histories?.disagreement;
        // The hours the restore undoes go into the restored ledger before it is put in place (a failure leaves all
        // as it was): their session ids stay given, their machines go to maintenance.
        const found = histories && lostHoursIn(current, histories.sharedUpTo);
        let recorded: Awaited<ReturnType<typeof recordLostHours>> | undefined;
        try {
          if (found) recorded = await recordLostHours(partial, { ...found, backup: from, replacedKeptIn: aside });
        } catch (err) {
          removePartial();
          throw err;
        }
        const moved: string[] = [];
        // The key goes with the history it signed: this host's stays when the backup is of its own history (a key
        // changed on purpose since stays changed); one that signed another history (a new host started once) goes
        // aside with that ledger, and the backup's signs on, so auditors' checkpoints pinned to it still verify.
        const [hostKey, backupKey] = [join(dataDir, KEY_FILE), join(from, KEY_FILE)];
        const ownHistory = existsSync(current) && disagreement === undefined;
        const keyTaken = existsSync(backupKey) && (!existsSync(hostKey) || (!ownHistory && readFileSync(hostKey, 'utf8') !== readFileSync(backupKey, 'utf8')));
        // The read models too: ones that followed another history (a new host's, a backup restored before) would be
        // caught up from their checkpoint over it, serving a mix of both; set aside, they are rebuilt at start.
        writeFileSync(unfinished, aside);
        syncToDisk(unfinished);
        syncToDisk(dataDir);
        for (const f of [...oldFiles, ...(keyTaken ? [KEY_FILE] : [])]) {
          if (!existsSync(join(dataDir, f))) continue;
          mkdirSync(aside, { recursive: true });
          renameSync(join(dataDir, f), join(aside, f));
          moved.push(f);
        }
        // Renamed last: a stop half-way leaves no half ledger under the real name.
        if (existsSync(headFileOf(partial))) renameSync(headFileOf(partial), join(dataDir, HEAD_FILE));
        renameSync(partial, join(dataDir, LEDGER_FILE));
        if (keyTaken) copyDurably(backupKey, hostKey);
        syncToDisk(dataDir);
        rmSync(unfinished);
        syncToDisk(dataDir);
        out(`restored ${join(from, LEDGER_FILE)} into ${dataDir}${keyTaken ? ` with its signing key ${KEY_FILE}` : ''}`);
        if (cutShort) out(`a restore cut short before had moved the ledger it replaced to ${aside}: it is kept there`);
        if (keptBefore) out(`a restore cut short before had moved the ledger it replaced to ${keptBefore}: it is kept there`);
        if (moved.length) out(`what it replaced is in ${aside}: ${moved.join(', ')}`);
        if (disagreement) {
          process.stderr.write(
            `duffy: warning: the backup is not a copy of the history of the ledger it replaced (${disagreement}): one of them is another Duffy's or was rewritten; ` +
              `that ledger is kept in ${aside} (\`duffy audit verify --checkpoint\` both against a checkpoint you keep)\n`,
          );
        }
        out(verdict(v));
        if (recorded) out(recorded);
        else if (existsSync(join(aside, LEDGER_FILE)) && !found) {
          process.stderr.write(
            `duffy: warning: the ledger it replaced could not be read, so what happened after the backup is unknown: session ids given since may be given again, and machines used since may still carry their tenants' keys (README: Restore)\n`,
          );
        }
        const mongo = process.env.DUFFY_READMODELS ? ' (on MongoDB: POST /api/v1/stats/rebuild once it runs)' : '';
        out(`start Duffy: it rebuilds the read models from this ledger${mongo}`);
      } finally {
        lock.release();
      }
    });
}
