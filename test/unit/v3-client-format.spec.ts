import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { run } from '../../src/cli/main.js';

/**
 * Duffy v3's `duffy client --format` is a `click.Choice(..., case_sensitive=False)` (duffy/cli.py): a Jenkins job
 * written with `--format JSON` or `--format=Flat` ran there, and must run here the same.
 */
describe('duffy client --format, read as Duffy v3 reads it', () => {
  let server: Server;
  let url = '';
  const pools = { action: 'get', pools: [{ name: 'p', 'fill-level': 1 }] };
  beforeAll(async () => {
    server = createServer((req, res) => {
      // A pool's page and a request are refused, as Duffy refuses them; the list of pools is answered.
      const refusal = req.method === 'POST' ? "can't reserve nodes: unknown pool nope" : req.url?.includes('/pools/') ? `pool ${decodeURIComponent(req.url.split('/').pop()!)} not found` : undefined;
      res.writeHead(refusal ? 404 : 200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(refusal ? { detail: refusal } : pools));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  const cli = async (...args: string[]) => {
    const lines: string[] = [];
    const code = await run(['node', 'duffy', 'client', '--url', url, '--auth-name', 't', '--auth-key', 'k', ...args], (l) => lines.push(l));
    return { code, stdout: lines.join('\n') };
  };

  it.each([
    ['JSON', '{"action": "get", "pools": [{"name": "p", "fill-level": 1}]}'],
    ['Flat', "pool_name='p' fill_level=1"],
    ['YAML', 'action: get\npools:\n- fill-level: 1\n  name: p\n'],
  ])('--format %s is taken, whatever its case', async (format, stdout) => {
    expect(await cli('--format', format, 'list-pools')).toEqual({ code: 0, stdout });
  });

  it("--format yaml prints an error answer as v3's yaml.dump does: PyYAML's quotes and escapes", async () => {
    expect(await cli('--format', 'yaml', 'request-session', 'pool=nope,quantity=1')).toEqual({ code: 0, stdout: "error:\n  detail: 'can''t reserve nodes: unknown pool nope'\n" });
    expect(await cli('--format', 'yaml', 'show-pool', 'ünïcode')).toEqual({ code: 0, stdout: 'error:\n  detail: "pool \\xFCn\\xEFcode not found"\n' });
  });

  it("v3's top-level -l/--loglevel is taken, in any case, before `client`", async () => {
    for (const flags of [['-l', 'DEBUG'], ['--loglevel', 'info']]) {
      const lines: string[] = [];
      const code = await run(['node', 'duffy', ...flags, 'client', '--url', url, '--auth-name', 't', '--auth-key', 'k', 'list-pools'], (l) => lines.push(l));
      expect({ code, stdout: lines.join('\n') }).toEqual({ code: 0, stdout: '{"action": "get", "pools": [{"name": "p", "fill-level": 1}]}' });
    }
    expect((await run(['node', 'duffy', '-l', 'loud', 'client', '--url', url, 'list-pools'], () => undefined))).toBe(2);
  });

  it('a format that is none of them is still a usage error', async () => {
    expect((await cli('--format', 'xml', 'list-pools')).code).toBe(2);
  });
});
