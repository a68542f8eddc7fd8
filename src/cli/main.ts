#!/usr/bin/env node
import { Command, InvalidArgumentError } from 'commander';
import { join, resolve } from 'node:path';
import { allEvents, collect, history, inWindow, jsonLine, openLedger, replay, whoHad } from '../audit/audit.js';
import { verifyChains } from '../audit/chain.js';
import { DEMO_CONFIG, loadConfig } from '../config/config.js';

const time = (v: string) => {
  const t = new Date(v);
  if (Number.isNaN(t.getTime())) throw new InvalidArgumentError(`not an ISO 8601 time: ${v}`);
  return t;
};

/** The ledger to read: --ledger, else DUFFY_EVENTSTORE, else the embedded file in DUFFY_DATA_DIR (./data). */
const ledgerOf = (opts: { ledger?: string }) =>
  opts.ledger ?? process.env.DUFFY_EVENTSTORE ?? join(resolve(process.env.DUFFY_DATA_DIR ?? './data'), 'ledger.sqlite');

export function program(out: (line: string) => void = (l) => process.stdout.write(l + '\n')): Command {
  const duffy = new Command('duffy').description('Duffy: machines for CI, on an event-sourced ledger').exitOverride();
  const audit = duffy.command('audit').description('read-only checks of a ledger, for auditors').option('--ledger <file|esdb-url>', 'ledger to read');
  const withLedger = async <T>(fn: (events: Awaited<ReturnType<typeof collect>>) => T): Promise<T> => {
    const store = openLedger(ledgerOf(audit.opts()));
    try {
      return fn(await collect(store));
    } finally {
      await store.close();
    }
  };

  audit
    .command('replay')
    .description('replay every event and report each broken invariant with the events that show it')
    .option('--config <file>', 'configuration whose tenant defaults apply', process.env.DUFFY_CONFIG ?? DEMO_CONFIG)
    .action(async (o: { config: string }) => {
      const d = loadConfig(o.config).defaults;
      const violations = await withLedger((events) => {
        out(`replayed ${events.length} events`);
        return replay(events, { nodeQuota: d['node-quota'], sessionLifetime: d['session-lifetime'], sessionLifetimeMax: d['session-lifetime-max'] });
      });
      for (const v of violations) out(`invariant ${v.invariant}: ${v.message} (positions ${v.positions.join(', ')})`);
      out(violations.length === 0 ? 'OK: no invariant is broken' : `${violations.length} violation(s)`);
      if (violations.length) process.exitCode = 1;
    });

  audit
    .command('verify')
    .description('recompute the hash chains; report edited, removed or reordered events')
    .action(async () => {
      const { checked, breaks } = await withLedger((events) => verifyChains(events));
      for (const b of breaks) out(`position ${b.position}: ${b.stream}@${b.revision}: ${b.problem}`);
      out(breaks.length === 0 ? `OK: ${checked} chained events verified` : `TAMPERED: ${breaks.length} problem(s) in ${checked} chained events`);
      if (breaks.length) process.exitCode = 1;
    });

  audit
    .command('who-had <hostname>')
    .description('which session and tenant held a machine at a time')
    .requiredOption('--at <time>', 'ISO 8601 time', time)
    .action(async (hostname: string, o: { at: Date }) => {
      const r = await withLedger((events) => {
        const held = whoHad(events, hostname, o.at);
        const tenant = held && events.find((e) => e.type === 'TenantRegistered' && e.data.tenantId === held.tenantId)?.data.name;
        return held ? { ...held, tenant } : null;
      });
      out(r ? JSON.stringify(r) : `nobody held ${hostname} at ${o.at.toISOString()}`);
    });

  audit
    .command('history <subject>')
    .description('events of session-<id>, machine-<hostname> or tenant-<name>, as JSON lines')
    .action(async (subject: string) => {
      const events = await withLedger((all) => history(all, subject));
      for (const e of events) out(jsonLine(e));
    });

  audit
    .command('export')
    .description('events in a time window as JSON lines')
    .option('--from <time>', 'from (inclusive)', time)
    .option('--to <time>', 'to (exclusive)', time)
    .action(async (o: { from?: Date; to?: Date }) => {
      const store = openLedger(ledgerOf(audit.opts()));
      try {
        for await (const e of allEvents(store)) if (inWindow(e, o.from, o.to)) out(jsonLine(e));
      } finally {
        await store.close();
      }
    });
  return duffy;
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('/duffy')) {
  program()
    .parseAsync(process.argv)
    .catch((err: { code?: string; exitCode?: number; message?: string }) => {
      if (err?.code?.startsWith('commander.')) process.exit(err.exitCode ?? 2);
      console.error(`duffy: ${err?.message ?? String(err)}`);
      process.exit(1);
    });
}
