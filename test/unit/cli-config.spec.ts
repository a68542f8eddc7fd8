import { describe, expect, it } from '@jest/globals';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuffyClient, UsageError, clientConfig, shownUrl } from '../../src/cli/client.js';

/** The CLI's configuration: its own keys, and Duffy v3's client configuration as v3 reads it. */
describe('clientConfig', () => {
  const dir = () => mkdtempSync(join(tmpdir(), 'duffy-cfg-'));
  const none = { HOME: '/nonexistent' } as NodeJS.ProcessEnv;

  it("reads Duffy v3's `client: {url, auth: {name, key}}`, its url's /api/v1 taken off (the calls add it)", () => {
    const d = dir();
    writeFileSync(join(d, 'duffy'), 'client:\n  url: https://duffy.example.org/api/v1/\n  auth:\n    name: ci\n    key: k1\n');
    expect(clientConfig({}, { XDG_CONFIG_HOME: d })).toEqual({ url: 'https://duffy.example.org', tenant: 'ci', key: 'k1' });
  });

  it('refuses a URL without its scheme as a usage error, not as an unreachable Duffy', () => {
    expect(() => clientConfig({}, { ...none, DUFFY_URL: 'localhost:8080' })).toThrow(new UsageError('the Duffy URL must start with http:// or https://, got "localhost:8080"'));
    expect(clientConfig({ url: 'HTTPS://d.example/' }, none).url).toBe('HTTPS://d.example');
  });

  it('merges a directory of YAML files in name order, key by key, as v3 does; -c paths replace the default places', () => {
    const d = join(dir(), 'conf.d');
    mkdirSync(d);
    writeFileSync(join(d, '10-url.yaml'), 'client:\n  url: http://a:8080/api/v1\n  auth:\n    name: first\n');
    writeFileSync(join(d, '20-auth.yml'), 'client:\n  auth:\n    key: k2\n');
    writeFileSync(join(d, 'notes.txt'), 'client: {url: http://ignored}\n');
    expect(clientConfig({ config: [d] }, none)).toEqual({ url: 'http://a:8080', tenant: 'first', key: 'k2' });
  });

  it('reads every document of a YAML file, as v3 (yaml.safe_load_all) does', () => {
    const d = dir();
    writeFileSync(join(d, 'c.yaml'), '---\nclient:\n  url: http://multi/api/v1\n---\nclient:\n  auth: {name: second, key: k3}\n');
    expect(clientConfig({ config: [join(d, 'c.yaml')] }, none)).toEqual({ url: 'http://multi', tenant: 'second', key: 'k3' });
  });

  it('flags, then the environment, then the file; its own keys win over the v3 ones in the same file', () => {
    const d = dir();
    writeFileSync(join(d, 'c.yaml'), 'url: http://own:1\ntenant: own\nkey: ownkey\nclient:\n  url: http://v3/api/v1\n  auth: {name: v3, key: v3key}\n');
    expect(clientConfig({ config: [join(d, 'c.yaml')] }, none)).toEqual({ url: 'http://own:1', tenant: 'own', key: 'ownkey' });
    expect(clientConfig({ config: [join(d, 'c.yaml')], tenant: 'flag' }, { ...none, DUFFY_KEY: 'envkey' })).toMatchObject({ tenant: 'flag', key: 'envkey' });
  });

  it('a value that is not text is a usage error naming it, not a TypeError; a number is taken as text', () => {
    const d = dir();
    const file = (yaml: string) => {
      writeFileSync(join(d, 'c.yaml'), yaml);
      return () => clientConfig({ config: [join(d, 'c.yaml')] }, none);
    };
    expect(file('url: [http://a]\n')).toThrow(new UsageError('client configuration: url must be a string'));
    expect(file('client:\n  url: {a: 1}\n')).toThrow(new UsageError('client configuration: client.url must be a string'));
    expect(file('client:\n  auth: {name: ci, key: [1]}\n')).toThrow(new UsageError('client configuration: client.auth.key must be a string'));
    expect(file('client:\n  url: http://n/api/v1\n  auth: {name: 1234, key: k}\n')()).toEqual({ url: 'http://n', tenant: '1234', key: 'k' });
  });

  it('an empty DUFFY_URL, DUFFY_TENANT or DUFFY_KEY is unset: the configuration file holds', () => {
    const d = dir();
    writeFileSync(join(d, 'c.yaml'), 'client:\n  url: https://duffy.example/api/v1\n  auth: {name: ci, key: k1}\n');
    expect(clientConfig({ config: [join(d, 'c.yaml')] }, { ...none, DUFFY_URL: '', DUFFY_TENANT: '', DUFFY_KEY: '' })).toEqual({ url: 'https://duffy.example', tenant: 'ci', key: 'k1' });
  });

  it('nothing configured: the local default, no credentials', () => {
    expect(clientConfig({ config: [dir()] }, none)).toEqual({ url: 'http://localhost:8080', tenant: undefined, key: undefined });
  });

  it('a configuration named with -c wins over DUFFY_CLIENT_CONFIG, and one named either way must be readable YAML (the default places may be missing)', () => {
    const d = dir();
    writeFileSync(join(d, 'a.yaml'), 'url: http://a:1\n');
    writeFileSync(join(d, 'b.yaml'), 'url: http://b:2\n');
    writeFileSync(join(d, 'bad.yaml'), 'url: [unclosed\n');
    expect(clientConfig({ config: [join(d, 'a.yaml')] }, { ...none, DUFFY_CLIENT_CONFIG: join(d, 'b.yaml') }).url).toBe('http://a:1');
    expect(clientConfig({}, { ...none, DUFFY_CLIENT_CONFIG: join(d, 'b.yaml') }).url).toBe('http://b:2');
    expect(() => clientConfig({ config: [join(d, 'missing.yaml')] }, none)).toThrow(UsageError);
    expect(() => clientConfig({}, { ...none, DUFFY_CLIENT_CONFIG: join(d, 'missing.yaml') })).toThrow(/cannot read the client configuration .*missing\.yaml/);
    expect(() => clientConfig({ config: [join(d, 'bad.yaml')] }, none)).toThrow(/cannot read the client configuration .*bad\.yaml/);
    expect(clientConfig({}, { XDG_CONFIG_HOME: join(d, 'nowhere'), HOME: '/nonexistent' }).url).toBe('http://localhost:8080');
  });

  it('a named configuration whose top level is not a mapping is a usage error; in a default place it is skipped', () => {
    const d = dir();
    writeFileSync(join(d, 'list.yaml'), '- url: http://a:1\n');
    expect(() => clientConfig({ config: [join(d, 'list.yaml')] }, none)).toThrow(/cannot read the client configuration .*list\.yaml: its top level must be a mapping/);
    mkdirSync(join(d, 'duffy'));
    writeFileSync(join(d, 'duffy', 'list.yaml'), '- url: http://a:1\n');
    expect(clientConfig({}, { XDG_CONFIG_HOME: d, HOME: '/nonexistent' }).url).toBe('http://localhost:8080');
  });

  it("a `client:` or `client.auth:` that is not a mapping is named, not spread character by character", () => {
    const d = dir();
    writeFileSync(join(d, 'a.yaml'), 'client: http://duffy/api/v1\n');
    writeFileSync(join(d, 'b.yaml'), 'client:\n  url: http://duffy/api/v1\n  auth: [ci, key]\n');
    for (const f of ['a.yaml', 'b.yaml']) expect(() => clientConfig({ config: [join(d, f)] }, none)).toThrow(/client and client\.auth must be mappings/);
  });
});

