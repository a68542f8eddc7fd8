import { describe, expect, it } from '@jest/globals';
import { execaSync } from 'execa';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AnsibleRunner, type DuffyIn, extraVarsJson, findDuffyOut, outcomes } from '../../src/adapters/ansible-runner.js';

const input = {
  action: 'provision',
  nodes: [
    { id: 1, hostname: 'a', ipaddr: '10.0.0.1', data: {} },
    { id: 2, hostname: 'b', ipaddr: null, data: {} },
  ],
} as unknown as DuffyIn;
const doc = (duffyOut: unknown) => JSON.stringify({ plays: [{ tasks: [{ hosts: { localhost: { ansible_facts: { duffy_out: duffyOut } } } }] }] });

describe('reading a playbook run', () => {
  it('takes each node from duffy_out', () => {
    const out = outcomes(input, doc({ nodes: [{ hostname: 'a', ipaddr: '10.0.0.9', ok: true }, { hostname: 'b', ok: false, error: 'no disk' }] }), { exitCode: 0, timedOut: false });
    expect([...out]).toEqual([
      ['a', { ok: true, ipaddr: '10.0.0.9' }],
      ['b', { ok: false, ipaddr: null, error: 'no disk' }],
    ]);
  });

  it.each([
    ['garbage output', '\u0000\u00ff not json {', 0, false, 'playbook output had no duffy_out'],
    ['a failed run', '', 2, false, 'playbook failed with exit code 2'],
    ['a timeout', doc({ nodes: [{ hostname: 'a', ok: true }] }), null, true, 'playbook timed out'],
    ['a duffy_out of the wrong shape', doc('}{ nonsense'), 0, false, 'playbook output had no duffy_out'],
  ])('fails every node on %s, saying why', (_name, stdout, exitCode, timedOut, error) => {
    const out = outcomes(input, stdout as string, { exitCode: exitCode as number | null, timedOut: timedOut as boolean });
    expect([...out.values()].map((o) => [o.ok, o.error])).toEqual([
      [false, error],
      [false, error],
    ]);
  });

  it('says so when the output was too long to read, rather than "no duffy_out" (real ansible-playbook)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-loud-'));
    const playbook = join(dir, 'loud.yml');
    // 2 MiB of output, then a good answer: only the runner's 1 MiB limit is in the way.
    writeFileSync(
      playbook,
      ['- hosts: localhost', '  gather_facts: false', '  tasks:', '    - ansible.builtin.command: head -c 2097152 /dev/zero', '      changed_when: false',
        '    - ansible.builtin.set_fact:', '        duffy_out: {nodes: [{hostname: a, ok: true}, {hostname: b, ok: true}]}', ''].join('\n'),
    );
    const r = await new AnsibleRunner(undefined, 1024 * 1024).run({ ...input, pool: { name: 'p', type: 'vm', driver: 'local', arch: 'x86_64', platform: 'intel', vars: {} }, data_dir: dir }, { timeoutMs: 60_000, playbook });
    expect([...r.nodes.values()].map((o) => o.error)).toEqual(Array(2).fill('playbook output over 1 MiB: its duffy_out could not be read'));
    expect(r.fault).toBeUndefined();
  }, 60_000);

  it('reads duffy_out when callbacks the operator enabled print around the JSON report (real ansible-playbook)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-callbacks-'));
    const playbook = join(dir, 'ok.yml');
    writeFileSync(playbook, ['- hosts: localhost', '  gather_facts: false', '  tasks:', '    - ansible.builtin.set_fact:', '        duffy_out: {nodes: [{hostname: a, ok: true}, {hostname: b, ok: true}]}', ''].join('\n'));
    // Duffy inherits its environment: timer and profile_tasks print a line before the report and a summary after it.
    const before = process.env.ANSIBLE_CALLBACKS_ENABLED;
    process.env.ANSIBLE_CALLBACKS_ENABLED = 'timer,profile_tasks';
    try {
      const r = await new AnsibleRunner().run({ ...input, pool: { name: 'p', type: 'vm', driver: 'local', arch: 'x86_64', platform: 'intel', vars: {} }, data_dir: dir }, { timeoutMs: 120_000, playbook });
      expect(r.run.tail).toContain('Playbook run took');
      expect([...r.nodes.values()].map((o) => o.ok)).toEqual([true, true]);
    } finally {
      if (before === undefined) delete process.env.ANSIBLE_CALLBACKS_ENABLED;
      else process.env.ANSIBLE_CALLBACKS_ENABLED = before;
    }
  }, 120_000);

  it('names the task that stopped a failed run and what it said, not only the exit code (real ansible-playbook)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'duffy-half-'));
    const playbook = join(dir, 'half.yml');
    // A site's playbook with no duffy_common: an early failure rescued, then one that stops the play half-way.
    writeFileSync(
      playbook,
      ['- hosts: localhost', '  gather_facts: false', '  tasks:',
        '    - block: [{name: rescued early, ansible.builtin.command: /bin/false}]', '      rescue: [{ansible.builtin.debug: {msg: fine}}]',
        '    - name: wipe the disk', '      ansible.builtin.shell: echo no such disk /dev/sdz >&2; exit 3',
        '    - ansible.builtin.set_fact:', '        duffy_out: {nodes: [{hostname: a, ok: true}, {hostname: b, ok: true}]}', ''].join('\n'),
    );
    const r = await new AnsibleRunner().run({ ...input, pool: { name: 'p', type: 'vm', driver: 'local', arch: 'x86_64', platform: 'intel', vars: {} }, data_dir: dir }, { timeoutMs: 120_000, playbook });
    expect([...r.nodes.values()].map((o) => o.error)).toEqual(Array(2).fill('playbook failed with exit code 2: task "wipe the disk" failed: non-zero return code: no such disk /dev/sdz'));
  }, 120_000);

  it('fails the nodes a run said were ok when a task after its duffy_out failed (the run exits non-zero)', () => {
    // The JSON report of a release that set duffy_out first, then failed to wipe the disk (ansible-playbook exit 2).
    const report = JSON.stringify({ plays: [{ tasks: [
      { task: { name: 'answer' }, hosts: { localhost: { ansible_facts: { duffy_out: { nodes: [{ hostname: 'a', ok: true }, { hostname: 'b', ok: false, error: 'no disk' }] } } } } },
      { task: { name: 'wipe the disk' }, hosts: { localhost: { failed: true, msg: 'non-zero return code', stderr: 'busy' } } },
    ] }] }, null, 4);
    expect([...outcomes(input, report, { exitCode: 2, timedOut: false })]).toEqual([
      ['a', { ok: false, ipaddr: '10.0.0.1', error: 'playbook failed with exit code 2 after its duffy_out: task "wipe the disk" failed: non-zero return code: busy', unattributed: true }],
      ['b', { ok: false, ipaddr: null, error: 'no disk' }],
    ]);
  });

  it('keeps a bounded part of a huge node error (a failed task\'s whole stderr), its start and its end', () => {
    const huge = 'S' + 'x'.repeat(1_500_000) + 'END';
    const out = outcomes(input, doc({ nodes: [{ hostname: 'a', ok: false, error: huge }, { hostname: 'b', ok: false, error: 'short' }] }), { exitCode: 2, timedOut: false });
    const error = out.get('a')!.error!;
    expect(error.length).toBeLessThan(2_100);
    expect(error.startsWith('S')).toBe(true);
    expect(error.endsWith('END')).toBe(true);
    expect(out.get('b')!.error).toBe('short');
  });

  it('fails a node that duffy_out forgot', () => {
    const out = outcomes(input, doc({ nodes: [{ hostname: 'a', ok: true }] }), { exitCode: 0, timedOut: false });
    expect(out.get('b')).toEqual({ ok: false, ipaddr: null, error: 'node missing from duffy_out' });
    expect(findDuffyOut('prefix noise ' + doc({ nodes: [] }))).toEqual([]);
  });
});

