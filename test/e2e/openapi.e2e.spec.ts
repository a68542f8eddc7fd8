import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { Ajv } from 'ajv';
import addFormatsModule from 'ajv-formats';
import { type Reply, type Running, newTenant, startDuffy } from '../support/server.js';

// ajv-formats is CommonJS: its default export arrives wrapped under ESM.
const addFormats = ((addFormatsModule as unknown as { default?: typeof addFormatsModule }).default ?? addFormatsModule) as unknown as (ajv: Ajv) => Ajv;

type Schema = Record<string, unknown>;
type Operation = { parameters?: Array<{ name: string; in: string; schema?: Schema }>; requestBody?: { content: Record<string, { schema: Schema }> }; responses: Record<string, { content?: Record<string, { schema?: Schema }> }>; security?: unknown[] };
type Doc = { paths: Record<string, Record<string, Operation>>; components: { schemas: Record<string, Schema> } };

/**
 * A client generated from the published document: every answer of a mixed workload must validate against the schema
 * the document declares for its route and status, and a body the document allows must be one the server takes.
 */
describe('the OpenAPI document describes what the server really answers', () => {
  let duffy: Running;
  let doc: Doc;
  let ajv: Ajv;
  const schemaOf = (schema: Schema) => ajv.compile({ ...schema });

  beforeAll(async () => {
    duffy = await startDuffy();
    doc = (await (await fetch(`${duffy.url}/api/docs-json`)).json()) as Doc;
    ajv = new Ajv({ strict: false, allErrors: true });
    addFormats(ajv);
    for (const [name, s] of Object.entries(doc.components.schemas)) ajv.addSchema(s, `#/components/schemas/${name}`);
  });
  afterAll(() => duffy.close());

  /** Why an answer does not match the document, or null when it does. */
  function mismatch(method: string, route: string, r: Reply): string | null {
    const op = doc.paths[route]?.[method];
    if (!op) return `${method} ${route} is not in the document`;
    const declared = op.responses[String(r.status)];
    if (!declared) return `${method} ${route} answered ${r.status}, which the document does not declare (${Object.keys(op.responses).join(', ')})`;
    const schema = declared.content?.['application/json']?.schema;
    if (!schema) return `${method} ${route} ${r.status} has no JSON schema in the document`;
    const validate = schemaOf(schema);
    return validate(r.body) ? null : `${method} ${route} ${r.status}: ${ajv.errorsText(validate.errors)} in ${JSON.stringify(r.body).slice(0, 300)}`;
  }

  it('every answer of a mixed workload, success and refusal, validates against its route and status', async () => {
    const problems: string[] = [];
    const check = async (method: string, route: string, answer: Promise<Reply>) => {
      const r = await answer;
      const m = mismatch(method, route, r);
      if (m) problems.push(m);
      return r;
    };
    const A = duffy.admin;
    const alice = await newTenant(duffy, 'alice', { node_quota: 2 });
    const nobody = duffy.client('alice', '00000000-0000-4000-8000-00000000dead');
    const created = await check('post', '/api/v1/tenants', A.post('/api/v1/tenants', { name: 'bob', ssh_key: 'ssh-ed25519 AAAA bob@ci' }));
    const bobId = created.body.tenant.id;
    await check('post', '/api/v1/tenants', A.post('/api/v1/tenants', { name: 'bob', ssh_key: 'ssh-ed25519 AAAA bob@ci' }));
    await check('post', '/api/v1/tenants', A.post('/api/v1/tenants', { name: 'carol', ssh_key: 'k', priority: 1 }));
    await check('post', '/api/v1/tenants', alice.post('/api/v1/tenants', { name: 'dave', ssh_key: 'k' }));
    await check('get', '/api/v1/tenants', A.get('/api/v1/tenants'));
    await check('get', '/api/v1/tenants', nobody.get('/api/v1/tenants'));
    await check('get', '/api/v1/tenants/{id}', A.get(`/api/v1/tenants/${bobId}`));
    await check('get', '/api/v1/tenants/{id}', A.get('/api/v1/tenants/9999'));
    await check('get', '/api/v1/tenants/{id}', A.get('/api/v1/tenants/abc'));
    await check('put', '/api/v1/tenants/{id}', A.put(`/api/v1/tenants/${bobId}`, { node_quota: 3 }));
    await check('put', '/api/v1/tenants/{id}', A.put(`/api/v1/tenants/${bobId}`, { api_key: 'reset' }));
    await check('put', '/api/v1/tenants/{id}', alice.put(`/api/v1/tenants/${bobId}`, { node_quota: 9 }));

    await check('get', '/api/v1/pools', duffy.client('x', 'y').get('/api/v1/pools'));
    await check('get', '/api/v1/pools/{name}', A.get('/api/v1/pools/vm-intel-x86_64'));
    await check('get', '/api/v1/pools/{name}', A.get('/api/v1/pools/nope'));
    await check('get', '/api/v1/pool-profiles', alice.get('/api/v1/pool-profiles'));

    const s = await check('post', '/api/v1/sessions', alice.post('/api/v1/sessions', { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }] }));
    await check('post', '/api/v1/sessions', alice.post('/api/v1/sessions', { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 2 }] }));
    await check('post', '/api/v1/sessions', A.post('/api/v1/sessions', { nodes_specs: [{ pool: 'nope', quantity: 1 }] }));
    await check('post', '/api/v1/sessions', A.call('POST', '/api/v1/sessions', undefined, '{"nodes_specs": ['));
    await check('get', '/api/v1/sessions', alice.get('/api/v1/sessions'));
    await check('get', '/api/v1/sessions/{id}', alice.get(`/api/v1/sessions/${s.body.session.id}`));
    await check('get', '/api/v1/sessions/{id}', alice.get('/api/v1/sessions/9999'));
    await check('put', '/api/v1/sessions/{id}', alice.put(`/api/v1/sessions/${s.body.session.id}`, { expires_at: '+1h' }));
    await check('put', '/api/v1/sessions/{id}', alice.put(`/api/v1/sessions/${s.body.session.id}`, { active: false, expires_at: null }));
    // An ended session: its nodes have no state, as in Duffy v3.
    await check('get', '/api/v1/sessions/{id}', alice.get(`/api/v1/sessions/${s.body.session.id}`));
    await check('put', '/api/v1/sessions/{id}', alice.put(`/api/v1/sessions/${s.body.session.id}`, { expires_at: '+1h' }));

    const node = await check('post', '/api/v1/nodes', A.post('/api/v1/nodes', { hostname: 'n1.lab', pool: 'vm-intel-x86_64', hardware: { cpus: 4 } }));
    await check('post', '/api/v1/nodes', A.post('/api/v1/nodes', { hostname: 'n1.lab', pool: 'vm-intel-x86_64' }));
    await check('get', '/api/v1/nodes', A.get('/api/v1/nodes?retired=true'));
    await check('get', '/api/v1/nodes', A.get('/api/v1/nodes?retired=maybe'));
    await check('get', '/api/v1/nodes/{id}', alice.get(`/api/v1/nodes/${node.body.node.id}`));
    await check('put', '/api/v1/nodes/{id}', A.put(`/api/v1/nodes/${node.body.node.id}`, { maintenance: true, reason: 'disk swap' }));
    await check('put', '/api/v1/nodes/{id}', alice.put(`/api/v1/nodes/${node.body.node.id}`, { maintenance: false }));

    const key = (await A.put(`/api/v1/tenants/${bobId}`, { api_key: 'reset' })).body.tenant.api_key;
    const legacy = duffy.client('', '');
    const got = await check('get', '/Node/get', legacy.get(`/Node/get?key=${key}&ver=8-stream&arch=x86_64&count=1`));
    await check('get', '/Node/get', legacy.get(`/Node/get?key=${key}&ver=nope`));
    await check('get', '/Node/get', legacy.get('/Node/get?key=00000000-0000-4000-8000-00000000dead'));
    await check('get', '/Inventory', legacy.get(`/Inventory?key=${key}`));
    await check('get', '/Inventory', legacy.get('/Inventory'));
    await check('get', '/Node/fail', legacy.get(`/Node/fail?key=${key}&ssid=${got.body.ssid}`));
    await check('get', '/Node/done', legacy.get(`/Node/done?key=${key}&ssid=${got.body.ssid}`));

    await check('put', '/api/v1/tenants/{id}', A.put(`/api/v1/tenants/${bobId}`, { active: false }));
    await check('get', '/api/v1/sessions', duffy.client('bob', key).get('/api/v1/sessions'));
    expect(problems).toEqual([]);
  });

  it('a body the document allows is taken, and one it refuses is refused', async () => {
    const bodies: Array<[string, string, string, unknown]> = [
      ['post', '/api/v1/sessions', '/api/v1/sessions', { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1.5 }] }],
      ['post', '/api/v1/sessions', '/api/v1/sessions', { nodes_specs: [{ pool: 'vm-intel-x86_64', quantity: 1 }], priority: 10 }],
      ['post', '/api/v1/sessions', '/api/v1/sessions', { nodes_specs: [] }],
      ['post', '/api/v1/tenants', '/api/v1/tenants', { name: 'erin', ssh_key: 'ssh-ed25519 AAAA e', node_quota: 2.5 }],
      ['put', '/api/v1/nodes/{id}', '/api/v1/nodes/1', { maintenance: true, reason: 'disk swap' }],
      ['put', '/api/v1/nodes/{id}', '/api/v1/nodes/1', { maintenance: false, reason: null }],
      ['put', '/api/v1/nodes/{id}', '/api/v1/nodes/1', { maintenance: {} }],
      // Duffy v3's client retires a session so: a null is "not given".
      ['put', '/api/v1/sessions/{id}', '/api/v1/sessions/9999', { active: false, expires_at: null }],
    ];
    const problems: string[] = [];
    for (const [method, route, path, body] of bodies) {
      const schema = doc.paths[route][method].requestBody!.content['application/json'].schema;
      const allowed = schemaOf(schema)(body);
      const r = await duffy.admin.call(method.toUpperCase(), path, body);
      // A 404 is about the id, not the body.
      const taken = r.status < 300 || r.status === 404;
      if (allowed !== taken) problems.push(`${method} ${path} ${JSON.stringify(body)}: the document ${allowed ? 'allows' : 'refuses'} it, the server answered ${r.status} ${JSON.stringify(r.body).slice(0, 160)}`);
    }
    expect(problems).toEqual([]);
  });

  it('declares every parameter and the real authentication of each route', () => {
    const params = (route: string, method = 'get') => (doc.paths[route][method].parameters ?? []).map((p) => `${p.in}:${p.name}`);
    expect(params('/api/v1/sessions/{id}/artifacts/{path}')).toEqual(expect.arrayContaining(['path:id', 'path:path']));
    expect(params('/Node/get')).toEqual(expect.arrayContaining(['query:key', 'query:ver', 'query:arch', 'query:count', 'query:flavor']));
    expect(params('/Node/done')).toEqual(expect.arrayContaining(['query:key', 'query:ssid']));
    expect(params('/Inventory')).toEqual(['query:key']);
    expect(params('/api/v1/nodes')).toEqual(['query:retired']);
    expect(params('/api/v1/events')).toEqual(['query:limit']);
    // Ids in paths are integers, as the server reads them.
    expect(doc.paths['/api/v1/sessions/{id}'].get.parameters![0].schema).toMatchObject({ type: 'integer' });
    // The legacy calls take a query-string key and /health, /metrics nothing: no Basic auth.
    for (const route of ['/Node/get', '/Node/done', '/Node/fail', '/Inventory', '/health', '/metrics']) expect([route, doc.paths[route].get.security]).toEqual([route, []]);
  });
});