/** A connection Duffy drops at once (its connection cap reached): tried again only where a call twice does no harm. */
describe('DuffyClient against connections reset', () => {
  it('retries a release and a read, never a request or a relative extension', async () => {
    const { createServer } = await import('node:http');
    const { DuffyClient } = await import('../../src/cli/client.js');
    const calls: string[] = [];
    let resets = 0;
    const server = createServer((req, res) => {
      calls.push(`${req.method} ${req.url}`);
      // The first two connections of each kind of call are dropped unanswered.
      if (resets % 3 < 2) {
        resets += 1;
        req.socket.destroy();
        return;
      }
      resets += 1;
      res.setHeader('content-type', 'application/json');
      res.end('{"ok":true}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    const client = new DuffyClient({ url: `http://127.0.0.1:${port}`, tenant: 'ci', key: 'k' });
    try {
      await expect(client.call('PUT', '/sessions/1', { active: false })).resolves.toEqual({ ok: true });
      await expect(client.call('GET', '/sessions')).resolves.toEqual({ ok: true });
      resets = 0;
      await expect(client.call('POST', '/sessions', { nodes_specs: [] })).rejects.toMatchObject({ unreachable: true });
      resets = 0;
      await expect(client.call('PUT', '/sessions/1', { expires_at: '+1h' })).rejects.toMatchObject({ unreachable: true });
      expect(calls).toEqual(['PUT /api/v1/sessions/1', 'PUT /api/v1/sessions/1', 'PUT /api/v1/sessions/1', 'GET /api/v1/sessions', 'GET /api/v1/sessions', 'GET /api/v1/sessions', 'POST /api/v1/sessions', 'PUT /api/v1/sessions/1']);
    } finally {
      server.close();
    }
  });
});

describe('a Duffy the CLI cannot reach', () => {
  it('is named without a key written into its URL, which would land in the build log', async () => {
    const url = 'http://ta:0b5e8f6c-6a31-4c1e-9a55-4d2b1a7f0c11@127.0.0.1:1';
    const err = await new DuffyClient({ url, tenant: 'ta', key: 'k' }).exchange('POST', '/sessions', {}).catch((e: Error) => e);
    expect((err as Error).message).toMatch(/^cannot reach Duffy at http:\/\/\*\*\*@127\.0\.0\.1:1: /);
    expect(shownUrl('http://localhost:8080')).toBe('http://localhost:8080');
    expect(shownUrl('https://duffy.example.org/a@b')).toBe('https://duffy.example.org/a@b');
  });
});
