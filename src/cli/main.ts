#!/usr/bin/env node
import { Command, InvalidArgumentError } from 'commander';
import { NotFoundError } from '../audit/audit.js';
import { auditCommands } from './audit.js';
import { ApiError, DuffyClient, EXIT, clientConfig } from './client.js';

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

  auditCommands(duffy, out);
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
    if (err instanceof NotFoundError) return EXIT.notFound;
    return err instanceof ApiError ? err.exitCode : err instanceof InvalidArgumentError ? EXIT.usage : EXIT.failure;
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('/duffy')) {
  // No process.exit: it would cut off stdout still draining into a pipe (`duffy audit export | gzip`).
  run(process.argv).then((code) => {
    process.exitCode = code;
  });
}
