import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFile, spawn } from 'node:child_process';
import { type Server, createServer } from 'node:http';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Ledger } from '../../src/application/ledger.service.js';
import { SessionLifecycle } from '../../src/application/session-lifecycle.js';
import { Reconciler } from '../../src/application/reconciler.service.js';
import { recentMachineTimeMs } from '../../src/domain/world.js';
import { ADMIN_KEY, type Client, type Running, instantDemoConfig, ledgerEvents, newTenant, startDuffy } from '../support/server.js';
import { parse, stringify } from 'yaml';
import { APPEND_ONLY_TRIGGERS } from '../../src/adapters/eventstore/sqlite-event-store.js';
import { setTimeout as sleep } from 'node:timers/promises';

const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));
const exec = promisify(execFile);

/** The built CLI as a user runs it with this environment; returns its output and exit code. */
const runCli = (env: NodeJS.ProcessEnv, ...args: string[]) => runCliWithin(0, env, ...args);

/** runCli, killed after `ms` (0: never), its code then null: a CLI that spins fails its test, it does not hang it. */
async function runCliWithin(ms: number, env: NodeJS.ProcessEnv, ...args: string[]) {
  try {
    const r = await exec(process.execPath, [CLI, ...args], { env, timeout: ms, killSignal: 'SIGKILL' });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number | null; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('duffy CLI against a running server', () => {
  let duffy: Running;
  let env: NodeJS.ProcessEnv;
  const cli = (...args: string[]) => runCli(env, ...args);

  beforeAll(async () => {
    duffy = await startDuffy();
    const t = await duffy.admin.post('/api/v1/tenants', { name: 'jenkins', ssh_key: 'ssh-ed25519 AAAA jenkins', node_quota: 3 });
    env = { PATH: process.env.PATH, HOME: '/nonexistent', DUFFY_URL: duffy.url, DUFFY_TENANT: 'jenkins', DUFFY_KEY: t.body.tenant.api_key };
  });
  afterAll(() => duffy.close());

  it('requests, lists, shows, extends and gives back machines', async () => {
    const req = await cli('request', '--type', 'baremetal', '--arch', 'x86_64', '--count', '2');
    expect(req.code).toBe(0);
    const lines = req.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^session (\d+) active until /);
    expect(lines).toHaveLength(4);
    expect(lines[3]).toMatch(/^ssh root@metal-/);
    const id = /^session (\d+)/.exec(lines[0])![1];
    expect((await cli('list')).stdout).toContain(`${id}\t`);
    expect((await cli('show', id)).stdout).toContain(`session ${id} active`);
    expect((await cli('extend', id, '+2h')).code).toBe(0);
    // A negative time is the argument, not an option.
    expect((await cli('extend', id, '-30m')).code).toBe(0);
    expect((await cli('extend', id, '--bogus')).code).toBe(2);
    const done = await cli('done', id);
    expect(done.code).toBe(0);
    expect(done.stdout).toContain(`session ${id} ended`);
    // Its nodes no longer have a state of this session's: shown as '-', not 'null'.
    expect(done.stdout.trim().split('\n').slice(1).map((l) => l.split('\t')[3])).toEqual(['-', '-']);
  });

  it('says why a session ended when it failed (its hand-over could not be done)', async () => {
    const req = await cli('request', '--type', 'baremetal', '--arch', 'x86_64');
    const id = Number(/^session (\d+)/.exec(req.stdout)![1]);
    await duffy.app.get(SessionLifecycle).end(id, 'failed', null, 'i1: disk \u001b[31mon fire');
    // In its words, with a terminal escape from a playbook's output shown, not obeyed.
    expect((await cli('show', String(id))).stdout.split('\n')[0]).toBe(`session ${id} ended (failed: i1: disk \\u001b[31mon fire)`);
  });

  it('prints clean JSON for scripts', async () => {
    const r = await cli('--json', 'request', '--pool', 'vm-intel-x86_64');
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const session = JSON.parse(r.stdout);
    expect(session.nodes[0].pool).toBe('vm-intel-x86_64');
    expect(JSON.parse((await cli('--json', 'list')).stdout).map((s: { id: number }) => s.id)).toContain(session.id);
    await cli('done', String(session.id));
  });

  it('fails with a distinct non-zero exit code for each kind of failure', async () => {
    const neither = await cli('request');
    expect(neither.code).toBe(2);
    expect(neither.stderr).toBe('duffy: request: give --pool or --type\n');
    const bogus = await cli('request', '--type', 'bogus');
    expect(bogus.code).toBe(2);
    expect(bogus.stderr).toMatch(/'bogus' is invalid. Allowed choices are baremetal, vm/);
    expect((await cli('request', '--pool', 'vm-intel-x86_64', '--wait', '3601')).code).toBe(2);
    // --wait 0 is "do not wait", as the API takes it (a parameterised job's WAIT=0).
    const noWait = await cli('--json', 'request', '--pool', 'vm-intel-x86_64', '--wait', '0');
    expect(noWait.code).toBe(0);
    await cli('done', String(JSON.parse(noWait.stdout).id));
    expect((await cli('request', '--pool', 'vm-intel-x86_64', '--count', 'zero')).code).toBe(2);
    expect((await cli('request', '--pool', 'vm-intel-x86_64', '--count', '1001')).code).toBe(2);
    expect((await cli('request', '--pool', 'metal-intel-x86_64', '--count', '9')).code).toBe(3); // over quota: 403
    // Names the server's body rules refuse are usage errors too, before any call (they were its 422, exit 1): at an
    // address nothing listens on, a call would be exit 7.
    for (const [flag, value] of [['--pool', 'a b'], ['--arch', 'x y'], ['--platform', 'in/tel'], ['--arch', 'x'.repeat(65)]]) {
      const args = ['request', ...(flag === '--pool' ? [] : ['--type', 'vm']), flag, value];
      const refused = await cli(...args);
      expect([refused.code, refused.stderr]).toEqual([2, expect.stringMatching(new RegExp(`^error: option '${flag} <[a-z]+>' argument '${value}' is invalid\\. must be 1-${flag === '--pool' ? 128 : 64} letters`))]);
      expect((await cli('--url', 'http://127.0.0.1:1', ...args)).code).toBe(2);
    }
    const busy = (await duffy.admin.post('/api/v1/sessions', { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 2 }] })).body.session;
    expect((await cli('request', '--pool', 'vm-arm-aarch64', '--count', '1')).code).toBe(5);
    await duffy.admin.put(`/api/v1/sessions/${busy.id}`, { active: false });
    // No wait can serve these: not "no capacity", which a wrapper would ask again for ever.
    expect((await cli('request', '--pool', 'vm-arm-aarch64', '--count', '3')).code).toBe(8);
    expect((await cli('request', '--pool', 'nosuch')).code).toBe(8);
    expect((await cli('request', '--type', 'vm', '--arch', 'amd64')).code).toBe(8);
    expect((await cli('request', '--pool', 'vm-arm-aarch64', '--count', '3', '--wait', '10')).code).toBe(8);
    expect((await cli('show', '99999')).code).toBe(4);
    // A session id that is none is a usage error, before any call.
    expect(await cli('show', 'abc')).toMatchObject({ code: 2, stderr: 'duffy: a session id is a number (as `duffy list` shows it), got "abc"\n' });
    expect((await cli('done', '12x')).code).toBe(2);
    const unsigned = await cli('extend', '99999', '2h');
    expect(unsigned.code).toBe(2);
    expect(unsigned.stderr).toBe('duffy: extend: give the time to add with a sign, as in +2h, or an ISO time\n');
    // Bare seconds: the hint is a form the server takes (`+30` is refused there).
    expect((await cli('extend', '99999', '30')).stderr).toBe('duffy: extend: give the time to add with a sign, as in +30s, or an ISO time\n');
    // Asking for help is no usage error (it exited 2); a command named without its subcommand is.
    expect([(await cli('help')).code, (await cli('help', 'audit')).code, (await cli('audit', 'help', 'verify')).code, (await cli('audit')).code]).toEqual([0, 0, 0, 2]);
    // A time the server would refuse is a usage error too, before any call (it was the 422's exit 1, or 404's 4 here).
    expect(await cli('extend', '99999', '+1x')).toMatchObject({ code: 2, stderr: 'duffy: extend: not a time: "+1x"; give one like +2h, +30m, -1h or an ISO 8601 time\n' });
    const bad = await cli('--key', 'wrong', 'list');
    expect(bad.code).toBe(3);
    expect(bad.stderr).toMatch(/^duffy: Invalid tenant name or API key/);
    expect((await cli('--url', 'http://127.0.0.1:1', 'list')).code).toBe(7);
  });

  it('prints an error answer with its control characters escaped, its lines kept', async () => {
    // A detail may quote what some caller or playbook wrote: a terminal escape or a bidi override must not act.
    const server = createServer((_req, res) => {
      res.statusCode = 409;
      res.setHeader('content-type', 'application/json').end(JSON.stringify({ detail: 'pool no\u202esuch\u001b[2J\nsecond line' }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const answer = await runCli({ ...env, DUFFY_URL: `http://127.0.0.1:${(server.address() as { port: number }).port}` }, 'list');
      expect(answer.stderr).toBe('duffy: pool no\\u202esuch\\u001b[2J\nsecond line\n');
    } finally {
      server.close();
    }
  });

  const V1 = '/api/v1';
  const queue = async () => (await duffy.admin.get(`${V1}/queue`)).body.queue as Array<{ tenant: string; session: number; position: number }>;
  const untilQueued = async (tenant: string) => {
    for (let i = 0; i < 100; i++) {
      const row = (await queue()).find((q) => q.tenant === tenant);
      if (row) return row;
      await sleep(100);
    }
    throw new Error(`${tenant} never queued`);
  };

  it('--wait waits in the fair queue: it shows in GET /queue with its place on a terminal, and is served in fair-share order', async () => {
    // hog holds both arm VMs and asks for one more first; then the CLI (jenkins, with less recent machine time) asks.
    const hog: Client = await newTenant(duffy, 'hog');
    const held = (await hog.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 2 }] })).body.session;
    // Until hog's machine time over the last hour passes what jenkins used in the tests above.
    const usage = (name: string) => {
      const w = duffy.app.get(Ledger).world;
      return recentMachineTimeMs(w.tenants.get(w.tenantIdsByName.get(name)!)!, Date.now());
    };
    while (usage('hog') <= usage('jenkins') + 1000) await sleep(200);
    const hogWaits = hog.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 1 }], wait: 30 });
    await untilQueued('hog');
    const args = [CLI, 'request', '--pool', 'vm-arm-aarch64', '--wait', '30'].map((a) => `'${a}'`).join(' ');
    // `script` gives the CLI a real terminal, as in a developer's shell.
    const waiting = exec('script', ['-qec', `${process.execPath} ${args}`, '/dev/null'], { env });
    const mine = await untilQueued('jenkins');
    expect((await queue()).map((q) => [q.position, q.tenant])).toEqual([[1, 'jenkins'], [2, 'hog']]);
    await sleep(1500); // a progress line or two

    // One session with both machines ends: both waiting requests are served, jenkins first although it asked last.
    await hog.put(`${V1}/sessions/${held.id}`, { active: false });
    const r = await waiting;
    expect(r.stdout).toMatch(new RegExp(`waiting for 1 machine\\(s\\) in the queue: session ${mine.session}, position 1: pool vm-arm-aarch64: 1 requested, 0 available`));
    expect(r.stdout).toMatch(new RegExp(`session ${mine.session} active until`));
    expect(r.stdout).toMatch(/ssh root@vm-arm-/);
    const hogGot = await hogWaits;
    expect(hogGot.status).toBe(201);
    const started = (await duffy.app.get(Ledger).store.readAll(0n, 100_000)).filter((e) => e.type === 'SessionStarted').map((e) => e.data.sessionId);
    expect(started.indexOf(mine.session)).toBeLessThan(started.indexOf(hogGot.body.session.id));
    // One POST, one session: the CLI did not poll by asking again.
    const jenkinsRequests = (await duffy.app.get(Ledger).store.readAll(0n, 100_000)).filter((e) => e.type === 'MachineRequested' && e.data.tenant === 'jenkins' && (e.data.specs as Array<{ pool?: string }>)[0].pool === 'vm-arm-aarch64');
    expect(jenkinsRequests).toHaveLength(1);
    await duffy.admin.put(`${V1}/sessions/${mine.session}`, { active: false });
    await duffy.admin.put(`${V1}/sessions/${hogGot.body.session.id}`, { active: false });
  }, 60_000);

  const sessionReads = async () => {
    const text = (await duffy.admin.get('/metrics')).body as string;
    return [...text.matchAll(/^duffy_http_requests_total\{method="GET",route="\/api\/v1\/sessions",status="200"\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
  };

  it('--wait leaves the queue when the CLI is interrupted (a Jenkins abort), so nobody is served machines for a dead job; without a terminal it holds its place with its one request', async () => {
    const held = (await duffy.admin.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 2 }] })).body.session;
    const readsBefore = await sessionReads();
    expect(readsBefore).toBeGreaterThan(0); // the tests above listed sessions: the count is read
    const child = spawn(process.execPath, [CLI, 'request', '--pool', 'vm-arm-aarch64', '--wait', '60'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const row = await untilQueued('jenkins');
    await sleep(2500);
    expect(await sessionReads()).toBe(readsBefore);
    child.kill('SIGTERM');
    expect(await exited).toBe(143);
    // The connection the exit closed took it out of the queue.
    let rejected: string | undefined;
    for (let i = 0; i < 50 && !rejected; i++) rejected = (await duffy.admin.get(`${V1}/sessions/${row.session}`)).body.session.data.rejected ?? (await sleep(100), undefined);
    expect(rejected).toBe("cancelled: jenkins's client went away while waiting");
    expect(await queue()).toEqual([]);
    await duffy.admin.put(`${V1}/sessions/${held.id}`, { active: false });
  }, 60_000);

  it('done on a session whose lease ran out says its machines were taken back then (exit 0); the session shows how it ended', async () => {
    const s = (await duffy.admin.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).body.session;
    const admin = { ...env, DUFFY_TENANT: 'admin', DUFFY_KEY: ADMIN_KEY };
    // Back to its start (an extension is clamped there): due at the reconciler's next pass.
    expect((await runCli(admin, 'extend', String(s.id), '-48h')).code).toBe(0);
    // Until that pass it is still active: not "active until" a time already gone.
    expect((await runCli(admin, 'show', String(s.id))).stdout.split('\n')[0]).toMatch(new RegExp(`^session ${s.id} active, its lease ended at [0-9T:.Z-]+: ending now$`));
    await duffy.app.get(Reconciler).tick();
    const ended = (await duffy.admin.get(`${V1}/sessions/${s.id}`)).body.session;
    expect([ended.active, ended.data.ended]).toEqual([false, 'expired']);
    expect((await runCli(admin, 'show', String(s.id))).stdout.split('\n')[0]).toBe(`session ${s.id} ended (expired at ${ended.retired_at})`);
    const done = await runCli(admin, 'done', String(s.id));
    expect([done.code, done.stderr]).toEqual([0, `duffy: session ${s.id} had already ended (its lease expired at ${ended.retired_at}): its machines were taken back then\n`]);
    // Given back by done: no word on stderr, and it says so.
    const live = (await duffy.admin.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).body.session;
    const given = await runCli(admin, 'done', String(live.id));
    expect([given.code, given.stderr]).toEqual([0, '']);
    expect((await duffy.admin.get(`${V1}/sessions/${live.id}`)).body.session.data.ended).toBe('done');
  });

  it('done is tried again while Duffy cannot take it (503: stopping, its disk full) or cannot be reached (restarting), for about 2 minutes', async () => {
    const s = (await duffy.admin.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).body.session;
    expect(s).toBeDefined();
    const ledger = duffy.app.get(Ledger);
    const record = ledger.record.bind(ledger);
    let refused = 0;
    ledger.record = async (writes, meta) => {
      if (refused < 2 && writes.some((w) => w.events.some((e) => e.type === 'SessionReleased'))) {
        refused += 1;
        throw Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' });
      }
      return record(writes, meta);
    };
    try {
      const done = await runCli({ ...env, DUFFY_TENANT: 'admin', DUFFY_KEY: ADMIN_KEY }, 'done', String(s.id));
      expect([done.code, refused]).toEqual([0, 2]);
      expect(done.stderr).toMatch(/^duffy: Duffy cannot take the release now \(503 Duffy cannot write its data: the disk is full \(SQLITE_FULL\); try again later\); trying again for up to \d+ s\n$/);
      expect((await duffy.admin.get(`${V1}/sessions/${s.id}`)).body.session.active).toBe(false);
    } finally {
      ledger.record = record;
    }
    // Nothing listening yet (Duffy restarting): a stand-in answers after a second, as the restarted server would.
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as { port: number };
        probe.close(() => resolve(port));
      });
    });
    const later = new Promise<Server>((resolve) =>
      setTimeout(() => {
        const server = createServer((_req, res) => res.setHeader('content-type', 'application/json').end(JSON.stringify({ session: { id: 7, active: false, nodes: [], expires_at: null } })));
        server.listen(port, '127.0.0.1', () => resolve(server));
      }, 1000),
    );
    const restarting = await runCli({ ...env, DUFFY_URL: `http://127.0.0.1:${port}` }, 'done', '7');
    (await later).close();
    expect(restarting.code).toBe(0);
    expect(restarting.stderr).toMatch(/cannot reach Duffy at .* \(ECONNREFUSED\); trying again/);
    // A Duffy back between the last pause's start and the deadline is asked once more, at the deadline (6 s: tries at
    // about 0, 0.5, 1.5, 3.5 s, then a pause cut to the deadline; the stand-in listens from 4.8 s).
    const lastChance = new Promise<Server>((resolve) =>
      setTimeout(() => {
        const server = createServer((_req, res) => res.setHeader('content-type', 'application/json').end(JSON.stringify({ session: { id: 7, active: false, nodes: [], expires_at: null } })));
        server.listen(port, '127.0.0.1', () => resolve(server));
      }, 4800),
    );
    const atDeadline = await runCli({ ...env, DUFFY_URL: `http://127.0.0.1:${port}`, DUFFY_RELEASE_RETRY_SECONDS: '6' }, 'done', '7');
    (await lastChance).close();
    expect(atDeadline.code).toBe(0);
    // A read or a request is not: a wrong URL is said at once.
    expect((await runCli({ ...env, DUFFY_URL: `http://127.0.0.1:${port}` }, 'list')).code).toBe(7);
    // A hung server (it takes the connection and never answers): the whole patience is one deadline, silences included.
    const hung = createServer(() => undefined);
    await new Promise<void>((r) => hung.listen(0, '127.0.0.1', () => r()));
    try {
      const started = Date.now();
      const given = await runCli({ ...env, DUFFY_URL: `http://127.0.0.1:${(hung.address() as { port: number }).port}`, DUFFY_RELEASE_RETRY_SECONDS: '4' }, 'done', '7');
      expect([given.code, given.stderr]).toEqual([7, expect.stringMatching(/^duffy: cannot reach Duffy at .*: no answer in [34](\.\d+)? s\n$/)]);
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      hung.closeAllConnections();
      hung.close();
    }
    // An extension sent and never answered may have been made: said, so a script asks before it adds the time again.
    const dropping = createServer((req) => req.socket.destroy());
    await new Promise<void>((r) => dropping.listen(0, '127.0.0.1', () => r()));
    try {
      const extended = await runCli({ ...env, DUFFY_URL: `http://127.0.0.1:${(dropping.address() as { port: number }).port}` }, 'extend', '7', '+1h');
      expect([extended.code, extended.stderr]).toEqual([7, expect.stringMatching(/the extension may have been made all the same: `duffy show 7` says, before trying again\n$/)]);
      // A request too: Duffy killed as it answered may have served it, and its machines are held until done.
      const asked = await runCli({ ...env, DUFFY_URL: `http://127.0.0.1:${(dropping.address() as { port: number }).port}` }, 'request', '--pool', 'p');
      expect([asked.code, asked.stderr]).toEqual([7, expect.stringMatching(/the request may have been served all the same .*`duffy list` shows it; `duffy done` gives it back, or it is held until its lease ends\n$/)]);
    } finally {
      dropping.close();
    }
    // One refused was never sent: nothing to check.
    expect((await runCli({ ...env, DUFFY_URL: `http://127.0.0.1:${port}` }, 'extend', '7', '+1h')).stderr).not.toMatch(/may have been made/);
  }, 60_000);

  it('takes nodes in and out of service (admin), and refuses a tenant', async () => {
    const admin = { ...env, DUFFY_TENANT: 'admin', DUFFY_KEY: ADMIN_KEY };
    const as = runCli;
    const host = 'metal-arm-03.demo.duffy';
    const id = (await duffy.admin.get(`${V1}/nodes`)).body.nodes.find((n: { hostname: string }) => n.hostname === host).id;
    const refused = await cli('nodes', 'maintenance', String(id), '--reason', 'mine');
    expect(refused.code).toBe(3);
    expect(refused.stderr).toBe('duffy: only admins may change the service or hardware of nodes\n');
    const m = await as(admin, 'nodes', 'maintenance', host, '--reason', 'disk swap');
    expect(m.code).toBe(0);
    expect(m.stdout).toBe(`${host}\tready\tmaintenance\tdisk swap\n`);
    expect((await as(admin, '--json', 'nodes')).stdout).toContain('"service":"maintenance"');
    // Tables for people: a header, one row per node.
    const table = (await as(admin, 'nodes')).stdout.split('\n');
    expect(table[0]).toMatch(/^id +hostname +pool +state +service +ipaddr +reason$/);
    expect(table.find((l) => l.includes(host))).toMatch(new RegExp(`^\\d+ +${host.replace(/\./g, '\\.')} +metal-arm-aarch64 +ready +maintenance +\\S+ +disk swap$`));
    expect((await as(admin, 'tenants')).stdout.split('\n')[0]).toMatch(/^id +name +active +admin +quota +lifetime s +max s +created$/);
    const notMine = await cli('nodes', 'maintenance', host);
    expect(notMine.code).toBe(4);
    expect(notMine.stderr).toMatch(/not found among the nodes you can see .*only admins take nodes in and out of service/);
    expect((await cli('--version')).stdout).toMatch(/^\d+\.\d+\.\d+\n$/);
    expect((await as(admin, 'nodes', 'return', host)).stdout).toBe(`${host}\tready\tin-service\n`);
    expect((await as(admin, 'nodes', 'return', 'no-such-host')).code).toBe(4);
    const retired = await as(admin, '--json', 'nodes', 'retire', host, '--reason', 'end of life');
    expect(JSON.parse(retired.stdout)).toMatchObject({ hostname: host, service: 'retired', service_reason: 'end of life', active: false });
    // GET /nodes leaves retired nodes out, as Duffy v3 does; the CLI still finds and lists them (?retired=true).
    const back = await as(admin, 'nodes', 'return', host);
    expect([back.code, back.stderr]).toEqual([expect.any(Number), `duffy: node ${host} is retired\n`]);
    expect(back.code).not.toBe(0);
    expect((await as(admin, 'nodes')).stdout.split('\n').find((l) => l.includes(host))).toMatch(/ retired /);
    // Its host name registered again (new hardware under an old name): the CLI's HOST is the new node, not the retired one.
    const again = await duffy.admin.post(`${V1}/nodes`, { hostname: host, pool: 'metal-arm-aarch64' });
    expect(again.status).toBe(201);
    const renewed = await as(admin, 'nodes', 'maintenance', host, '--reason', 'burn-in');
    expect([renewed.code, renewed.stderr, renewed.stdout]).toEqual([0, '', `${host}\tready\tmaintenance\tburn-in\n`]);
    expect((await duffy.admin.get(`${V1}/nodes/${again.body.node.id}`)).body.node.service).toBe('maintenance');
  });

  it('downloads a session\'s artifacts into a directory, and not another tenant\'s', async () => {
    const req = await cli('--json', 'request', '--pool', 'vm-intel-x86_64');
    const { id, nodes } = JSON.parse(req.stdout) as { id: number; nodes: Array<{ hostname: string }> };
    const host = nodes[0].hostname;
    // Before its release: nothing collected yet, and it says why (a job that forgot `done`).
    const early = await cli('artifacts', String(id), '--out', mkdtempSync(join(tmpdir(), 'duffy-artifacts-')));
    expect([early.code, early.stdout]).toEqual([0, `session ${id} has no artifacts yet: they are collected when it is released (duffy done ${id})\n`]);
    await cli('done', String(id));
    const dir = join(duffy.dataDir, 'artifacts', `session-${id}`, host, 'logs');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'test.log'), 'PASS\n');
    const out = mkdtempSync(join(tmpdir(), 'duffy-artifacts-'));
    const r = await cli('artifacts', String(id), '--out', out);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${host}/logs/test.log\t5\n`);
    expect(readFileSync(join(out, host, 'logs', 'test.log'), 'utf8')).toBe('PASS\n');
    // Where no directory can be made: one line, exit 1 (under /proc, Node's recursive mkdir spun for good).
    const proc = await runCliWithin(20_000, env, 'artifacts', String(id), '--out', '/proc/duffy-artifacts');
    expect([proc.code, proc.stderr]).toEqual([1, `duffy: the directory /proc/duffy-artifacts/${host}/logs cannot be created (ENOENT: its file system takes no new directory there): give --out a directory where this user can write\n`]);

    const other = (await duffy.admin.post(`${V1}/sessions`, { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] })).body.session;
    const denied = await cli('artifacts', String(other.id), '--out', out);
    expect(denied.code).toBe(4);
    expect(denied.stderr).toBe(`duffy: session ${other.id} not found\n`);
    await duffy.admin.put(`${V1}/sessions/${other.id}`, { active: false });
  });

  it('prints artifact names as printable text: a name the tested code chose forges no line and sends no escape to the terminal', async () => {
    const req = await cli('--json', 'request', '--pool', 'vm-intel-x86_64');
    const { id, nodes } = JSON.parse(req.stdout) as { id: number; nodes: Array<{ hostname: string }> };
    const host = nodes[0].hostname;
    await cli('done', String(id));
    const name = 'ok.log\t999\nforged.txt\t1\n\x1b[2Jgone';
    const dir = join(duffy.dataDir, 'artifacts', `session-${id}`, host);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, name), 'x');
    const out = mkdtempSync(join(tmpdir(), 'duffy-artifacts-'));
    const r = await cli('artifacts', String(id), '--out', out);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${host}/ok.log\\t999\\nforged.txt\\t1\\n\\u001b[2Jgone\t1\n`);
    expect(readFileSync(join(out, host, name), 'utf8')).toBe('x'); // the file itself keeps its name
  });
});

