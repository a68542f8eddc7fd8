import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { headFileOf } from './data-dir-lock.js';
import type { RecordedEvent } from '../../application/ports/event-store.port.js';
import { GENESIS, globalLink, legacyPrefix, verifyChains } from '../../audit/chain.js';
import { APPEND_ONLY_TRIGGERS, LEGACY_CHAIN_COLUMN, type Row, ledgerSchemaProblems, toRecorded } from './sqlite-event-store.js';

/**
 * The Duffy of 2026-11-26 wrote ledgers without the global chain (column `chain`, added 2026-11-29), with stream
 * hashes over each event's type and data but not its metadata, and no writer's head record. A later Duffy starting
 * on one adds the column and links every event into the global chain, in one transaction, once; the events stay as
 * they were (`audit verify` reads them in their format: chain.ts legacyPrefix). Only a file in that format
 * throughout: any other difference from the store's schema, or an event not in it, is someone's edit, refused at
 * start as before (assertLedgerReadable).
 */
function legacyEvents(db: Database.Database): RecordedEvent[] | undefined {
  const schema = ledgerSchemaProblems(db);
  if (schema.chainColumn || schema.problems.length !== 1) return undefined;
  let events: RecordedEvent[];
  try {
    events = (db.prepare('SELECT position, stream, revision, id, type, data, metadata FROM events ORDER BY position').raw(true).all() as Row[]).map(toRecorded);
  } catch {
    return undefined;
  }
  const end = legacyPrefix(events);
  if (events.length === 0 || end !== events.at(-1)!.position || verifyChains(events, end).breaks.length > 0) return undefined;
  return events;
}

/** True when the file is a ledger of 2026-11-26 that upgradeLegacyLedger takes over (read-only). */
export function isLegacyLedger(file: string): boolean {
  // A writer's head record: the Duffy of 2026-11-26 wrote none (and a start need not open today's ledgers here).
  if (existsSync(headFileOf(file))) return false;
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    return legacyEvents(db) !== undefined;
  } catch {
    return false;
  } finally {
    db?.close();
  }
}

/** Links a ledger of 2026-11-26 into the global chain; returns how many events (0: not such a ledger, nothing done). */
export function upgradeLegacyLedger(file: string): number {
  if (!isLegacyLedger(file)) return 0;
  const db = new Database(file, { fileMustExist: true });
  try {
    const events = legacyEvents(db);
    if (!events) return 0;
    db.transaction(() => {
      for (const name of Object.keys(APPEND_ONLY_TRIGGERS)) db.exec(`DROP TRIGGER ${name}`);
      db.exec(`ALTER TABLE events ADD COLUMN ${LEGACY_CHAIN_COLUMN}`);
      const link = db.prepare('UPDATE events SET chain = ? WHERE position = ?');
      let chain = GENESIS;
      for (const e of events) {
        // The unhashed `ids-*` events link over '', as `verify` reads them (checkLedgerFile).
        chain = globalLink(chain, e.position, typeof e.metadata.hash === 'string' ? e.metadata.hash : '');
        link.run(chain, e.position);
      }
      for (const sql of Object.values(APPEND_ONLY_TRIGGERS)) db.exec(sql);
    })();
    return events.length;
  } finally {
    db.close();
  }
}
