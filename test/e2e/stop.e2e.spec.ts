import { Agent, request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { Ledger } from '../../src/application/ledger.service.js';
import { basic, startDuffy } from '../support/server.js';

const V1 = '/api/v1';
type Answer = { status: number; body: string; connection: string | undefined };

/** Requests sent one after the other on one kept-alive connection, each as soon as the answer before it came (a busy client). */
function onOneConnection(url: string, auth: string, requests: Array<{ method: string; path: string; body?: unknown }>): Promise<Answer[]> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const send = (r: (typeof requests)[number]) =>
    new Promise<Answer>((resolve, reject) => {
      request(url + r.path, { method: r.method, agent, headers: { authorization: auth, 'content-type': 'application/json' } }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode!, body: text, connection: res.headers.connection }));
      })
        .on('error', reject)
        .end(r.body === undefined ? undefined : JSON.stringify(r.body));
    });
  return Promise.all(requests.map(send)).finally(() => agent.destroy());
}

/**
 * A server whose tenant holds the 3 machines of metal-arm-aarch64, and a client whose connection is busy with an
 * extension still being written when the stop begins (so it outlives the server's close of idle connections); `next`
 * is sent on that connection once the extension is answered. Resolves with both answers and how long the stop took.
 */
async function stopWhileBusy(next: (key: string, sessionId: number) => { method: string; path: string; body?: unknown }) {
  const duffy = await startDuffy();
  const key = (await duffy.admin.post(`${V1}/tenants`, { name: 'ci-stop', ssh_key: 'ssh-ed25519 AAAAC3Nza ci@stop' })).body.tenant.api_key;
  const held = await duffy.client('ci-stop', key).post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-arm-aarch64', quantity: 3 }] });
  expect(held.status).toBe(201);
  const ledger = duffy.app.get(Ledger);
  const record = ledger.record.bind(ledger);
  let extending = false;
  ledger.record = async (writes, meta) => {
    if (writes.some((w) => w.events.some((e) => e.type === 'SessionExtended'))) {
      extending = true;
      await sleep(1500);
    }
    return record(writes, meta);
  };
  const id = held.body.session.id as number;
  const replies = onOneConnection(duffy.url, basic('ci-stop', key), [{ method: 'PUT', path: `${V1}/sessions/${id}`, body: { expires_at: '+1h' } }, next(key, id)]);
  while (!extending) await sleep(10);
  const stoppedAt = Date.now();
  await duffy.close();
  const stopMs = Date.now() - stoppedAt;
  const [extended, answer] = await replies;
  // The extension in flight finishes as ever.
  expect(extended.status).toBe(200);
  return { answer, stopMs };
}

describe('stop (SIGTERM) while a keep-alive client keeps asking', () => {
  it('answers the next request on a connection busy when the stop began 503 and closes it: a request joining the queue does not hold the stop for its wait', async () => {
    const { answer, stopMs } = await stopWhileBusy(() => ({ method: 'POST', path: `${V1}/sessions`, body: { nodes_specs: [{ pool: 'metal-arm-aarch64', quantity: 1 }], wait: 60 } }));
    // Before: it joined the queue after the callers waiting there were let go, and the stop waited its 60 s.
    expect(answer).toEqual({ status: 503, body: '{"detail":"Duffy is stopping; ask again"}', connection: 'close' });
    expect(stopMs).toBeLessThan(10_000);
  }, 90_000);

  it('gives a legacy call its own answer, which cico reads (never a {"detail"} object), and closes the connection', async () => {
    const { answer } = await stopWhileBusy((key, id) => ({ method: 'GET', path: `/Node/done?key=${key}&ssid=${id}` }));
    expect(answer).toEqual({ status: 200, body: '"Done"', connection: 'close' });
  }, 90_000);
});
