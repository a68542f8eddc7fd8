#!/usr/bin/env node
import { Command, InvalidArgumentError } from 'commander';
import { join, resolve } from 'node:path';
import { allEvents, collect, history, inWindow, jsonLine, openLedger, replay, whoHad } from '../audit/audit.js';
import { verifyChains } from '../audit/chain.js';
import { DEMO_CONFIG, loadConfig } from '../config/config.js';
import { ApiError, DuffyClient, EXIT, clientConfig } from './client.js';

const time = (v: string) => {
  const t = new Date(v);
  if (Number.isNaN(t.getTime())) throw new InvalidArgumentError(`not an ISO 8601 time: ${v}`);
  return t;
};

/** The ledger to read: --ledger, else DUFFY_EVENTSTORE, else the embedded file in DUFFY_DATA_DIR (./data). */
const ledgerOf = (opts: { ledger?: string }) =>
  opts.ledger ?? process.env.DUFFY_EVENTSTORE ?? join(resolve(process.env.DUFFY_DATA_DIR ?? './data'), 'ledger.sqlite');

type Session = { id: number; active: boolean; expires_at: string | null; nodes: Array<{ hostname: string; ipaddr: string | null; pool: string; state: string }> };

export interface Io {
  out: (line: string) => void;
  /** Progress goes to stderr, and only on a terminal: scripts get clean output. */
  progress?: (line: string) => void;
}

export function program(out: (line: string) => void = (l) => process.stdout.write(l + '\n'), io: Partial<Io> = {}): Command {
  const progress = io.progress ?? (process.stderr.isTTY ? (l: string) => process.stderr.write(`\r\x1b[2K${l}`) : undefined);
  const duffy = new Command('duffy')
    .description('Duffy: machines for CI, on an event-sourced ledger')
    .option('--url <url>', 'Duffy base URL (DUFFY_URL, default http://localhost:8080)')
    .option('--tenant <name>', 'tenant name (DUFFY_TENANT)')
    .option('--key <api-key>', 'API key (DUFFY_KEY)')
    .option('--json', 'print JSON answers, for scripts')
    .exitOverride();
  const client = () => new DuffyClient(clientConfig(duffy.opts()));
  const json = () => duffy.opts().json === true;
  const show = (s: Session) => {
    if (json()) return out(JSON.stringify(s));
    out(`session ${s.id} ${s.active ? `active until ${s.expires_at}` : 'ended'}`);
    for (const n of s.nodes) out(`${n.hostname}\t${n.ipaddr ?? '-'}\t${n.pool}\t${n.state}`);
    if (s.active && s.nodes.length) out(`ssh root@${s.nodes[0].hostname}`);
  };
  const positive = (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer');
    return n;
  };

  duffy
    .command('request')
    .description('ask for machines: by --pool, or by --type (+ --arch, --platform)')
    .option('--pool <name>')
    .option('--type <baremetal|vm>')
    .option('--arch <arch>')
    .option('--platform <family>')
    .option('--count <n>', 'how many', positive, 1)
    .option('--wait <seconds>', 'keep trying this long while no machine is free', positive)
    .action(async (o: { pool?: string; type?: string; arch?: string; platform?: string; count: number; wait?: number }) => {
      if (!o.pool && !o.type) throw new InvalidArgumentError('give --pool or --type');
      const spec = Object.fromEntries(Object.entries({ pool: o.pool, type: o.type, arch: o.arch, platform: o.platform, quantity: o.count }).filter(([, v]) => v !== undefined));
      const deadline = Date.now() + (o.wait ?? 0) * 1000;
      const started = Date.now();
      for (let attempt = 1; ; attempt++) {
        try {
          const r = await client().call<{ session: Session }>('POST', '/sessions', { nodes_specs: [spec] });
          progress?.('');
          return show(r.session);
        } catch (err) {
          const busy = err instanceof ApiError && (err.exitCode === EXIT.noCapacity || err.exitCode === EXIT.unavailable);
          if (!busy || Date.now() >= deadline) throw err;
          progress?.(`waiting for ${o.count} machine(s): ${err.message} (${Math.round((Date.now() - started) / 1000)} s, try ${attempt})`);
          await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** Math.min(attempt, 5), Math.max(0, deadline - Date.now()))));
        }
      }
    });

  duffy
    .command('list')
    .description('my active sessions (admin: all)')
    .action(async () => {
      const r = await client().call<{ sessions: Session[] }>('GET', '/sessions');
      if (json()) return out(JSON.stringify(r.sessions));
      for (const s of r.sessions) out(`${s.id}\t${s.expires_at}\t${s.nodes.map((n) => n.hostname).join(',')}`);
    });

  duffy
    .command('show <session>')
    .action(async (id: string) => show((await client().call<{ session: Session }>('GET', `/sessions/${encodeURIComponent(id)}`)).session));

  duffy
    .command('done <session>')
    .description('give the machines back')
    .action(async (id: string) => show((await client().call<{ session: Session }>('PUT', `/sessions/${encodeURIComponent(id)}`, { active: false })).session));

  duffy
    .command('extend <session> [by]')
    .description('keep the machines longer: +2h, +30m or an ISO time (clamped to your maximum)')
    .action(async (id: string, by = '+1h') => show((await client().call<{ session: Session }>('PUT', `/sessions/${encodeURIComponent(id)}`, { expires_at: by })).session));

  for (const [name, path, field] of [
    ['tenants', '/tenants', 'tenants'],
    ['nodes', '/nodes', 'nodes'],
    ['pools', '/pool-profiles', 'pool_profiles'],
  ] as const) {
    duffy
      .command(name)
      .description(`list ${name}`)
      .action(async () => {
        const rows = (await client().call('GET', path))[field] as Array<Record<string, unknown>>;
        if (json()) return out(JSON.stringify(rows));
        for (const r of rows) out(Object.values(r).map((v) => (typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v))).join('\t'));
      });
  }

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

/** Runs the CLI; returns the exit code (0 ok, 2 usage, 3 auth, 4 not found, 5 no capacity, 6 unavailable, 7 unreachable). */
export async function run(argv: string[], out?: (line: string) => void, io?: Partial<Io>): Promise<number> {
  try {
    await program(out, io).parseAsync(argv);
    return Number(process.exitCode ?? 0);
  } catch (err) {
    const e = err as { code?: string; exitCode?: number; message?: string; unreachable?: boolean };
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return EXIT.ok;
    if (e.code?.startsWith('commander.')) return EXIT.usage;
    process.stderr.write(`duffy: ${e.message ?? String(err)}\n`);
    if (e.unreachable) return EXIT.unreachable;
    return err instanceof ApiError ? err.exitCode : err instanceof InvalidArgumentError ? EXIT.usage : EXIT.failure;
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('/duffy')) {
  run(process.argv).then((code) => process.exit(code));
}
