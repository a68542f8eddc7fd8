/**
 * The ops page: one self-contained HTML document (inline CSS and vanilla JS, nothing fetched from elsewhere),
 * served by OpsPageController at /ops. Its script polls the admin JSON endpoints every 2 s with the Basic
 * credentials the browser already holds for this origin.
 *
 * The script is plain ES2020 written without template literals, so it sits in these TypeScript template
 * strings as is. The controller allows exactly this style and script through its Content-Security-Policy
 * (by hash), so edit them here and nowhere else.
 */

export const OPS_PAGE_STYLE = `
:root {
  --bg: #f6f7f9; --panel: #ffffff; --ink: #1c2128; --muted: #57606a; --line: #d0d7de; --head: #eef1f4;
  --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --accent: #0550ae;
  --s-provisioning: #bf8700; --s-ready: #1a7f37; --s-contextualizing: #8250df; --s-deployed: #0550ae; --s-deprovisioning: #6e7781; --s-other: #d0d7de;
  --s-unused: #afb8c1; --s-maintenance: #9a6700; --s-quarantined: #cf222e; --s-failed: #82071e; --s-retired: #424a53;
}
* { box-sizing: border-box; }
html, body { margin: 0; background: var(--bg); color: var(--ink); }
body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
header { display: flex; align-items: center; gap: 16px; padding: 10px 20px; background: #24292f; color: #fff; }
header h1 { font-size: 16px; margin: 0; font-weight: 600; }
header h1 span { font-weight: 400; color: #c9d1d9; }
header .spacer { flex: 1; }
#status { display: flex; align-items: center; gap: 8px; font-variant-numeric: tabular-nums; }
#status .dot { width: 10px; height: 10px; border-radius: 50%; background: #8c959f; }
#status[data-state="live"] .dot { background: #3fb950; }
#status[data-state="stale"] .dot, #status[data-state="paused"] .dot { background: #d29922; }
#status[data-state="error"] .dot { background: #f85149; }
header button { font: inherit; color: #fff; background: transparent; border: 1px solid #8c959f; border-radius: 4px; padding: 3px 10px; cursor: pointer; }
header button:hover, header button:focus-visible { border-color: #fff; outline: none; }
main { display: grid; grid-template-columns: minmax(0, 7fr) minmax(0, 5fr); align-items: start; gap: 16px; padding: 16px 20px 24px; max-width: 1600px; margin: 0 auto; }
section { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; min-width: 0; }
section.wide { grid-column: 1 / -1; }
section > h2 { display: flex; align-items: baseline; gap: 12px; margin: 0; padding: 8px 12px; font-size: 13px; font-weight: 600;
  text-transform: uppercase; letter-spacing: .04em; border-bottom: 1px solid var(--line); background: var(--head); border-radius: 6px 6px 0 0; }
section > h2 .aside { margin-left: auto; text-transform: none; letter-spacing: 0; font-weight: 400; color: var(--muted); }
section > h2 .aside b { color: var(--ink); font-weight: 600; font-variant-numeric: tabular-nums; }
.body { padding: 8px 12px 12px; overflow-x: auto; }
.sub { display: block; color: var(--muted); font-size: 12px; }
.error { color: var(--bad); margin: 6px 0 0; }
.error:empty { display: none; }
.empty { color: var(--muted); font-style: italic; padding: 6px 0; }
.note { color: var(--muted); margin: 4px 0 0; }
code { font: 12px/1.3 ui-monospace, "DejaVu Sans Mono", monospace; background: var(--head); padding: 0 3px; border-radius: 3px; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eaeef2; white-space: nowrap; }
th { font-weight: 600; color: var(--muted); font-size: 12px; border-bottom: 1px solid var(--line); }
td.num, th.num { text-align: right; }
td.mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
td.low { background: #fff8c5; color: var(--warn); font-weight: 600; }
td.zero { color: #8c959f; }
tbody tr:hover { background: #f6f8fa; }
.swatch { display: inline-block; width: 9px; height: 9px; border-radius: 2px; margin-right: 5px; vertical-align: baseline; }
.sw-provisioning { background: var(--s-provisioning); } .sw-ready { background: var(--s-ready); } .sw-contextualizing { background: var(--s-contextualizing); }
.sw-deployed { background: var(--s-deployed); } .sw-deprovisioning { background: var(--s-deprovisioning); } .sw-other { background: var(--s-other); }
.sw-unused { background: var(--s-unused); } .sw-maintenance { background: var(--s-maintenance); } .sw-quarantined { background: var(--s-quarantined); }
.sw-failed { background: var(--s-failed); } .sw-retired { background: var(--s-retired); }
.stack { display: flex; width: 100%; min-width: 150px; height: 6px; margin-top: 4px; border-radius: 3px; overflow: hidden; background: var(--s-other); }
.stack span { display: block; height: 100%; }
.share { display: inline-block; width: 80px; height: 8px; background: #eaeef2; border-radius: 4px; overflow: hidden; vertical-align: middle; margin-right: 6px; }
.share span { display: block; height: 100%; background: var(--accent); }
.legend { display: flex; flex-wrap: wrap; align-items: center; gap: 4px 14px; color: var(--muted); font-size: 12px; margin-top: 8px; }
.ramp { display: inline-block; width: 120px; height: 10px; border: 1px solid rgba(0,0,0,.25); border-radius: 2px; vertical-align: middle; margin: 0 6px;
  background: linear-gradient(to right, #fdf6d8, #fdd27a, #f39a3b, #c8541c, #7f2704); }
.heat-pool { display: grid; grid-template-columns: 150px minmax(0, 1fr) 64px; align-items: center; gap: 10px; padding: 5px 0; border-bottom: 1px solid #eaeef2; }
.heat-pool:last-child { border-bottom: 0; }
.heat-pool .name { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.heat-pool .gini { text-align: right; color: var(--muted); font-variant-numeric: tabular-nums; }
.heat-pool .gini b { color: var(--ink); }
.squares { display: flex; flex-wrap: wrap; gap: 4px; }
.sq { width: 22px; height: 22px; border-radius: 3px; border: 1px solid rgba(0,0,0,.28); position: relative; }
.sq.flagged { outline: 2px solid var(--bad); outline-offset: 1px; }
.sq.out, .key-sq.out { background-image: repeating-linear-gradient(45deg, rgba(28,33,40,.55) 0 2px, transparent 2px 5px); }
.sq.inuse::after { content: ""; position: absolute; right: 2px; bottom: 2px; width: 7px; height: 7px; border-radius: 50%; background: #1c2128; box-shadow: 0 0 0 1px #fff; }
.key-sq { display: inline-block; width: 12px; height: 12px; border-radius: 2px; border: 1px solid rgba(0,0,0,.28); vertical-align: middle; margin-right: 4px; position: relative; background: #fdf6d8; }
.key-sq.flagged { outline: 2px solid var(--bad); outline-offset: 1px; }
.key-sq.inuse::after { content: ""; position: absolute; right: 1px; bottom: 1px; width: 5px; height: 5px; border-radius: 50%; background: #1c2128; box-shadow: 0 0 0 1px #fff; }
.badge { display: inline-block; padding: 0 6px; border-radius: 10px; font-size: 11px; line-height: 17px; border: 1px solid currentColor; margin-right: 4px; color: var(--muted); background: #f6f8fa; }
.badge[data-state="provisioning"] { color: #7d4e00; background: #fff8c5; }
.badge[data-state="ready"] { color: #1a7f37; background: #dafbe1; }
.badge[data-state="contextualizing"] { color: #6639ba; background: #fbefff; }
.badge[data-state="deployed"] { color: #0550ae; background: #ddf4ff; }
.badge[data-state="failed"] { color: #a40e26; background: #ffebe9; }
.badge[data-service="draining"], .badge[data-service="maintenance"] { color: #7d4e00; background: #fff8c5; }
.badge[data-service="quarantined"] { color: #a40e26; background: #ffebe9; }
.badge[data-service="retired"] { color: #eaeef2; background: #424a53; }
td.wrap { white-space: normal; min-width: 12em; }
.events-scroll { max-height: 420px; overflow: auto; }
.events-scroll thead th { position: sticky; top: 0; background: var(--panel); }
.placeholder { border: 1px dashed var(--line); border-radius: 4px; padding: 8px 10px; color: var(--muted); }
`;