describe('the extra vars a playbook gets', () => {
  it('marks every string tenants and admins wrote as unsafe text, and leaves the configuration\'s pool vars templates', () => {
    const given: DuffyIn = {
      action: 'contextualize',
      pool: { name: 'p', type: 'vm', driver: 'local', arch: 'x86_64', platform: 'intel', vars: { image_dir: '{{ playbook_dir }}/images', nested: { list: ['{{ x }}'] } } },
      session: { id: 1, tenant: 't', ssh_key: "ssh-ed25519 AAAA {{ lookup('pipe', 'id') }}" },
      nodes: [{ id: 1, hostname: 'n1', ipaddr: null, data: { note: '{{ 7 * 7 }}', n: 3 } }] as DuffyIn['nodes'],
      data_dir: '/d',
    };
    const json = JSON.parse(extraVarsJson(given)).duffy_in;
    expect(json.session.ssh_key).toEqual({ __ansible_unsafe: "ssh-ed25519 AAAA {{ lookup('pipe', 'id') }}" });
    expect(json.nodes[0].data).toEqual({ note: { __ansible_unsafe: '{{ 7 * 7 }}' }, n: 3 });
    expect(json.action).toEqual({ __ansible_unsafe: 'contextualize' });
    expect(json.pool.vars).toEqual({ image_dir: '{{ playbook_dir }}/images', nested: { list: ['{{ x }}'] } });
  });
});


