import { Agent, request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { Ledger } from '../../src/application/ledger.service.js';
import { type Running, basic, startDuffy } from '../support/server.js';

const V1 = '/api/v1';

/** Requests sent one after the other on one kept-alive connection, each as soon as the answer before it came (a busy client). */
function onOneConnection(url: string, auth: string, requests: Array<{ method: string; path: string; body: unknown }>): Promise<Array<{ status: number; body: string }>> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const send = (r: (typeof requests)[number]) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const body = JSON.stringify(r.body);
      request(url + r.path, { method: r.method, agent, headers: { authorization: auth, 'content-type': 'application/json' } }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode!, body: text }));
      })
        .on('error', reject)
        .end(body);
    });
  return Promise.all(requests.map(send)).finally(() => agent.destroy());
}

describe('stop (SIGTERM) while a keep-alive client keeps asking', () => {
  let duffy: Running;
  afterAll(() => duffy?.close().catch(() => undefined));

  it('answers the next request on a connection busy when the stop began 503 and closes it: a request joining the queue does not hold the stop for its wait', async () => {
    duffy = await startDuffy();
    const key = (await duffy.admin.post(`${V1}/tenants`, { name: 'ci-stop', ssh_key: 'ssh-ed25519 AAAAC3Nza ci@stop' })).body.tenant.api_key;
    const auth = basic('ci-stop', key);
    // The pool's 3 machines are taken: a request for one more waits for capacity.
    const held = await duffy.client('ci-stop', key).post(`${V1}/sessions`, { nodes_specs: [{ pool: 'metal-arm-aarch64', quantity: 3 }] });
    expect(held.status).toBe(201);
    // An extension still being written when the stop begins keeps its connection busy past the server's close.
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
    const replies = onOneConnection(duffy.url, auth, [
      { method: 'PUT', path: `${V1}/sessions/${held.body.session.id}`, body: { expires_at: '+1h' } },
      { method: 'POST', path: `${V1}/sessions`, body: { nodes_specs: [{ pool: 'metal-arm-aarch64', quantity: 1 }], wait: 60 } },
    ]);
    while (!extending) await sleep(10);
    const stoppedAt = Date.now();
    await duffy.close();
    const stopMs = Date.now() - stoppedAt;
    // The extension in flight finishes; the request after it is refused (before: it waited in the queue, and so did the stop).
    const [extended, asked] = await replies;
    expect(extended.status).toBe(200);
    expect(asked).toEqual({ status: 503, body: '{"detail":"Duffy is stopping; ask again"}' });
    expect(stopMs).toBeLessThan(10_000);
  }, 90_000);
});