export const OPS_PAGE_SCRIPT = String.raw`
'use strict';
// The JSON API sits beside /ops: /ops -> /api/v1 (also behind a proxy that adds a path prefix). From the origin,
// which has no user:key@ in it: a page opened as http://admin:key@host/ops resolves relative URLs with the
// credentials, and fetch refuses those (the browser sends its saved Basic credentials anyway).
const API = location.origin + location.pathname.replace(/\/ops\/?$/, '') + '/api/v1/';
const REFRESH_MS = 2000;
let every = REFRESH_MS;
const STALE_MS = 10000;
const STATES = ['provisioning', 'ready', 'contextualizing', 'deployed', 'deprovisioning', 'unused', 'maintenance', 'quarantined', 'failed', 'retired'];

// WAITING QUEUE PLACEHOLDER: Duffy has no endpoint for requests waiting on capacity yet. When it has one, set
// QUEUE_ENDPOINT to its path under /api/v1 (e.g. 'queue'); the "Waiting queue" section then lists the rows of
// the first array in its answer (e.g. {"queue": [...]}), one column per key.
const QUEUE_ENDPOINT = 'queue';

let paused = false;
let lastSuccess = 0;
let timer = null;

function h(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') node.textContent = String(v);
    else if (k === 'className') node.className = v;
    else node.setAttribute(k, String(v));
  }
  for (const c of children || []) {
    if (c === null || c === undefined) continue;
    node.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
  }
  return node;
}
const byId = (id) => document.getElementById(id);
const td = (text, cls, title) => h('td', { className: cls, title: title, text: text });

async function getJSON(path) {
  const res = await fetch(API + path, { credentials: 'same-origin', cache: 'no-store', headers: { accept: 'application/json' } });
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) throw new Error('GET /api/v1/' + path + ': ' + res.status + (body && body.detail ? ' ' + body.detail : ''));
  return body;
}

const pad = (n, w) => String(n).padStart(w || 2, '0');
function clock(d) { return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds()); }
function stamp(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (isNaN(d.getTime())) return iso;
  return pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + clock(d) + '.' + pad(d.getMilliseconds(), 3);
}
function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  ms = Number(ms);
  if (ms < 1000) return Math.round(ms) + ' ms';
  const s = Math.round(ms / 1000);
  if (s < 60) return s + ' s';
  const m = Math.floor(s / 60);
  if (m < 60) return m + ' m ' + pad(s % 60) + ' s';
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return hrs + ' h ' + pad(m % 60) + ' m';
  return Math.floor(hrs / 24) + ' d ' + (hrs % 24) + ' h';
}
const fixed = (x, digits) => (x === null || x === undefined ? '—' : Number(x).toFixed(digits));
const percent = (x) => (x === null || x === undefined ? '—' : (Number(x) * 100).toFixed(1) + ' %');

// Light (little wear) to dark (the pool's most worn machine): one hue family, monotonic in lightness.
const RAMP = [[0xfd, 0xf6, 0xd8], [0xfd, 0xd2, 0x7a], [0xf3, 0x9a, 0x3b], [0xc8, 0x54, 0x1c], [0x7f, 0x27, 0x04]];
function heatColour(t) {
  t = Math.max(0, Math.min(1, t)) * (RAMP.length - 1);
  const i = Math.min(Math.floor(t), RAMP.length - 2);
  const f = t - i;
  const c = RAMP[i].map((v, k) => Math.round(v + (RAMP[i + 1][k] - v) * f));
  return 'rgb(' + c.join(',') + ')';
}

function replaceRows(tbody, rows, emptyText, columns) {
  tbody.replaceChildren(...rows);
  if (rows.length === 0) tbody.appendChild(h('tr', {}, [h('td', { className: 'empty', colspan: columns, text: emptyText })]));
}

function setError(id, err) { byId(id).textContent = err ? String(err.message || err) : ''; }

// ---- sections --------------------------------------------------------------------------------------------

function renderPools(pools, details, profiles) {
  const profileOf = new Map(profiles.map((p) => [p.name, p]));
  const rows = pools.map((p, i) => {
    const levels = (details[i] && details[i].levels) || {};
    const prof = profileOf.get(p.name) || {};
    const total = STATES.reduce((a, s) => a + (levels[s] || 0), 0);
    const fill = p['fill-level'];
    const bar = h('div', { className: 'stack', title: STATES.map((s) => s + ' ' + (levels[s] || 0)).join(', ') });
    for (const s of STATES) {
      if (!levels[s]) continue;
      const seg = h('span', {});
      seg.style.width = (100 * levels[s] / Math.max(1, total)) + '%';
      seg.style.background = 'var(--s-' + s + ')';
      bar.appendChild(seg);
    }
    const cells = [
      h('td', { className: 'name' }, [h('b', { text: p.name }), h('span', { className: 'sub', text: [prof.type, prof.arch, prof.platform].filter(Boolean).join(' · ') || '—' }), bar]),
      td(fill, 'num'),
      ...STATES.map((s) => {
        const n = levels[s] || 0;
        const low = s === 'ready' && n < fill;
        return h('td', { className: 'num' + (low ? ' low' : n === 0 ? ' zero' : ''), 'data-state': s, title: low ? 'below the fill level of ' + fill : null, text: n });
      }),
      td(total, 'num'),
    ];
    return h('tr', { 'data-testid': 'pool-row', 'data-pool': p.name }, cells);
  });
  replaceRows(byId('pool-rows'), rows, 'no pools configured', STATES.length + 3);
}

function renderHeatmap(stress, nodes) {
  const box = byId('heat-pools');
  // By id: a host name registered again after its retirement is another machine, with a service of its own.
  const nodeOf = new Map(nodes.map((n) => [n.id, n]));
  const byPool = new Map();
  for (const m of stress.machines) {
    if (!byPool.has(m.pool)) byPool.set(m.pool, []);
    byPool.get(m.pool).push(m);
  }
  const gini = new Map(stress.pools.map((p) => [p.pool, p.busy_gini]));
  const names = [...new Set([...stress.pools.map((p) => p.pool), ...byPool.keys()])].sort();
  const blocks = names.map((pool) => {
    const machines = (byPool.get(pool) || []).slice().sort((a, b) => a.hostname.localeCompare(b.hostname, 'en', { numeric: true }));
    const max = machines.reduce((a, m) => Math.max(a, Number(m.busy_ms) || 0), 0);
    const squares = machines.map((m) => {
      const busy = Number(m.busy_ms) || 0;
      const rel = max > 0 ? busy / max : 0;
      const flagged = m.provisioning_failures > 0 || m.quarantines > 0;
      const node = nodeOf.get(m.machine_id) || {};
      const service = node.service || 'in-service';
      const lines = [
        m.hostname,
        'busy ' + duration(busy) + (max > 0 ? ' (' + Math.round(rel * 100) + ' % of pool max)' : ''),
        m.allocations + ' allocation' + (m.allocations === 1 ? '' : 's'),
        m.provisioning_failures + ' provisioning failure' + (m.provisioning_failures === 1 ? '' : 's'),
        (m.health_check_failures || 0) + ' failed health check' + (m.health_check_failures === 1 ? '' : 's'),
        m.quarantines + ' quarantine' + (m.quarantines === 1 ? '' : 's'),
        'service: ' + service + (node.service_reason ? ' (' + node.service_reason + ')' : ''),
      ];
      if (m.reserved_at) lines.push('in use since ' + stamp(m.reserved_at));
      const sq = h('div', {
        className: 'sq' + (flagged ? ' flagged' : '') + (m.reserved_at ? ' inuse' : '') + (service === 'in-service' ? '' : ' out'),
        'data-testid': 'heat-square',
        'data-hostname': m.hostname,
        'data-machine-id': m.machine_id,
        'data-service': service,
        'data-busy-ms': busy,
        title: lines.join('\n'),
        role: 'img',
        'aria-label': lines.join(', '),
      });
      sq.style.backgroundColor = heatColour(rel);
      return sq;
    });
    const g = gini.get(pool);
    return h('div', { className: 'heat-pool', 'data-testid': 'heatmap-pool', 'data-pool': pool }, [
      h('div', { className: 'name', title: pool, text: pool }),
      h('div', { className: 'squares' }, squares.length ? squares : [h('span', { className: 'empty', text: 'no machines' })]),
      h('div', { className: 'gini', title: 'Gini coefficient of busy time: 0 = wear spread evenly, 1 = one machine does all the work' }, [
        'Gini ', h('b', { 'data-testid': 'pool-gini', text: fixed(g, 2) }),
      ]),
    ]);
  });
  box.replaceChildren(...blocks);
  if (!blocks.length) box.appendChild(h('div', { className: 'empty', text: 'no machines' }));
  byId('heat-count').textContent = String(stress.machines.length);
}

function renderFairness(f) {
  const rows = f.tenants
    .slice()
    .sort((a, b) => b.active_machines - a.active_machines || b.machine_hours['24h'] - a.machine_hours['24h'] || String(a.tenant).localeCompare(String(b.tenant)))
    .map((t) => {
      const share = h('span', { className: 'share' }, [h('span', {})]);
      share.firstChild.style.width = Math.min(100, Number(t.share_of_capacity) * 100) + '%';
      return h('tr', { 'data-testid': 'fairness-row', 'data-tenant': t.tenant }, [
        h('td', { className: 'name' }, [h('b', { text: t.tenant })]),
        td(t.active_machines, 'num' + (t.active_machines ? '' : ' zero')),
        h('td', {}, [share, percent(t.share_of_capacity)]),
        td(fixed(t.machine_hours['1h'], 3), 'num'),
        td(fixed(t.machine_hours['24h'], 3), 'num'),
        td(fixed(t.machine_hours['7d'], 3), 'num'),
        td(duration(t.wait_ms.p50), 'num'),
        td(duration(t.wait_ms.p95), 'num'),
      ]);
    });
  replaceRows(byId('fairness-rows'), rows, 'no tenants', 8);
  byId('jain').textContent = f.jain_index_24h === null ? '—' : fixed(f.jain_index_24h, 3);
  byId('capacity').textContent = String(f.capacity);
}

function renderHandover(sessions) {
  const waiting = sessions.filter((s) => s.active && s.nodes.length > 0 && !s.nodes.every((n) => n.state === 'deployed'));
  const rows = waiting.map((s) =>
    h('tr', { 'data-testid': 'handover-row', 'data-session': s.id }, [
      td(s.id, 'num'),
      td(s.tenant ? s.tenant.name : '—'),
      td(duration(Date.now() - Date.parse(s.created_at)), 'num', stamp(s.created_at)),
      h('td', {}, s.nodes.map((n) => h('span', { className: 'badge', 'data-state': n.state, title: n.hostname, text: n.hostname.split('.')[0] + ': ' + n.state }))),
    ]),
  );
  replaceRows(byId('handover-rows'), rows, 'none: every active session has all its machines deployed', 4);
  byId('active-sessions').textContent = String(sessions.filter((s) => s.active).length);
}

function renderService(nodes) {
  const out = nodes.filter((n) => n.service && n.service !== 'in-service');
  const rows = out.map((n) =>
    h('tr', { 'data-testid': 'service-row', 'data-hostname': n.hostname }, [
      h('td', {}, [h('b', { text: n.hostname })]),
      td(n.pool),
      h('td', {}, [h('span', { className: 'badge', 'data-service': n.service, text: n.service })]),
      td(n.state),
      td(n.service_reason || '—', 'wrap'),
    ]),
  );
  replaceRows(byId('service-rows'), rows, 'every machine is in service', 5);
  byId('out-count').textContent = String(out.length);
}

// Known queue columns get compact cells (times of day, the wait so far) so the row fits the column; other keys as they come.
const QUEUE_CELLS = {
  reason: (v) => td(v, 'wrap'),
  since: (v) => td(duration(Date.now() - Date.parse(v)), 'num', 'waiting since ' + stamp(v)),
  until: (v) => td(clock(new Date(v)), 'num mono', 'gives up at ' + stamp(v)),
};
const QUEUE_HEADS = { since: 'waited', until: 'until' };

function renderQueue(answer) {
  const list = Object.values(answer || {}).find(Array.isArray) || [];
  const keys = list.length ? Object.keys(list[0]).slice(0, 8) : [];
  const cell = (k, v) => (QUEUE_CELLS[k] ? QUEUE_CELLS[k](v) : td(typeof v === 'object' ? JSON.stringify(v) : v));
  const table = h('table', {}, [
    h('thead', {}, [h('tr', {}, keys.map((k) => h('th', { text: QUEUE_HEADS[k] || k })))]),
    h('tbody', {}, list.map((row) => h('tr', { 'data-testid': 'queue-row' }, keys.map((k) => { const c = cell(k, row[k]); c.setAttribute('data-key', k); return c; })))),
  ]);
  byId('queue-body').replaceChildren(list.length ? table : h('div', { className: 'empty', text: 'nobody is waiting' }));
}

function renderEvents(events) {
  const rows = events.map((e) =>
    h('tr', { 'data-testid': 'event-row', 'data-type': e.type, 'data-position': e.position }, [
      td(e.position, 'num mono'),
      td(stamp(e.at), 'mono', e.at),
      h('td', {}, [h('b', { text: e.type })]),
      td(e.stream, 'mono'),
      td(e.revision, 'num'),
      td(e.actor || '—'),
    ]),
  );
  replaceRows(byId('event-rows'), rows, 'no events yet', 6);
  byId('event-head').textContent = events.length ? events[0].position : '—';
}

// ---- polling ---------------------------------------------------------------------------------------------

async function section(errorId, load) {
  try {
    await load();
    setError(errorId, null);
    return true;
  } catch (err) {
    setError(errorId, err);
    return false;
  }
}

async function refresh() {
  const results = await Promise.all([
    section('heat-error', async () => {
      const [st, nodes] = await Promise.all([getJSON('stats/stress'), getJSON('nodes?retired=true')]);
      renderHeatmap(st, nodes.nodes);
      renderService(nodes.nodes);
    }),
    section('fairness-error', async () => renderFairness(await getJSON('stats/fairness'))),
    section('handover-error', async () => renderHandover((await getJSON('sessions')).sessions)),
    section('events-error', async () => renderEvents((await getJSON('events?limit=50')).events)),
    QUEUE_ENDPOINT ? section('queue-error', async () => renderQueue(await getJSON(QUEUE_ENDPOINT))) : true,
  ]);
  results.push(await section('pools-error', async () => {
    const [list, profiles] = await Promise.all([getJSON('pools'), getJSON('pool-profiles')]);
    const details = await Promise.all(list.pools.map((p) => getJSON('pools/' + encodeURIComponent(p.name)).then((r) => r.pool)));
    renderPools(list.pools, details, profiles.pool_profiles);
  }));
  const failed = results.filter((ok) => !ok).length;
  if (failed === 0) {
    lastSuccess = Date.now();
    const el = byId('last-updated');
    el.textContent = clock(new Date(lastSuccess));
    el.setAttribute('datetime', new Date(lastSuccess).toISOString());
  }
  showStatus(failed);
}

function showStatus(failed) {
  const status = byId('status');
  const stale = lastSuccess && Date.now() - lastSuccess > Math.max(STALE_MS, 3 * every);
  const state = paused ? 'paused' : failed ? 'error' : stale ? 'stale' : 'live';
  status.setAttribute('data-state', state);
  byId('status-text').textContent =
    state === 'paused' ? 'paused' : failed ? failed + ' section' + (failed === 1 ? '' : 's') + ' failed to load' : stale ? 'stale' : 'live, every ' + Math.round(every / 1000) + ' s';
}

async function loop() {
  timer = null;
  if (!paused && !document.hidden) {
    const started = Date.now();
    try { await refresh(); } catch (err) { console.error(err); }
    // A refresh that took long (a farm of many thousand machines) spaces the next ones: an open page never takes
    // more than about a fifth of the server (at 20,000 machines one took 2 s, and every 2 s took half of it).
    every = Math.max(REFRESH_MS, 4 * (Date.now() - started));
  }
  if (!paused) timer = setTimeout(loop, every);
}

byId('pause').addEventListener('click', () => {
  paused = !paused;
  byId('pause').textContent = paused ? 'Resume' : 'Pause';
  byId('pause').setAttribute('aria-pressed', String(paused));
  if (paused && timer) { clearTimeout(timer); timer = null; }
  if (!paused && !timer) loop();
  showStatus(0);
});
document.addEventListener('visibilitychange', () => { if (!document.hidden && !paused && !timer) loop(); });
if (QUEUE_ENDPOINT) byId('queue-note').textContent = 'From GET /api/v1/' + QUEUE_ENDPOINT;
loop();
`;

