import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { existsSync, mkdirSync } from 'node:fs';
import { type Browser, type BrowserContext, type Page, chromium } from 'playwright-core';
import { ADMIN_KEY, type Client, type Running, newTenant, startDuffy } from '../support/server.js';
import { setTimeout as sleep } from 'node:timers/promises';

const CHROMIUM = '/usr/bin/chromium';
const SCREENSHOT = 'test-results/ops-page.png';
/** The page refreshes every 2 s, spaced up to 4x a slow refresh's time on a loaded machine: a bound for the test, not a speed target. */
const LIVE_WITHIN = 20_000;
const DEMO_POOLS = ['metal-intel-x86_64', 'metal-amd-x86_64', 'metal-arm-aarch64', 'vm-intel-x86_64', 'vm-arm-aarch64'];

// The callbacks handed to waitForFunction/evaluateAll run in the page; the project compiles without the DOM lib.
interface PageNode {
  textContent: string | null;
}
declare const document: { querySelector(selector: string): PageNode | null; querySelectorAll(selector: string): Iterable<PageNode> & { length: number } };
declare function getComputedStyle(element: unknown): { backgroundColor: string };
/** Set by the test on the open page: a reload would drop it. */
declare const window: { loadedOnce?: boolean };

async function session(client: Client, pool: string, quantity = 1): Promise<number> {
  const r = await client.post('/api/v1/sessions', { nodes_specs: [{ pool, quantity }] });
  if (r.status !== 201) throw new Error(`session in ${pool}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.session.id;
}

async function done(client: Client, id: number): Promise<void> {
  const r = await client.put(`/api/v1/sessions/${id}`, { active: false });
  if (r.status !== 200) throw new Error(`done ${id}: ${r.status} ${JSON.stringify(r.body)}`);
}

describe('the ops page: access and the events endpoint', () => {
  let duffy: Running;
  let alice: Client;

  beforeAll(async () => {
    duffy = await startDuffy();
    alice = await newTenant(duffy, 'alice');
    await done(alice, await session(alice, 'vm-intel-x86_64'));
  });
  afterAll(() => duffy.close());

  it('/ops answers 401 with a Basic challenge without credentials, 403 to a tenant, HTML to the admin', async () => {
    const anonymous = await fetch(`${duffy.url}/ops`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toMatch(/^Basic /);
    expect(((await anonymous.json()) as { detail: string }).detail).toMatch(/Basic auth/);

    const tenant = await alice.get('/ops');
    expect(tenant.status).toBe(403);
    expect(tenant.body).toEqual({ detail: 'only admins may open the ops page' });
    // The page's own type was set before the handler refused: a refusal is JSON, not HTML.
    expect(tenant.headers.get('content-type')).toBe('application/json; charset=utf-8');

    const admin = await duffy.admin.get('/ops');
    expect(admin.status).toBe(200);
    expect(admin.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(admin.headers.get('content-security-policy')).toMatch(/default-src 'none'.*script-src 'sha256-/);
    expect(admin.body).toMatch(/^<!doctype html>/);
    // Self-contained: nothing loaded from another origin.
    expect(admin.body).not.toMatch(/(src|href)=["']?(https?:)?\/\//i);
    // Outside the /api/v1 prefix.
    expect((await duffy.admin.get('/api/v1/ops')).status).toBe(404);
  });

  it('GET /api/v1/events lists the newest events first, admin only, with limit checked', async () => {
    const r = await duffy.admin.get('/api/v1/events?limit=5');
    expect(r.status).toBe(200);
    expect(r.body.action).toBe('get');
    expect(r.body.events).toHaveLength(5);
    for (const e of r.body.events) {
      expect(Object.keys(e).sort()).toEqual(['actor', 'at', 'position', 'revision', 'stream', 'type']);
      expect(e.position).toMatch(/^[0-9]+$/);
      expect(e.at).toMatch(/^\d{4}-\d\d-\d\dT/);
    }
    const positions = r.body.events.map((e: { position: string }) => BigInt(e.position));
    expect([...positions].sort((a, b) => (a < b ? 1 : a > b ? -1 : 0))).toEqual(positions);
    // The last thing that happened: alice's session ended.
    const all = await duffy.admin.get('/api/v1/events');
    expect(all.body.events).toHaveLength(50);
    expect(all.body.events.map((e: { type: string }) => e.type)).toContain('SessionStarted');
    expect(all.body.events.find((e: { type: string }) => e.type === 'SessionStarted').actor).toBe('alice');

    for (const bad of ['0', '201', 'ten', '-1', '1.5']) {
      const refused = await duffy.admin.get(`/api/v1/events?limit=${bad}`);
      expect(refused.status).toBe(422);
      expect(refused.body.detail).toMatch(/^limit must be an integer from 1 to 200/);
    }
    expect((await duffy.admin.get('/api/v1/events?limit=200')).status).toBe(200);
    const tenant = await alice.get('/api/v1/events');
    expect(tenant.status).toBe(403);
    expect(tenant.body.detail).toMatch(/admins/);
  });

  it('after a restart the events recorded before it are still listed', async () => {
    const before = (await duffy.admin.get('/api/v1/events?limit=200')).body.events;
    const dataDir = duffy.dataDir;
    await duffy.close();
    duffy = await startDuffy({ dataDir });
    const after = (await duffy.admin.get('/api/v1/events?limit=200')).body.events;
    expect(after.length).toBeGreaterThanOrEqual(before.length);
    // Same history: what was newest before the restart is still there, in the same order.
    const positions = new Set(after.map((e: { position: string }) => e.position));
    for (const e of before) expect(positions.has(e.position)).toBe(true);
  });
});

describe('the ops page in headless Chromium', () => {
  let duffy: Running;
  let browser: Browser | undefined;
  let context: BrowserContext;
  let page: Page;
  let alice: Client;
  let bob: Client;
  const problems: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} is missing: run \`bash scripts/setup.sh\` (it installs Debian's chromium) before the ops page test`);
    }
    duffy = await startDuffy();
    alice = await newTenant(duffy, 'alice');
    bob = await newTenant(duffy, 'bob');
    // Some history: busy time on a few machines, some sessions still running.
    const a1 = await session(alice, 'vm-intel-x86_64', 2);
    const b1 = await session(bob, 'metal-amd-x86_64');
    await session(alice, 'metal-intel-x86_64');
    await sleep(60);
    await done(alice, a1);
    await done(bob, b1);
    await session(bob, 'metal-amd-x86_64');
    await session(alice, 'vm-intel-x86_64');

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    context = await browser.newContext({ httpCredentials: { username: 'admin', password: ADMIN_KEY }, viewport: { width: 1280, height: 800 } });
    page = await context.newPage();
    page.on('console', (m) => void (m.type() === 'error' && problems.push(`console: ${m.text()}`)));
    page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
    page.on('request', (req) => void (req.url().startsWith(duffy.url) || problems.push(`request to another origin: ${req.url()}`)));
    page.on('response', (res) => void (res.status() >= 400 && problems.push(`${res.status()} ${res.url()}`)));
  });

  afterAll(async () => {
    await browser?.close();
    await duffy?.close();
  });

  const count = (selector: string) => page.locator(selector).count();

  it('renders pool levels, the wear heat map, fairness and recent events', async () => {
    const response = await page.goto(`${duffy.url}/ops`);
    expect(response?.status()).toBe(200);
    const nodes = (await duffy.admin.get('/api/v1/nodes')).body.nodes as Array<{ hostname: string; pool: string }>;
    expect(nodes).toHaveLength(21);

    await page.waitForFunction((n) => document.querySelectorAll('[data-testid=heat-square]').length === n, nodes.length, { timeout: 10_000 });
    await page.waitForSelector('[data-testid=event-row]', { timeout: 10_000 });
    await page.waitForSelector('[data-testid=fairness-row][data-tenant=bob]', { timeout: 10_000 });
    await page.waitForFunction(() => document.querySelector('[data-testid=last-updated]')?.textContent !== 'never', null, { timeout: 10_000 });

    // Pool levels: every demo pool, with the figures of GET /pools/{name}.
    expect(await count('[data-testid=pool-row]')).toBe(DEMO_POOLS.length);
    for (const pool of DEMO_POOLS) {
      const levels = (await duffy.admin.get(`/api/v1/pools/${pool}`)).body.pool.levels;
      const row = page.locator(`[data-testid=pool-row][data-pool="${pool}"]`);
      await expect(row.locator('td b').first().textContent()).resolves.toBe(pool);
      for (const state of ['ready', 'deployed']) {
        await expect(row.locator(`td[data-state=${state}]`).textContent()).resolves.toBe(String(levels[state]));
      }
    }
    const metal = await page.locator('[data-testid=pool-row][data-pool=metal-amd-x86_64]').textContent();
    expect(metal).toContain('baremetal · x86_64 · amd');

    // Heat map: one square per machine, grouped by pool, with a Gini per pool and the figures in the tooltip.
    const hostnames = await page.locator('[data-testid=heat-square]').evaluateAll((els) => els.map((e) => e.getAttribute('data-hostname')));
    expect(hostnames.sort()).toEqual(nodes.map((n) => n.hostname).sort());
    expect(await count('[data-testid=heatmap-pool]')).toBe(DEMO_POOLS.length);
    for (const pool of DEMO_POOLS) {
      const block = page.locator(`[data-testid=heatmap-pool][data-pool="${pool}"]`);
      expect(await block.locator('[data-testid=heat-square]').count()).toBe(nodes.filter((n) => n.pool === pool).length);
      await expect(block.locator('[data-testid=pool-gini]').textContent()).resolves.toMatch(/^[01]\.\d\d$/);
    }
    const stress = (await duffy.admin.get('/api/v1/stats/stress')).body;
    const worn = stress.machines.find((m: { busy_ms: number; pool: string }) => m.pool === 'vm-intel-x86_64' && m.busy_ms > 0);
    expect(worn).toBeDefined();
    const tooltip = await page.locator(`[data-testid=heat-square][data-hostname="${worn.hostname}"]`).getAttribute('title');
    expect(tooltip).toContain(worn.hostname);
    expect(tooltip).toMatch(/busy \d+ ms \(100 % of pool max\)/);
    expect(tooltip).toContain(`${worn.allocations} allocation`);
    expect(tooltip).toContain('0 provisioning failures');
    // The most worn machine of a pool is darker than an unused one.
    const colours = await page
      .locator('[data-testid=heatmap-pool][data-pool=vm-intel-x86_64] [data-testid=heat-square]')
      .evaluateAll((els) => els.map((e) => [Number(e.getAttribute('data-busy-ms')), getComputedStyle(e).backgroundColor] as const));
    const lightness = (rgb: string) => rgb.match(/\d+/g)!.slice(0, 3).map(Number).reduce((a, b) => a + b, 0);
    const byBusy = [...colours].sort((a, b) => a[0] - b[0]);
    expect(lightness(byBusy[byBusy.length - 1][1])).toBeLessThan(lightness(byBusy[0][1]));

    // Fairness: a row per tenant with the projection's figures.
    const tenants = await page.locator('[data-testid=fairness-row]').evaluateAll((els) => els.map((e) => e.getAttribute('data-tenant')));
    expect(tenants.sort()).toEqual(['admin', 'alice', 'bob']);
    const aliceRow = await page.locator('[data-testid=fairness-row][data-tenant=alice] td').allTextContents();
    expect(aliceRow[1]).toBe('2'); // one metal-intel + one vm-intel machine still held
    // Jain's index needs machine-hours over 24 h that round above 0.001: these sessions were milliseconds long.
    const jain = (await duffy.admin.get('/api/v1/stats/fairness')).body.jain_index_24h as number | null;
    expect(await page.locator('[data-testid=jain-index]').textContent()).toBe(jain === null ? '—' : jain.toFixed(3));

    // Recent events, newest first, with the session events of the data above.
    const types = await page.locator('[data-testid=event-row]').evaluateAll((els) => els.map((e) => e.getAttribute('data-type')));
    expect(types).toContain('SessionStarted');
    expect(types).toContain('MachineReleased');
    const positions = await page.locator('[data-testid=event-row]').evaluateAll((els) => els.map((e) => BigInt(e.getAttribute('data-position')!)));
    expect(positions.length).toBe(50);
    expect(positions.every((p, i) => i === 0 || p < positions[i - 1])).toBe(true);

    // Hand-over: the instant demo pools deploy at once, so nothing is in hand-over; the queue placeholder is there.
    expect(await count('[data-testid=handover-row]')).toBe(0);
    await expect(page.locator('[data-testid=handover]').textContent()).resolves.toContain('every active session has all its machines deployed');
    await expect(page.locator('[data-testid=waiting-queue]').textContent()).resolves.toContain('nobody is waiting');

    expect(await page.locator('[data-testid=status]').getAttribute('data-state')).toBe('live');
    expect((await page.locator('[data-testid=error]').allTextContents()).join('')).toBe('');
    expect(problems).toEqual([]);
  });

  it('shows a new request without a reload (live refresh)', async () => {
    const carol = await newTenant(duffy, 'carol');
    const before = Number(await page.locator('[data-testid=pool-row][data-pool=vm-arm-aarch64] td[data-state=deployed]').textContent());
    // Gone if the page were loaded again: what follows must come from the page's own refresh.
    await page.evaluate(() => (window.loadedOnce = true));
    const id = await session(carol, 'vm-arm-aarch64');
    await page.waitForSelector('[data-testid=fairness-row][data-tenant=carol]', { timeout: LIVE_WITHIN });
    await page.waitForFunction(
      (stream) => [...document.querySelectorAll('[data-testid=event-row][data-type=SessionStarted] td')].some((td) => td.textContent === stream),
      `session-${id}`,
      { timeout: LIVE_WITHIN },
    );
    await page.waitForFunction(
      (n) => document.querySelector('[data-testid=pool-row][data-pool=vm-arm-aarch64] td[data-state=deployed]')?.textContent === String(n),
      before + 1,
      { timeout: LIVE_WITHIN },
    );
    expect(await page.evaluate(() => window.loadedOnce)).toBe(true);
    const carolRow = await page.locator('[data-testid=fairness-row][data-tenant=carol] td').allTextContents();
    expect(carolRow[1]).toBe('1');

    mkdirSync('test-results', { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    expect(problems).toEqual([]);
  });

  it('shows each machine\'s service, and a waiting request in full at 1,400 px', async () => {
    await page.setViewportSize({ width: 1400, height: 900 });
    const nodes = (await duffy.admin.get('/api/v1/nodes')).body.nodes as Array<{ id: number; hostname: string; pool: string }>;
    // carol holds one arm VM (above); the other goes into maintenance, so a request for one must wait.
    const free = (await duffy.admin.get('/api/v1/nodes')).body.nodes.find((n: { pool: string; state: string }) => n.pool === 'vm-arm-aarch64' && n.state === 'ready');
    expect((await duffy.admin.put(`/api/v1/nodes/${free.id}`, { maintenance: true, reason: 'disk swap' })).status).toBe(200);
    const waiting = bob.post('/api/v1/sessions', { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 1 }], wait: 60 });

    await page.waitForSelector(`[data-testid=service-row][data-hostname="${free.hostname}"]`, { timeout: LIVE_WITHIN });
    const row = await page.locator(`[data-testid=service-row][data-hostname="${free.hostname}"] td`).allTextContents();
    expect(row).toEqual([free.hostname, 'vm-arm-aarch64', 'maintenance', 'ready', 'disk swap']);
    expect(await page.locator(`[data-testid=heat-square][data-hostname="${free.hostname}"]`).getAttribute('data-service')).toBe('maintenance');
    expect(await page.locator(`[data-testid=heat-square][data-hostname="${free.hostname}"]`).getAttribute('title')).toContain('service: maintenance (disk swap)');
    await page.waitForFunction(
      () => document.querySelector('[data-testid=pool-row][data-pool=vm-arm-aarch64] td[data-state=maintenance]')?.textContent === '1',
      null,
      { timeout: LIVE_WITHIN },
    );
    expect(nodes.filter((n) => n.pool === 'vm-arm-aarch64')).toHaveLength(2);

    // The queue row fits its section: the since and until columns are not cut off.
    await page.waitForSelector('[data-testid=queue-row]', { timeout: LIVE_WITHIN });
    const box = (await page.locator('[data-testid=waiting-queue]').boundingBox())!;
    for (const key of ['reason', 'since', 'until']) {
      const cell = (await page.locator(`[data-testid=queue-row] td[data-key=${key}]`).boundingBox())!;
      expect([key, cell.x + cell.width <= box.x + box.width]).toEqual([key, true]);
    }
    expect(await page.locator('[data-testid=queue-row] td[data-key=until]').textContent()).toMatch(/^\d\d:\d\d:\d\d$/);
    await page.screenshot({ path: 'test-results/ops-page-service.png', fullPage: true });

    const queued = (await duffy.admin.get('/api/v1/queue')).body.queue[0].session;
    await bob.put(`/api/v1/sessions/${queued}`, { active: false });
    expect((await waiting).status).toBe(422);
    await duffy.admin.put(`/api/v1/nodes/${free.id}`, { maintenance: false });
    // A retired machine is out of service for good: listed too, though GET /nodes leaves it out (as Duffy v3).
    const old = (await duffy.admin.post('/api/v1/nodes', { hostname: 'old-box.test', pool: 'vm-arm-aarch64' })).body.node;
    expect((await duffy.admin.put(`/api/v1/nodes/${old.id}`, { retired: true, reason: 'end of life' })).status).toBe(200);
    await page.waitForSelector('[data-testid=service-row][data-hostname="old-box.test"]', { timeout: LIVE_WITHIN });
    expect(await page.locator('[data-testid=service-row][data-hostname="old-box.test"] td').allTextContents()).toEqual(['old-box.test', 'vm-arm-aarch64', 'retired', 'ready', 'end of life']);
    // Its host name registered again is a new machine: each square shows its own machine's service (before: both the
    // newer node's, in-service, since the page matched squares to nodes by host name).
    const again = (await duffy.admin.post('/api/v1/nodes', { hostname: 'old-box.test', pool: 'vm-arm-aarch64' })).body.node;
    const square = (id: number) => page.locator(`[data-testid=heat-square][data-machine-id="${id}"]`);
    await square(again.id).waitFor({ timeout: LIVE_WITHIN });
    expect([await square(old.id).getAttribute('data-service'), await square(again.id).getAttribute('data-service')]).toEqual(['retired', 'in-service']);
    expect(await square(old.id).getAttribute('title')).toContain('service: retired (end of life)');
    expect(problems).toEqual([]);
  });

  // A bookmark like http://admin:key@duffy/ops: relative fetches would carry the credentials, which fetch refuses.
  it('loads every section when opened with the credentials in its URL', async () => {
    const bare = await browser!.newContext({ viewport: { width: 1280, height: 800 } });
    try {
      const bookmarked = await bare.newPage();
      const failures: string[] = [];
      bookmarked.on('response', (res) => void (res.status() >= 400 && failures.push(`${res.status()} ${res.url()}`)));
      const url = new URL(`${duffy.url}/ops`);
      url.username = 'admin';
      url.password = ADMIN_KEY;
      expect((await bookmarked.goto(url.href))?.status()).toBe(200);
      await bookmarked.waitForFunction(() => document.querySelector('[data-testid=last-updated]')?.textContent !== 'never', null, { timeout: 10_000 });
      expect(await bookmarked.locator('[data-testid=pool-row]').count()).toBe(DEMO_POOLS.length);
      expect(await bookmarked.locator('[data-testid=status]').getAttribute('data-state')).toBe('live');
      expect((await bookmarked.locator('[data-testid=error]').allTextContents()).join('')).toBe('');
      expect(failures).toEqual([]);
    } finally {
      await bare.close();
    }
  });
});
