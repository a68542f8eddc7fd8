import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type Running, startDuffy } from '../support/server.js';

const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));
const exec = promisify(execFile);

describe('duffy CLI against a running server', () => {
  let duffy: Running;
  let env: NodeJS.ProcessEnv;

  /** The built CLI as a user runs it; returns its output and exit code. */
  const cli = async (...args: string[]) => {
    try {
      const r = await exec(process.execPath, [CLI, ...args], { env });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };

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
    const done = await cli('done', id);
    expect(done.code).toBe(0);
    expect(done.stdout).toContain(`session ${id} ended`);
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
    expect((await cli('request')).code).toBe(2);
    expect((await cli('request', '--pool', 'vm-intel-x86_64', '--count', 'zero')).code).toBe(2);
    expect((await cli('request', '--pool', 'metal-intel-x86_64', '--count', '9')).code).toBe(3); // over quota: 403
    expect((await cli('request', '--pool', 'vm-arm-aarch64', '--count', '3')).code).toBe(5);
    expect((await cli('show', '99999')).code).toBe(4);
    const bad = await cli('--key', 'wrong', 'list');
    expect(bad.code).toBe(3);
    expect(bad.stderr).toMatch(/^duffy: Invalid tenant name or API key/);
    expect((await cli('--url', 'http://127.0.0.1:1', 'list')).code).toBe(7);
  });

  it('--wait keeps trying while machines are busy, with progress on a terminal, and gets one when it frees', async () => {
    // Hold both arm VMs, then free one while the CLI waits.
    const held = (await duffy.admin.post('/api/v1/sessions', { nodes_specs: [{ pool: 'vm-arm-aarch64', quantity: 2 }] })).body.session;
    const args = [CLI, 'request', '--pool', 'vm-arm-aarch64', '--wait', '30'].map((a) => `'${a}'`).join(' ');
    // `script` gives the CLI a real terminal, as in a developer's shell.
    const waiting = exec('script', ['-qec', `${process.execPath} ${args}`, '/dev/null'], { env });
    await new Promise((r) => setTimeout(r, 2500));
    await duffy.admin.put(`/api/v1/sessions/${held.id}`, { active: false });
    const r = await waiting;
    expect(r.stdout).toMatch(/waiting for 1 machine\(s\): can't reserve nodes/);
    expect(r.stdout).toMatch(/session \d+ active until/);
    expect(r.stdout).toMatch(/ssh root@vm-arm-/);
  }, 60_000);
});