describe('the runs a killed predecessor left behind', () => {
  it('kills a run whose process group file a kill -9 never let it write (killed between spawn and that write)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-reap-'));
    const run = join(dataDir, 'runs', 'run-x');
    mkdirSync(run, { recursive: true });
    const input: DuffyIn = { action: 'release', pool: { name: 'p', type: 'vm', driver: 'local', arch: 'x86_64', platform: 'intel', vars: {} }, session: { id: 7, tenant: 't', ssh_key: 'k' }, policy: 'reuse', nodes: [{ id: 1, hostname: 'n1.test', ipaddr: null, data: {} }], data_dir: dataDir };
    writeFileSync(join(run, 'duffy_in.json'), extraVarsJson(input));
    const playbook = join(dataDir, 'hang.yml');
    writeFileSync(playbook, '- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 300\n');
    // As the runner spawns it: its own process group, the input named on its command line.
    const child = spawn('ansible-playbook', ['-i', 'localhost,', '-c', 'local', playbook, '-e', `@${join(run, 'duffy_in.json')}`], { detached: true, stdio: 'ignore' });
    const alive = (pid: number) => {
      try {
        return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').at(-1)?.[0] !== 'Z';
      } catch {
        return false;
      }
    };
    try {
      // Its module runs: the group holds the playbook and the `sleep` it started.
      for (let i = 0; i < 300 && !execaSync('pgrep', ['-g', String(child.pid), '-x', 'sleep'], { reject: false }).stdout; i++) await sleep(100);
      // Said by what it was, so the log tells on-call which work the new process does again.
      expect(await new AnsibleRunner().reap(dataDir)).toEqual(['release p [n1.test] for session 7']);
      for (let i = 0; i < 50 && alive(child.pid!); i++) await sleep(100);
      expect(alive(child.pid!)).toBe(false);
      expect(readdirSync(join(dataDir, 'runs'))).toEqual([]);
    } finally {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }, 60_000);

  it("names a run whose controller is gone while its task's process still runs, and kills that", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-reap-'));
    const run = join(dataDir, 'runs', 'run-y');
    mkdirSync(join(run, 'tmp'), { recursive: true });
    const input: DuffyIn = { action: 'contextualize', pool: { name: 'p', type: 'vm', driver: 'local', arch: 'x86_64', platform: 'intel', vars: {} }, session: { id: 8, tenant: 't', ssh_key: 'k' }, policy: 'reuse', nodes: [{ id: 1, hostname: 'n2.test', ipaddr: null, data: {} }], data_dir: dataDir };
    writeFileSync(join(run, 'duffy_in.json'), extraVarsJson(input));
    // The controller is gone; what it started still carries the run's TMPDIR, as every process of a run does.
    const task = spawn('sleep', ['300'], { detached: true, stdio: 'ignore', env: { ...process.env, TMPDIR: join(run, 'tmp') } });
    try {
      for (let i = 0; i < 50 && !existsSync(`/proc/${task.pid}/environ`); i++) await sleep(50);
      expect(await new AnsibleRunner().reap(dataDir)).toEqual(['contextualize p [n2.test] for session 8']);
      const exited = await new Promise((r) => (task.exitCode !== null || task.signalCode !== null ? r(task.signalCode) : task.once('exit', (_code, signal) => r(signal))));
      expect(exited).toBe('SIGKILL');
    } finally {
      task.kill('SIGKILL');
    }
  }, 60_000);
});