export const OPS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Duffy · operations</title>
<style>${OPS_PAGE_STYLE}</style>
</head>
<body>
<header>
  <h1>Duffy <span>· operations</span></h1>
  <div class="spacer"></div>
  <div id="status" data-testid="status" data-state="loading" role="status" aria-live="polite">
    <span class="dot" aria-hidden="true"></span>
    <span id="status-text">loading…</span>
    <span>· last updated <time id="last-updated" data-testid="last-updated">never</time></span>
  </div>
  <button id="pause" type="button" aria-pressed="false">Pause</button>
</header>
<main>
  <section class="wide" data-testid="pool-levels" aria-labelledby="h-pools">
    <h2 id="h-pools">Pool levels <span class="aside">machines per state</span></h2>
    <div class="body">
      <table>
        <thead><tr>
          <th>Pool <span class="sub">type · arch · platform</span></th><th class="num" title="machines the pool keeps ready">Fill</th>
          <th class="num" title="provisioning"><span class="swatch sw-provisioning"></span>Prov.</th>
          <th class="num" title="ready"><span class="swatch sw-ready"></span>Ready</th>
          <th class="num" title="contextualizing"><span class="swatch sw-contextualizing"></span>Ctx.</th>
          <th class="num" title="deployed"><span class="swatch sw-deployed"></span>Deployed</th>
          <th class="num" title="deprovisioning"><span class="swatch sw-deprovisioning"></span>Deprov.</th>
          <th class="num" title="unused: in service, not provisioned"><span class="swatch sw-unused"></span>Unused</th>
          <th class="num" title="out of service for maintenance (draining ones count where they are in use)"><span class="swatch sw-maintenance"></span>Maint.</th>
          <th class="num" title="quarantined, waiting for its health check"><span class="swatch sw-quarantined"></span>Quar.</th>
          <th class="num" title="quarantined, and a health check has failed since"><span class="swatch sw-failed"></span>Failed</th>
          <th class="num" title="retired for good"><span class="swatch sw-retired"></span>Retired</th>
          <th class="num">Total</th>
        </tr></thead>
        <tbody id="pool-rows"></tbody>
      </table>
      <p class="error" id="pools-error" data-testid="error"></p>
    </div>
  </section>

  <section data-testid="fairness" aria-labelledby="h-fair">
    <h2 id="h-fair">Fairness per tenant <span class="aside">capacity <b id="capacity">—</b> · Jain's index (24 h) <b id="jain" data-testid="jain-index">—</b></span></h2>
    <div class="body">
      <table>
        <thead><tr>
          <th>Tenant</th><th class="num">Active</th><th>Share of capacity</th>
          <th class="num" title="machine-hours in the last hour">m·h 1 h</th><th class="num" title="machine-hours in the last 24 hours">m·h 24 h</th>
          <th class="num" title="machine-hours in the last 7 days">m·h 7 d</th><th class="num" title="median wait for machines">Wait p50</th><th class="num" title="95th percentile wait">Wait p95</th>
        </tr></thead>
        <tbody id="fairness-rows"></tbody>
      </table>
      <p class="error" id="fairness-error" data-testid="error"></p>
    </div>
  </section>

  <section data-testid="heatmap" aria-labelledby="h-heat">
    <h2 id="h-heat">Wear heat map <span class="aside"><b id="heat-count">0</b> machines</span></h2>
    <div class="body">
      <div id="heat-pools"></div>
      <div class="legend">
        <span>busy time <span class="ramp" aria-hidden="true"></span> pool max</span>
        <span><span class="key-sq inuse" aria-hidden="true"></span>in use</span>
        <span><span class="key-sq flagged" aria-hidden="true"></span>provisioning failures or quarantines</span>
        <span><span class="key-sq out" aria-hidden="true"></span>out of service</span>
      </div>
      <p class="error" id="heat-error" data-testid="error"></p>
    </div>
    <h2 id="h-service">Out of service <span class="aside"><b id="out-count">—</b> machines</span></h2>
    <div class="body" data-testid="out-of-service">
      <table>
        <thead><tr><th>Machine</th><th>Pool</th><th>Service</th><th>State</th><th>Reason</th></tr></thead>
        <tbody id="service-rows"></tbody>
      </table>
      <p class="note">Draining: still held by a session, out once it ends. <code>PUT /api/v1/nodes/{id}</code> or <code>duffy nodes maintenance|return|retire</code>.</p>
    </div>
  </section>

  <section data-testid="handover" aria-labelledby="h-handover">
    <h2 id="h-handover">Requests in hand-over <span class="aside"><b id="active-sessions">—</b> active sessions</span></h2>
    <div class="body">
      <table>
        <thead><tr><th class="num">Session</th><th>Tenant</th><th class="num">Age</th><th>Machines</th></tr></thead>
        <tbody id="handover-rows"></tbody>
      </table>
      <p class="note">Active sessions whose machines are not all <code>deployed</code> yet.</p>
      <p class="error" id="handover-error" data-testid="error"></p>
    </div>
    <h2 id="h-queue">Waiting queue</h2>
    <div class="body" data-testid="waiting-queue">
      <div id="queue-body" class="placeholder">loading…</div>
      <p class="note" id="queue-note"></p>
      <p class="error" id="queue-error" data-testid="error"></p>
    </div>
  </section>

  <section class="wide" data-testid="events" aria-labelledby="h-events">
    <h2 id="h-events">Recent events <span class="aside">newest 50 · head at position <b id="event-head">—</b></span></h2>
    <div class="body events-scroll">
      <p class="error" id="events-error" data-testid="error"></p>
      <table>
        <thead><tr><th class="num">Position</th><th>At</th><th>Type</th><th>Stream</th><th class="num">Rev.</th><th>Actor</th></tr></thead>
        <tbody id="event-rows"></tbody>
      </table>
    </div>
  </section>
</main>
<script>${OPS_PAGE_SCRIPT}</script>
</body>
</html>
`;