describe('a KurrentDB ledger out of reach', () => {
  const env = { PATH: process.env.PATH, HOME: '/nonexistent' };
  const down = 'kurrentdb://127.0.0.1:1?tls=false';

  it('is named in one line by the auditor, the key recovery and the server (they said UnavailableError, the server with a stack)', async () => {
    for (const args of [['audit', '--ledger', down, 'verify'], ['admin-key', 'admin', '--eventstore', down]]) {
      const r = await runCli(env, ...args);
      expect([r.code, r.stderr]).toEqual([1, 'duffy: KurrentDB is unreachable, not ready or overloaded (UnavailableError): check --ledger, --eventstore or DUFFY_EVENTSTORE\n']);
    }
    const main = fileURLToPath(new URL('../../dist/src/main.js', import.meta.url));
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-kurrent-down-'));
    const server = await exec(process.execPath, [main], { env: { ...env, DUFFY_EVENTSTORE: down, DUFFY_DATA_DIR: dataDir, DUFFY_PORT: '0', DUFFY_LOG_LEVEL: 'silent' } }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect([server.code, server.stderr]).toEqual([1, 'duffy: failed to start: KurrentDB is unreachable, not ready or overloaded (UnavailableError); check DUFFY_EVENTSTORE\n']);
  });
});

describe('duffy admin-key: an operator who lost every admin key', () => {
  const cli = (...args: string[]) => runCli({ PATH: process.env.PATH, HOME: '/nonexistent' }, ...args);

  it('names a damaged ledger in one line and changes nothing', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-admin-key-bad-'));
    writeFileSync(join(dataDir, 'ledger.sqlite'), 'not a database at all, but long enough to look like a page header.'.repeat(100));
    const r = await cli('admin-key', 'admin', '--data-dir', dataDir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^duffy: the ledger .*ledger\.sqlite is damaged \(SQLITE_NOTADB: file is not a database\); restore it from a backup/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('names the missing ledger of a mistyped data directory and creates nothing there; a directory given as --ledger is named as such', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'duffy-admin-key-typo-'));
    const typo = join(parent, 'dat');
    const r = await cli('admin-key', 'admin', '--data-dir', typo);
    expect([r.code, r.stderr]).toEqual([4, `duffy: no ledger at ${typo}/ledger.sqlite (give the data directory of the stopped Duffy with --data-dir or DUFFY_DATA_DIR)\n`]);
    expect(existsSync(typo)).toBe(false);
    // SQLite said "disk I/O error" for a directory.
    const dir = await cli('audit', '--ledger', parent, 'verify');
    expect([dir.code, dir.stderr]).toEqual([4, `duffy: ${parent} is a directory; the ledger is the file ${parent}/ledger.sqlite\n`]);
  });

  it('gives the admin a new key in the ledger while the server is stopped; the old key stops working, the new one is an admin', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-admin-key-'));
    let duffy = await startDuffy({ dataDir });
    await newTenant(duffy, 'plain');
    // The embedded ledger has one writer: not while the server runs.
    const busy = await cli('admin-key', 'admin', '--data-dir', dataDir);
    expect([busy.code, busy.stderr]).toEqual([1, expect.stringMatching(/^duffy: the data directory .* is in use by another Duffy/)]);
    await duffy.close();

    expect((await cli('admin-key', 'plain', '--data-dir', dataDir)).stderr).toBe('duffy: no admin tenant named "plain" in this ledger\n');
    expect((await cli('admin-key', 'plain', '--data-dir', dataDir)).code).toBe(4);
    expect((await cli('admin-key', 'admin', '--data-dir', dataDir, '--new-key', 'not-a-uuid')).code).toBe(2);
    const given = await cli('admin-key', 'admin', '--data-dir', dataDir);
    expect(given.code).toBe(0);
    const key = /^export DUFFY_ADMIN_KEY=([0-9a-f-]{36})$/m.exec(given.stdout)![1];

    duffy = await startDuffy({ dataDir });
    try {
      expect((await duffy.admin.get('/api/v1/tenants')).status).toBe(401);
      const admin = duffy.client('admin', key);
      expect((await admin.get('/api/v1/tenants')).body.tenants.map((t: { name: string }) => t.name).sort()).toEqual(['admin', 'plain']);
      // The change is in the ledger like any other, with who made it.
      const recent = JSON.stringify((await admin.get('/api/v1/events?limit=50')).body);
      expect(recent).toMatch(/"type":"TenantUpdated"[^}]*"actor":"duffy admin-key \(offline\)"/);
    } finally {
      await duffy.close();
    }
  });

  it('an empty DUFFY_DATA_DIR is ./data as for the server, not the working directory; an empty DUFFY_EVENTSTORE is unset', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'duffy-admin-key-cwd-'));
    const run = async (args: string[], env: Record<string, string>) => {
      try {
        await exec(process.execPath, [CLI, 'admin-key', 'admin', ...args], { cwd, env: { PATH: process.env.PATH, HOME: '/nonexistent', ...env } });
        return { code: 0, stderr: '' };
      } catch (err) {
        return err as { code: number; stderr: string };
      }
    };
    expect(await run([], { DUFFY_DATA_DIR: '' })).toMatchObject({ code: 4, stderr: expect.stringContaining(`no ledger at ${join(cwd, 'data', 'ledger.sqlite')}`) });
    expect(readdirSync(cwd)).toEqual([]);
    // duffy audit reads the ledger the server uses: an empty DUFFY_EVENTSTORE is unset there too (it looked for a ledger at "").
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-audit-env-'));
    await (await startDuffy({ dataDir })).close();
    const audit = await exec(process.execPath, [CLI, 'audit', 'verify'], { cwd, env: { PATH: process.env.PATH, HOME: '/nonexistent', DUFFY_EVENTSTORE: '', DUFFY_DATA_DIR: dataDir } });
    expect(audit.stderr).toBe('');
  });
});

