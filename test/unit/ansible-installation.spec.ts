import { describe, expect, it } from '@jest/globals';
import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AnsibleRunner, type DuffyIn } from '../../src/adapters/ansible-runner.js';

/**
 * The controller (the group leader, the pid `pgrep ansible-playbook` names first) killed by someone else than
 * Duffy's timeout, while its forked worker lives on holding its stdout: the worker kept the pipe open, so the run
 * waited for the whole playbook-timeout and was recorded as the machine's timeout (a failure, then a quarantine).
 */
describe('an ansible-playbook controller killed while its worker runs on', () => {
  it('is a fault of the environment at once, not a timeout blamed on the machine', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-killed-'));
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    // A worker that inherits stdout and outlives the controller, then the controller killed by a signal.
    writeFileSync(join(bin, 'ansible-playbook'), '#!/bin/bash\nsleep 60 &\nsleep 0.5\nkill -KILL $$\n');
    chmodSync(join(bin, 'ansible-playbook'), 0o755);
    const playbook = join(dir, 'provision.yml');
    writeFileSync(playbook, '- hosts: localhost\n');
    const input = { action: 'provision', pool: { name: 'p', type: 'vm', driver: 'local', arch: 'x86_64', platform: 'intel', vars: {} }, session: null, nodes: [{ id: 1, hostname: 'a', ipaddr: null, data: {} }], data_dir: dir } as DuffyIn;
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      const started = Date.now();
      const r = await new AnsibleRunner().run(input, { timeoutMs: 20_000, playbook });
      expect([r.run.timedOut, r.fault?.reason, r.fault?.scope]).toEqual([false, 'ansible-playbook was killed by SIGKILL', 'run']);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      process.env.PATH = path;
    }
  }, 30_000);
});

describe('an Ansible installation that is broken (its Python cannot import ansible)', () => {
  const broken = () => {
    const bin = join(mkdtempSync(join(tmpdir(), 'duffy-broken-')), 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'ansible-playbook'), "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'ansible'\" >&2\nexit 1\n");
    chmodSync(join(bin, 'ansible-playbook'), 0o755);
    return bin;
  };
  const withPath = async <T>(bin: string, f: () => Promise<T>): Promise<T> => {
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      return await f();
    } finally {
      process.env.PATH = path;
    }
  };

  it('is named as it is on /health (the version check), not as "not found on PATH"', async () => {
    await expect(withPath(broken(), () => new AnsibleRunner().version())).rejects.toThrow("ansible-playbook --version failed (exit code 1): ModuleNotFoundError: No module named 'ansible'");
  });

  it('fails its runs on Duffy\'s side: no machine is blamed', async () => {
    const input = { action: 'provision', pool: { name: 'p', type: 'vm', driver: 'local', arch: 'x86_64', platform: 'intel', vars: {} }, session: null, nodes: [{ id: 1, hostname: 'a', ipaddr: null, data: {} }], data_dir: mkdtempSync(join(tmpdir(), 'duffy-broken-data-')) } as DuffyIn;
    const playbook = join(input.data_dir, 'provision.yml');
    writeFileSync(playbook, '- hosts: localhost\n');
    const r = await withPath(broken(), () => new AnsibleRunner().run(input, { timeoutMs: 20_000, playbook }));
    expect(r.fault).toEqual({ reason: "ansible-playbook stopped before running the playbook (exit code 1): ModuleNotFoundError: No module named 'ansible'", spawned: true, scope: 'playbook' });
  });
});