describe('a run killed mid-task', () => {
  it('kills the job of an async task too, which detaches from the run\'s process group (real ansible-playbook)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-async-'));
    const playbook = join(dataDir, 'async.yml');
    const marker = `duffy-async-job-${process.pid}`;
    writeFileSync(playbook, ['- hosts: localhost', '  gather_facts: false', '  tasks:', `    - ansible.builtin.shell: exec -a ${marker} sleep 300`,
      '      args: {executable: /bin/bash}', '      async: 600', '      poll: 1', ''].join('\n'));
    const jobs = () => readdirSync('/proc').filter((pid) => /^[0-9]+$/.test(pid) && (() => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith(marker) && readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').at(-1)?.[0] !== 'Z';
      } catch {
        return false;
      }
    })());
    const runner = new AnsibleRunner();
    try {
      const running = runner.run({ ...input, pool: { name: 'p', type: 'vm', driver: 'local', arch: 'x86_64', platform: 'intel', vars: {} }, data_dir: dataDir }, { timeoutMs: 120_000, playbook });
      for (let i = 0; i < 600 && jobs().length === 0; i++) await sleep(100);
      expect(jobs()).toHaveLength(1);
      runner.stopAll();
      await running;
      await sleep(200);
      expect(jobs()).toEqual([]);
    } finally {
      runner.stopAll();
      for (const pid of jobs()) process.kill(Number(pid), 'SIGKILL');
    }
  }, 120_000);

  it('leaves no module files in the temporary directory (real ansible-playbook)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-killed-'));
    const ownTmp = mkdtempSync(join(tmpdir(), 'duffy-killed-tmp-'));
    const playbook = join(dataDir, 'hang.yml');
    writeFileSync(playbook, '- hosts: localhost\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 300\n');
    const list = (dir: string) => {
      try {
        return readdirSync(dir);
      } catch {
        return [];
      }
    };
    const payloads = () =>
      [...list(ownTmp), ...list(join(dataDir, 'runs')).flatMap((run) => list(join(dataDir, 'runs', run, 'tmp')))].filter((name) => name.startsWith('ansible_'));
    const before = process.env.TMPDIR;
    process.env.TMPDIR = ownTmp;
    const runner = new AnsibleRunner();
    try {
      const running = runner.run({ ...input, pool: { name: 'p', type: 'vm', driver: 'local', arch: 'x86_64', platform: 'intel', vars: {} }, data_dir: dataDir }, { timeoutMs: 120_000, playbook });
      // The module runs once its payload is unpacked.
      for (let i = 0; i < 300 && payloads().length === 0; i++) await sleep(100);
      expect(payloads()).not.toEqual([]);
      runner.stopAll();
      await running;
      expect(readdirSync(ownTmp)).toEqual([]);
      expect(readdirSync(join(dataDir, 'runs'))).toEqual([]);
    } finally {
      runner.stopAll();
      if (before === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = before;
    }
  }, 60_000);
});