describe('duffy backup and restore: an operator backs up while Jenkins works, then restores', () => {
  const cli = (...args: string[]) => runCli({ PATH: process.env.PATH, HOME: '/nonexistent' }, ...args);
  /** Tenant gamma on `duffy`: its key, to sign on again after a restore. */
  const registerGamma = async (duffy: Running) => (await duffy.admin.post('/api/v1/tenants', { name: 'gamma', ssh_key: 'ssh-ed25519 AAAA gamma' })).body.tenant.api_key as string;
  /** One machine of `type` for `client`: its session's id and the machine's host name. */
  const oneMachine = async (client: Client, type: string) => {
    const r = await client.post('/api/v1/sessions', { nodes_specs: [{ type, quantity: 1 }] });
    expect(r.status).toBe(201);
    return { id: r.body.session.id as number, hostname: r.body.session.nodes[0].hostname as string };
  };

  it('copies a consistent, verified ledger under load; restore refuses while Duffy runs and a backup that does not verify; the restored ledger is served as it was', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-backup-data-'));
    const backup = join(mkdtempSync(join(tmpdir(), 'duffy-backup-')), 'monday');
    let duffy = await startDuffy({ dataDir });
    const key = (await duffy.admin.post('/api/v1/tenants', { name: 'ci', ssh_key: 'ssh-ed25519 AAAA ci' })).body.tenant.api_key;
    const ci = duffy.client('ci', key);
    const held = await ci.post('/api/v1/sessions', { nodes_specs: [{ type: 'baremetal', quantity: 1 }] });
    expect(held.status).toBe(201);
    // Requests and releases go on during the backup: its snapshot must not catch one half-written.
    let busy = true;
    let served = 0;
    const traffic = (async () => {
      while (busy) {
        const r = await ci.post('/api/v1/sessions', { nodes_specs: [{ type: 'vm', quantity: 1 }] });
        if (r.status !== 201) continue;
        served += 1;
        await ci.put(`/api/v1/sessions/${r.body.session.id}`, { active: false });
      }
    })();
    const taken = await cli('backup', backup, '--data-dir', dataDir);
    busy = false;
    await traffic;
    expect([taken.code, taken.stderr]).toEqual([0, '']);
    expect(taken.stdout).toMatch(/^backup of .*ledger\.sqlite in .*monday: audit-ed25519\.pem, ledger\.sqlite, ledger\.sqlite\.head\nOK: \d+ events in their stream chains; \d+ links of the global chain; the writer's head at position \d+/);
    expect(served).toBeGreaterThan(0);
    expect(readFileSync(join(backup, 'audit-ed25519.pem'))).toEqual(readFileSync(join(dataDir, 'audit-ed25519.pem')));
    // The owner's alone, every file (the ledger holds the whole history and the tenants' keys).
    expect(readdirSync(backup).map((name) => [name, statSync(join(backup, name)).mode & 0o777])).toEqual(readdirSync(backup).map((name) => [name, 0o600]));
    // A backup never writes over another, nor into a file.
    expect((await cli('backup', backup, '--data-dir', dataDir)).code).toBe(2);
    expect(await cli('backup', join(backup, 'ledger.sqlite'), '--data-dir', dataDir)).toMatchObject({ code: 2, stderr: expect.stringMatching(/ledger\.sqlite is a file: a backup goes into a new or empty directory\n$/) });

    const after = await newTenant(duffy, 'after-the-backup');
    expect(after).toBeDefined();
    // Not under a running Duffy: it would write over what is put back.
    const refused = await cli('restore', backup, '--data-dir', dataDir);
    expect([refused.code, refused.stderr]).toEqual([1, expect.stringMatching(/^duffy: the data directory .* is in use by another Duffy/)]);
    await duffy.close();

    // A backup that does not verify is not put back.
    const bad = join(mkdtempSync(join(tmpdir(), 'duffy-backup-bad-')), 'tampered');
    mkdirSync(bad);
    for (const f of ['ledger.sqlite', 'ledger.sqlite.head']) writeFileSync(join(bad, f), readFileSync(join(backup, f)));
    const { default: Database } = await import('better-sqlite3');
    const db = new Database(join(bad, 'ledger.sqlite'));
    db.exec("DROP TRIGGER events_no_update; UPDATE events SET data = replace(data, '\"ci\"', '\"cj\"') WHERE type = 'TenantRegistered'");
    db.close();
    const before = readdirSync(dataDir).sort();
    const tampered = await cli('restore', bad, '--data-dir', dataDir);
    expect([tampered.code, tampered.stderr]).toEqual([2, expect.stringMatching(/^duffy: the backup in .*tampered does not verify \(TAMPERED: \d+ problem\(s\); .*nothing restored\n$/)]);
    expect(readdirSync(dataDir).sort()).toEqual(before);

    // A backup whose -wal undoes an edit of its file: the check reads both, so what is put back is what it checked
    // (a copy of the file alone put the edited one back, and `verify` then said TAMPERED).
    const masked = join(mkdtempSync(join(tmpdir(), 'duffy-backup-wal-')), 'masked');
    mkdirSync(masked);
    const work = join(mkdtempSync(join(tmpdir(), 'duffy-backup-work-')), 'ledger.sqlite');
    writeFileSync(work, readFileSync(join(backup, 'ledger.sqlite')));
    const edit = new Database(work);
    edit.pragma('journal_mode = DELETE');
    edit.exec("DROP TRIGGER events_no_update; UPDATE events SET data = replace(data, '\"ci\"', '\"cj\"') WHERE type = 'TenantRegistered'");
    edit.pragma('journal_mode = WAL');
    edit.pragma('wal_autocheckpoint = 0');
    edit.exec("UPDATE events SET data = replace(data, '\"cj\"', '\"ci\"') WHERE type = 'TenantRegistered'");
    edit.exec(APPEND_ONLY_TRIGGERS.events_no_update);
    // Copied while the connection holds the -wal open (a close would fold it into the file).
    for (const f of ['ledger.sqlite', 'ledger.sqlite-wal']) writeFileSync(join(masked, f), readFileSync(join(dirname(work), f)));
    edit.close();
    writeFileSync(join(masked, 'ledger.sqlite.head'), readFileSync(join(backup, 'ledger.sqlite.head')));
    const elsewhere = mkdtempSync(join(tmpdir(), 'duffy-restore-wal-'));
    const unmasked = await cli('restore', masked, '--data-dir', elsewhere);
    expect([unmasked.code, unmasked.stderr]).toEqual([0, '']);
    const checked = await cli('audit', '--ledger', join(elsewhere, 'ledger.sqlite'), 'verify');
    expect([checked.code, checked.stdout]).toEqual([0, expect.stringMatching(/^OK: /)]);

    const restored = await cli('restore', backup, '--data-dir', dataDir);
    expect([restored.code, restored.stderr]).toEqual([0, '']);
    expect(restored.stdout).toMatch(/^restored .*monday\/ledger\.sqlite into .*\nwhat it replaced is in .*replaced-[^:]+: ledger\.sqlite(, ledger\.sqlite-wal, ledger\.sqlite-shm)?, ledger\.sqlite\.head, readmodels\.sqlite(, readmodels\.sqlite-wal, readmodels\.sqlite-shm)?\nOK: /);
    duffy = await startDuffy({ dataDir });
    try {
      const names = (await duffy.admin.get('/api/v1/tenants')).body.tenants.map((t: { name: string }) => t.name);
      expect([names.includes('ci'), names.includes('after-the-backup')]).toEqual([true, false]);
      const session = await duffy.client('ci', key).get(`/api/v1/sessions/${held.body.session.id}`);
      expect([session.status, session.body.session.active]).toEqual([200, true]);
      const verify = await cli('audit', '--ledger', join(dataDir, 'ledger.sqlite'), 'verify');
      expect([verify.code, verify.stdout]).toEqual([0, expect.stringMatching(/^OK: /)]);
    } finally {
      await duffy.close();
    }
  });

  it("says so when a backup that verifies holds another history than the ledger it replaces (another Duffy's, or one rewritten and chained again), which it keeps aside", async () => {
    // One history, then two: a copy of the data directory goes on elsewhere.
    const [here, there] = [mkdtempSync(join(tmpdir(), 'duffy-restore-here-')), join(mkdtempSync(join(tmpdir(), 'duffy-restore-there-')), 'data')];
    await (await startDuffy({ dataDir: here })).close();
    cpSync(here, there, { recursive: true });
    const shared = readFileSync(join(here, 'ledger.sqlite.head'), 'utf8');
    for (const [dataDir, name] of [[here, 'here'], [there, 'there']]) {
      const duffy = await startDuffy({ dataDir });
      await newTenant(duffy, name);
      await duffy.close();
    }
    const theirs = join(mkdtempSync(join(tmpdir(), 'duffy-backup-')), 'theirs');
    expect((await cli('backup', theirs, '--data-dir', there)).code).toBe(0);
    const restored = await cli('restore', theirs, '--data-dir', here);
    const aside = /what it replaced is in (\S+):/.exec(restored.stdout)?.[1];
    const upTo = Number(JSON.parse(shared).position);
    const position = `they are the same up to position ${upTo} and differ from ${upTo + 1} on`;
    expect([restored.code, restored.stderr]).toEqual([0, `duffy: warning: the backup is not a copy of the history of the ledger it replaced (${position}): one of them is another Duffy's or was rewritten; that ledger is kept in ${aside} (\`duffy audit verify --checkpoint\` both against a checkpoint you keep)\n`]);
    expect(readdirSync(aside!)).toContain('ledger.sqlite');
    // A backup of this very history, older or not: nothing to say.
    const mine = join(mkdtempSync(join(tmpdir(), 'duffy-backup-')), 'mine');
    expect((await cli('backup', mine, '--data-dir', here)).code).toBe(0);
    const duffy = await startDuffy({ dataDir: here });
    await newTenant(duffy, 'later');
    await duffy.close();
    expect(await cli('restore', mine, '--data-dir', here)).toMatchObject({ code: 0, stderr: '' });
  });

  it("keeps the lost hours' session ids given and puts the machines they used in maintenance: a job's `done` of then ends no session made since", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-restore-lost-'));
    let duffy = await startDuffy({ dataDir });
    const key = await registerGamma(duffy);
    let gamma = duffy.client('gamma', key);
    const ask = (type: string) => oneMachine(gamma, type);
    const before = await ask('baremetal');
    const backup = join(mkdtempSync(join(tmpdir(), 'duffy-backup-')), 'lost');
    expect((await cli('backup', backup, '--data-dir', dataDir)).code).toBe(0);
    // The lost hours: one session made and ended, one still held by a job when the host died.
    const ended = await ask('vm');
    expect((await gamma.put(`/api/v1/sessions/${ended.id}`, { active: false })).status).toBe(200);
    const held = await ask('vm');
    await duffy.close();

    const restored = await cli('restore', backup, '--data-dir', dataDir);
    expect([restored.code, restored.stderr]).toEqual([0, '']);
    const undone = restored.stdout.split('\n').find((l) => l.startsWith('undone: '));
    expect(undone).toMatch(new RegExp(`^undone: what the replaced ledger holds after position \\d+: 2 session\\(s\\), and new sessions are numbered from ${held.id + 1} on \\(ids up to ${held.id} were given`));
    const resting = /\{"maintenance": false\}\): ([^ ;]+(?:, [^ ;]+)*) \(recorded in the restored ledger/.exec(undone!)![1].split(', ');
    expect(resting).toEqual(expect.arrayContaining([ended.hostname, held.hostname]));
    expect(resting).not.toContain(before.hostname);

    duffy = await startDuffy({ dataDir });
    gamma = duffy.client('gamma', key);
    try {
      // The held job's post step gives back its id of then: no session of the restored ledger has it.
      expect((await gamma.put(`/api/v1/sessions/${held.id}`, { active: false })).status).toBe(404);
      const next = await ask('baremetal');
      expect(next.id).toBe(held.id + 1);
      for (const h of [ended.hostname, held.hostname]) {
        const node = (await duffy.admin.get('/api/v1/nodes')).body.nodes.find((n: { hostname: string }) => n.hostname === h);
        expect([node.service, node.service_reason]).toEqual(['maintenance', expect.stringMatching(/^used after the backup restored on \d{4}-\d\d-\d\d \(duffy restore\): wipe it, then put it back$/)]);
      }
      const trail = await cli('audit', '--ledger', join(dataDir, 'ledger.sqlite'), 'history', 'restores');
      expect([trail.code, trail.stdout]).toEqual([0, expect.stringContaining('LedgerRestored')]);
    } finally {
      await duffy.close();
    }
    const verify = await cli('audit', '--ledger', join(dataDir, 'ledger.sqlite'), 'verify');
    expect([verify.code, verify.stdout]).toEqual([0, expect.stringMatching(/^OK: /)]);
    expect((await cli('audit', '--ledger', join(dataDir, 'ledger.sqlite'), 'replay')).code).toBe(0);
  });

  it("carries the hours an earlier restore undid into the next: restored twice, then an older backup, the ids of then stay given and their machines in maintenance (the second restore wrote nothing, the third gave session 3 again and handed out its machine)", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-restore-again-'));
    let duffy = await startDuffy({ dataDir });
    const key = await registerGamma(duffy);
    let gamma = duffy.client('gamma', key);
    const ask = (type: string) => oneMachine(gamma, type);
    await ask('baremetal');
    const [older, newer] = ['older', 'newer'].map((name) => join(mkdtempSync(join(tmpdir(), 'duffy-backup-')), name));
    expect((await cli('backup', older, '--data-dir', dataDir)).code).toBe(0);
    const second = await ask('vm');
    expect((await cli('backup', newer, '--data-dir', dataDir)).code).toBe(0);
    const third = await ask('vm');
    await duffy.close();

    const undone = async (backup: string) => {
      const r = await cli('restore', backup, '--data-dir', dataDir);
      expect([r.code, r.stderr]).toEqual([0, '']);
      return r.stdout.split('\n').find((l) => l.startsWith('undone: '));
    };
    expect(await undone(newer)).toMatch(new RegExp(`: 1 session\\(s\\), and new sessions are numbered from ${third.id + 1} on .*: ${third.hostname} \\(recorded`));
    // The replaced ledger is the restored one: what the first restore undid is undone again.
    expect(await undone(newer)).toMatch(new RegExp(`: 1 session\\(s\\), and new sessions are numbered from ${third.id + 1} on .*: ${third.hostname} \\(recorded`));
    expect(await undone(older)).toMatch(new RegExp(`: 2 session\\(s\\), and new sessions are numbered from ${third.id + 1} on .*: ${[second.hostname, third.hostname].sort().join(', ')} \\(recorded`));

    duffy = await startDuffy({ dataDir });
    gamma = duffy.client('gamma', key);
    try {
      expect((await gamma.put(`/api/v1/sessions/${third.id}`, { active: false })).status).toBe(404);
      expect((await ask('baremetal')).id).toBe(third.id + 1);
      const nodes = (await duffy.admin.get('/api/v1/nodes')).body.nodes as Array<{ hostname: string; service: string }>;
      expect(nodes.filter((n) => [second.hostname, third.hostname].includes(n.hostname)).map((n) => n.service)).toEqual(['maintenance', 'maintenance']);
    } finally {
      await duffy.close();
    }
  });

  it('puts a machine retired in the lost hours in maintenance, not back in service (it was in service, and the restore said nothing)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-restore-retired-'));
    let duffy = await startDuffy({ dataDir });
    const backup = join(mkdtempSync(join(tmpdir(), 'duffy-backup-')), 'retired');
    expect((await cli('backup', backup, '--data-dir', dataDir)).code).toBe(0);
    const node = (await duffy.admin.get('/api/v1/nodes')).body.nodes.find((n: { hostname: string }) => n.hostname === 'metal-amd-06.demo.duffy');
    expect((await duffy.admin.put(`/api/v1/nodes/${node.id}`, { retired: true })).status).toBe(200);
    await duffy.close();

    const restored = await cli('restore', backup, '--data-dir', dataDir);
    expect(restored.stdout).toMatch(/^undone: .*\): metal-amd-06\.demo\.duffy \(recorded/m);
    duffy = await startDuffy({ dataDir });
    try {
      expect((await duffy.admin.get(`/api/v1/nodes/${node.id}`)).body.node.service).toBe('maintenance');
    } finally {
      await duffy.close();
    }
  });

  it('holds a machine the lost hours registered and used, unknown to the backup, in maintenance once a start registers it again from the configuration (it was handed out as new)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-restore-unknown-'));
    let duffy = await startDuffy({ dataDir });
    const key = await registerGamma(duffy);
    const backup = join(mkdtempSync(join(tmpdir(), 'duffy-backup-')), 'before-power9');
    expect((await cli('backup', backup, '--data-dir', dataDir)).code).toBe(0);
    await duffy.close();
    // The lost hours: a new machine in the configuration, used at once.
    const configFile = instantDemoConfig();
    const config = parse(readFileSync(configFile, 'utf8'));
    config.pools.push({ ...config.pools.find((p: { type: string }) => p.type === 'vm'), name: 'vm-power', arch: 'ppc64le', platform: 'power' });
    config.machines.push({ hostname: 'vm-power-01.test', pool: 'vm-power', state: 'ready' });
    writeFileSync(configFile, stringify(config));
    duffy = await startDuffy({ dataDir, configFile });
    expect((await duffy.client('gamma', key).post('/api/v1/sessions', { nodes_specs: [{ type: 'vm', arch: 'ppc64le', quantity: 1 }] })).status).toBe(201);
    await duffy.close();

    const restored = await cli('restore', backup, '--data-dir', dataDir);
    expect(restored.stdout).toMatch(/; registered after the backup, unknown to this ledger, in maintenance too once a start registers them again \(the configuration lists them\): vm-power-01\.test \(recorded/);
    duffy = await startDuffy({ dataDir, configFile });
    try {
      const node = (await duffy.admin.get('/api/v1/nodes')).body.nodes.find((n: { hostname: string }) => n.hostname === 'vm-power-01.test');
      expect([node.service, node.service_reason]).toEqual(['maintenance', expect.stringMatching(/^used after the backup restored on /)]);
    } finally {
      await duffy.close();
    }
  });

  it('killed after it moved the ledger aside, nothing starts on the half state, and run again it records the hours it undoes (a Duffy started there on a new, empty ledger; run again, it gave the ids again)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-restore-killed-'));
    let duffy = await startDuffy({ dataDir });
    const key = await registerGamma(duffy);
    let gamma = duffy.client('gamma', key);
    const ask = (type: string) => oneMachine(gamma, type);
    await ask('baremetal');
    const backup = join(mkdtempSync(join(tmpdir(), 'duffy-backup-')), 'killed');
    expect((await cli('backup', backup, '--data-dir', dataDir)).code).toBe(0);
    const lost = await ask('vm');
    await duffy.close();
    const head = readFileSync(join(dataDir, 'ledger.sqlite.head'));

    // Killed with the replaced ledger aside and the backup's not yet in place.
    const preload = fileURLToPath(new URL('../support/kill-before-rename.cjs', import.meta.url));
    const killed = await exec(process.execPath, ['--require', preload, CLI, 'restore', backup, '--data-dir', dataDir], { env: { PATH: process.env.PATH, KILL_BEFORE_RENAME_OF: 'ledger.sqlite.restoring' } }).catch((e) => e);
    expect([killed.signal, existsSync(join(dataDir, 'ledger.sqlite'))]).toEqual(['SIGKILL', false]);
    const start = await startDuffy({ dataDir }).then(async (d) => (await d.close(), 'started'), (err: Error) => err.message);
    expect(start).toMatch(/^a duffy restore into .* was cut short \(restore-unfinished is there\): run the same duffy restore again/);

    const again = await cli('restore', backup, '--data-dir', dataDir);
    expect([again.code, again.stderr]).toEqual([0, '']);
    const aside = /a restore cut short before had moved the ledger it replaced to (.*replaced-[^:]*): it is kept there/.exec(again.stdout)![1];
    // Kept whole: its own head record, not the backup's the killed restore had put in place.
    expect(readFileSync(join(aside, 'ledger.sqlite.head'))).toEqual(head);
    const kept = await cli('audit', '--ledger', join(aside, 'ledger.sqlite'), 'verify');
    expect([kept.code, kept.stdout]).toEqual([0, expect.stringMatching(/^OK: /)]);
    expect(again.stdout).toMatch(new RegExp(`undone: .*: 1 session\\(s\\), and new sessions are numbered from ${lost.id + 1} on .*: ${lost.hostname} \\(recorded`));
    duffy = await startDuffy({ dataDir });
    gamma = duffy.client('gamma', key);
    try {
      expect((await gamma.put(`/api/v1/sessions/${lost.id}`, { active: false })).status).toBe(404);
      expect((await ask('baremetal')).id).toBe(lost.id + 1);
    } finally {
      await duffy.close();
    }
  });

  it('killed after it put the backup in place, run again it names where the ledger it first replaced is kept (it named only the one it replaced itself)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-restore-killed-late-'));
    let duffy = await startDuffy({ dataDir });
    const gamma = duffy.client('gamma', await registerGamma(duffy));
    await oneMachine(gamma, 'baremetal');
    const backup = join(mkdtempSync(join(tmpdir(), 'duffy-backup-')), 'late');
    expect((await cli('backup', backup, '--data-dir', dataDir)).code).toBe(0);
    await oneMachine(gamma, 'vm');
    await duffy.close();
    const preload = fileURLToPath(new URL('../support/kill-before-rename.cjs', import.meta.url));
    const killed = await exec(process.execPath, ['--require', preload, CLI, 'restore', backup, '--data-dir', dataDir], { env: { PATH: process.env.PATH, KILL_BEFORE_REMOVE_OF: 'restore-unfinished' } }).catch((e) => e);
    expect(killed.signal).toBe('SIGKILL');
    const first = readdirSync(dataDir).filter((f) => f.startsWith('replaced-'));
    expect(first).toHaveLength(1);
    const again = await cli('restore', backup, '--data-dir', dataDir);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`a restore cut short before had moved the ledger it replaced to ${join(dataDir, first[0])}: it is kept there`);
    duffy = await startDuffy({ dataDir });
    await duffy.close();
  });

  // Node's recursive mkdir took /proc's ENOENT for a missing parent, and made /proc again, for ever at 100 % CPU.
  it('says a backup directory that cannot be created (under /proc, under a file) cannot be, and stops', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-backup-proc-'));
    await (await startDuffy({ dataDir })).close();
    const file = join(dataDir, 'ledger.sqlite');
    for (const [to, why] of [
      ['/proc/duffy-backup', 'ENOENT: its file system takes no new directory there'],
      ['/proc/duffy-backup/monday', 'ENOENT: its file system takes no new directory there'],
      [join(file, 'monday'), 'ENOTDIR: a part of the path is a file'],
    ]) {
      const r = await runCliWithin(20_000, { PATH: process.env.PATH, HOME: '/nonexistent' }, 'backup', to, '--data-dir', dataDir);
      expect([r.code, r.stderr]).toEqual([1, `duffy: the backup directory ${to} cannot be created (${why}): give a new or empty directory where this user can write\n`]);
    }
    expect(existsSync('/proc/duffy-backup')).toBe(false);
  });

  it('says a backup cut short is one: restore refuses it and audit names the half-written file, where both said "attempt to write a readonly database"', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-backup-cut-'));
    await (await startDuffy({ dataDir })).close();
    const whole = join(mkdtempSync(join(tmpdir(), 'duffy-backup-')), 'whole');
    expect((await cli('backup', whole, '--data-dir', dataDir)).code).toBe(0);
    expect(readdirSync(whole)).not.toContain('backup-unfinished');
    // What a backup killed mid-copy leaves: its marker, and a ledger file with SQLite's journal of the write under way.
    const cut = join(mkdtempSync(join(tmpdir(), 'duffy-backup-')), 'cut');
    mkdirSync(cut);
    writeFileSync(join(cut, 'backup-unfinished'), '');
    const { default: Database } = await import('better-sqlite3');
    const writing = new Database(join(dirname(cut), 'work.sqlite'));
    writing.exec('CREATE TABLE t(x)');
    const row = writing.prepare('INSERT INTO t VALUES (?)');
    for (let i = 0; i < 2000; i++) row.run('x'.repeat(500));
    writing.pragma('cache_size = 1');
    writing.exec("BEGIN IMMEDIATE; UPDATE t SET x = x || 'y'");
    for (const [from, to] of [['work.sqlite', 'ledger.sqlite'], ['work.sqlite-journal', 'ledger.sqlite-journal']]) writeFileSync(join(cut, to), readFileSync(join(dirname(cut), from)));
    writing.exec('ROLLBACK');
    writing.close();
    const restore = await cli('restore', cut, '--data-dir', mkdtempSync(join(tmpdir(), 'duffy-restore-cut-')));
    expect([restore.code, restore.stderr]).toEqual([2, expect.stringMatching(/^duffy: the backup in .*cut was cut short \(backup-unfinished is there.*nothing restored; take another\n$/)]);
    const verify = await cli('audit', '--ledger', join(cut, 'ledger.sqlite'), 'verify');
    expect([verify.code, verify.stderr]).toEqual([2, expect.stringMatching(/ledger\.sqlite is a backup cut short \(backup-unfinished is beside it: its duffy backup was killed or is still running\): not read; take another/)]);
    // Cut short after the ledger was copied whole, before its last check: not an OK (it was one, exit 0), nor a checkpoint or a replay.
    writeFileSync(join(whole, 'backup-unfinished'), '');
    for (const command of [['verify'], ['checkpoint', '--out', join(whole, 'cp.json')], ['replay']]) {
      const late = await cli('audit', '--ledger', join(whole, 'ledger.sqlite'), ...command);
      expect([late.code, late.stdout]).toEqual([2, '']);
    }
  });

  it("onto a data directory whose read models followed another ledger (a new host started once), serves the backup's history, not theirs", async () => {
    const prod = await startDuffy();
    await newTenant(prod, 'prod');
    await newTenant(prod, 'prod2');
    await prod.close();
    const backup = join(mkdtempSync(join(tmpdir(), 'duffy-backup-')), 'prod');
    expect((await cli('backup', backup, '--data-dir', prod.dataDir)).code).toBe(0);
    // The new host: its read models' checkpoint is past the events of 'prod', short of those of 'prod2'.
    const fresh = await startDuffy();
    await newTenant(fresh, 'other');
    await fresh.close();
    expect((await cli('restore', backup, '--data-dir', fresh.dataDir)).code).toBe(0);
    const duffy = await startDuffy({ dataDir: fresh.dataDir });
    try {
      // Caught up over the other history, they listed 'other' and 'prod2', and never 'prod'.
      const names = (await duffy.admin.get('/api/v1/tenants')).body.tenants.map((t: { name: string }) => t.name);
      expect(names).toEqual(['admin', 'prod', 'prod2']);
    } finally {
      await duffy.close();
    }
  });

  it("onto a new host that made a signing key of its own, signs on with the backup's key, so an auditor's checkpoint of before still verifies", async () => {
    const prod = await startDuffy();
    await newTenant(prod, 'prod');
    const pinned = join(mkdtempSync(join(tmpdir(), 'duffy-auditor-')), 'server.json');
    writeFileSync(pinned, JSON.stringify((await prod.admin.get('/api/v1/audit/checkpoint')).body));
    await prod.close();
    const backup = join(mkdtempSync(join(tmpdir(), 'duffy-backup-')), 'prod');
    expect((await cli('backup', backup, '--data-dir', prod.dataDir)).code).toBe(0);
    // The new host was started once to try it: another ledger, another key.
    const fresh = await startDuffy();
    await fresh.close();
    const freshKey = readFileSync(join(fresh.dataDir, 'audit-ed25519.pem'), 'utf8');
    const restored = await cli('restore', backup, '--data-dir', fresh.dataDir);
    expect([restored.code, restored.stdout]).toEqual([0, expect.stringMatching(/^restored .* with its signing key audit-ed25519\.pem\n/)]);
    const aside = /what it replaced is in (\S+):/.exec(restored.stdout)?.[1];
    expect(readFileSync(join(aside!, 'audit-ed25519.pem'), 'utf8')).toBe(freshKey);
    // The trial start only registered the machines: none of them was used, none goes to maintenance (all did).
    expect(restored.stdout).not.toContain('in maintenance');
    process.env.DUFFY_CHECKPOINT_EVERY_EVENTS = '1';
    try {
      const duffy = await startDuffy({ dataDir: fresh.dataDir });
      await newTenant(duffy, 'after-the-restore');
      while (!(await ledgerEvents(duffy)).some((e) => e.type === 'CheckpointPublished' && e.position > BigInt(JSON.parse(readFileSync(pinned, 'utf8')).lastPosition))) await sleep(50);
      await duffy.close();
    } finally {
      delete process.env.DUFFY_CHECKPOINT_EVERY_EVENTS;
    }
    // With the new host's key, its checkpoints read as made up to sign a rewrite (TAMPERED, exit 1).
    const verify = await cli('audit', '--ledger', join(fresh.dataDir, 'ledger.sqlite'), 'verify', '--checkpoint', pinned);
    expect([verify.code, verify.stdout]).toEqual([0, expect.stringMatching(/^OK: /)]);
  });
});
