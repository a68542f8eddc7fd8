import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AnsibleRunner, type DuffyIn, type NodeOutcome } from '../../src/adapters/ansible-runner.js';
import { diskUse, filesUnder } from '../support/ansible.js';
import { type Sshd, sshdMissing, startSshd } from '../support/sshd.js';

/**
 * What one machine's artifacts collection leaves on Duffy's disk stays within the pool's limit whatever the machine
 * does after its files were listed: a file a running process grows (local driver), a tampered node whose archive holds
 * more than it listed (remote driver, over a private sshd). Real ansible-playbook through Duffy's runner.
 */
jest.setTimeout(120_000);
const runner = new AnsibleRunner();
const run = async (i: DuffyIn): Promise<Map<string, NodeOutcome>> => {
  const r = await runner.run(i, { timeoutMs: 100_000 });
  expect(r.fault).toBeUndefined();
  return r.nodes;
};
const collectInput = (driver: string, node: DuffyIn['nodes'][number], dataDir: string, artifactsDir: string, limit: { bytes: number; files: number }, vars: Record<string, unknown> = {}): DuffyIn => ({
  action: 'collect_artifacts',
  pool: { name: `limit-${driver}`, type: 'baremetal', driver, arch: 'x86_64', platform: 'intel', vars },
  session: { id: 3, tenant: 'alice', ssh_key: '' },
  nodes: [node],
  data_dir: dataDir,
  artifacts_dir: artifactsDir,
  artifacts_limit: limit,
});

/** test/support/grow-on-open.py: appends `bytes` to `file` when `trigger` is first opened, before that open goes on. */
async function growOnOpen(trigger: string, file: string, bytes: number): Promise<{ grown: () => Promise<boolean> }> {
  const child = spawn('python3', [fileURLToPath(new URL('../support/grow-on-open.py', import.meta.url)), trigger, file, String(bytes)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', () => out.includes('ready') && resolve());
    child.once('exit', (code) => reject(new Error(`grow-on-open.py exited ${code} before it was armed`)));
  });
  return {
    // Never leaves it behind: a pending permission event would hold any opener of the trigger.
    grown: async () => {
      if (child.exitCode === null) child.kill('SIGKILL');
      await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(undefined) : child.once('exit', resolve)));
      return out.includes('grown');
    },
  };
}

const fanotifyMissing = process.getuid?.() === 0 ? undefined : 'fanotify permission events need root';
(fanotifyMissing ? describe.skip : describe)('local driver: a file grown after it was listed', () => {
  const limit = { bytes: 8192, files: 10 };
  const collect = async (growth: number) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-grow-'));
    const disk = join(dataDir, 'machines', 'grow-1.test', 'root', 'artifacts');
    mkdirSync(disk, { recursive: true });
    // Listed at 5 bytes each; the copy takes them in path order, so b-grows.log has grown by the time it is read.
    writeFileSync(join(disk, 'a-trigger.log'), 'trigger');
    writeFileSync(join(disk, 'b-grows.log'), 'start');
    writeFileSync(join(disk, 'c-after.log'), 'after');
    const grower = await growOnOpen(join(disk, 'a-trigger.log'), join(disk, 'b-grows.log'), growth);
    const artifactsDir = join(dataDir, 'artifacts', 'session-3');
    const out = await run(collectInput('local', { id: 1, hostname: 'grow-1.test', ipaddr: null, data: {} }, dataDir, artifactsDir, limit));
    expect(await grower.grown()).toBe(true);
    return { out: out.get('grow-1.test'), got: join(artifactsDir, 'grow-1.test'), artifactsDir, disk };
  };

  it('grown past the limit but not past the copy bound: left out and noted, the files after it still come', async () => {
    const { out, got, disk } = await collect(20_000);
    expect(filesUnder(got)).toEqual(['a-trigger.log', 'c-after.log']);
    expect(diskUse(got).bytes).toBeLessThanOrEqual(limit.bytes);
    expect(out).toMatchObject({ ok: true, note: expect.stringMatching(/^1 file\(s\), 20005 bytes, left out while copied: more than listed \(a file grown since, or a tampered machine\), over the limit \(10 files, 8192 bytes per machine\)$/) });
    expect(readdirSync(disk)).toEqual([]);
  });

  it('grown by 64 MiB: the copy stops at the bound, what came before it is kept, the note says where it stopped', async () => {
    const { out, got, artifactsDir } = await collect(64 << 20);
    expect(filesUnder(got)).toEqual(['a-trigger.log']);
    expect(diskUse(got).bytes).toBeLessThanOrEqual(limit.bytes);
    expect(out).toMatchObject({ ok: true, note: expect.stringMatching(/^1 file\(s\), 67108869 bytes, left out while copied: .*; the archive was cut at \d+ bytes, the most this limit allows: what came after is left out$/) });
    expect(readdirSync(artifactsDir)).toEqual(['grow-1.test']);
  });
});

const missing = sshdMissing();
const remoteNode = (sshd: Sshd, artifactsPath: string) => ({
  id: 1,
  hostname: 'node-1.test',
  ipaddr: '127.0.0.1',
  data: { ssh_port: sshd.port, ssh_user: sshd.user, authorized_keys: sshd.authorizedKeys, artifacts_path: artifactsPath },
});

(missing || fanotifyMissing ? describe.skip : describe)('remote driver: a file grown on an honest node after it was listed', () => {
  let sshd: Sshd;
  beforeAll(async () => (sshd = await startSshd()));
  afterAll(() => sshd?.stop());

  it('the node cuts its archive at the bound, so no more than that is fetched; what came before the grown file is kept', async () => {
    const nodeArtifacts = join(sshd.dir, 'artifacts');
    mkdirSync(nodeArtifacts);
    writeFileSync(join(nodeArtifacts, 'a-trigger.log'), 'trigger');
    writeFileSync(join(nodeArtifacts, 'b-grows.log'), 'start');
    writeFileSync(join(nodeArtifacts, 'c-after.log'), 'after');
    // The node is this machine: the grower runs "on the node".
    const grower = await growOnOpen(join(nodeArtifacts, 'a-trigger.log'), join(nodeArtifacts, 'b-grows.log'), 64 << 20);
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-grow-remote-'));
    const artifactsDir = join(dataDir, 'artifacts', 'session-3');
    const limit = { bytes: 8192, files: 10 };
    const out = (await run(collectInput('baremetal', remoteNode(sshd, nodeArtifacts), dataDir, artifactsDir, limit, { ssh_args: sshd.sshArgs }))).get('node-1.test');
    expect(await grower.grown()).toBe(true);
    const got = join(artifactsDir, 'node-1.test');
    expect(filesUnder(got)).toEqual(['a-trigger.log']);
    expect(diskUse(got).bytes).toBeLessThanOrEqual(limit.bytes);
    // Cut on the node ("the node sent" would say it sent more than the bound).
    expect(out).toMatchObject({ ok: true, note: expect.stringMatching(/^1 file\(s\), 67108869 bytes, left out while copied: .*; the archive was cut at \d+ bytes, the most this limit allows: what came after is left out$/) });
    expect(readdirSync(artifactsDir)).toEqual(['node-1.test']);
    expect(readdirSync(nodeArtifacts)).toEqual([]);
  });
});

(missing ? describe.skip : describe)('remote driver: a tampered node that sends more than it listed', () => {
  let sshd: Sshd;
  let liar: string;
  beforeAll(async () => {
    // Root on the node is the tenant's: its tar adds what was never listed (20 small files, 3 MiB), its head does
    // not stop. sshd's SetEnv puts them first in PATH for every command Duffy runs there.
    liar = mkdtempSync(join(tmpdir(), 'duffy-liar-'));
    mkdirSync(join(liar, 'bin'));
    mkdirSync(join(liar, 'flood'));
    for (let i = 0; i < 20; i += 1) writeFileSync(join(liar, 'flood', `f${String(i).padStart(2, '0')}`), 'ten bytes!');
    writeFileSync(join(liar, 'huge.bin'), Buffer.alloc(3 << 20, 'x'));
    writeFileSync(join(liar, 'bin', 'tar'), `#!/bin/sh\ncase " $* " in *" -cf "*) exec /usr/bin/tar --sort=name "$@" -C ${liar} flood huge.bin ;; esac\nexec /usr/bin/tar "$@"\n`);
    writeFileSync(join(liar, 'bin', 'head'), '#!/bin/sh\nexec cat\n');
    chmodSync(join(liar, 'bin', 'tar'), 0o755);
    chmodSync(join(liar, 'bin', 'head'), 0o755);
    sshd = await startSshd([`SetEnv PATH=${join(liar, 'bin')}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`]);
  });
  afterAll(() => sshd?.stop());

  it.each(['baremetal', 'vm'])('%s: Duffy keeps only what fits (files and bytes), notes the rest, and removes the oversized archive', async (driver) => {
    const nodeArtifacts = join(sshd.dir, `artifacts-${driver}`);
    mkdirSync(nodeArtifacts);
    for (const [name, content] of [['a.txt', 'alpha'], ['b.txt', 'bravo'], ['c.txt', 'charlie']]) writeFileSync(join(nodeArtifacts, name!), content!);
    const dataDir = mkdtempSync(join(tmpdir(), 'duffy-tampered-'));
    const artifactsDir = join(dataDir, 'artifacts', 'session-3');
    const limit = { bytes: 1000, files: 6 };
    const out = (await run(collectInput(driver, remoteNode(sshd, nodeArtifacts), dataDir, artifactsDir, limit, { ssh_args: sshd.sshArgs }))).get('node-1.test');
    const got = join(artifactsDir, 'node-1.test');
    // Listed: a, b, c (17 bytes); sent: those, then 20 flood files of 10 bytes and huge.bin. Six files fit.
    expect(filesUnder(got)).toEqual(['a.txt', 'b.txt', 'c.txt', 'flood/f00', 'flood/f01', 'flood/f02']);
    const use = diskUse(got);
    expect(use.files).toBeLessThanOrEqual(limit.files);
    expect(use.bytes).toBeLessThanOrEqual(limit.bytes);
    expect(out).toMatchObject({
      ok: true,
      // huge.bin's header came in (3 MiB, counted), most of its data did not.
      note: expect.stringMatching(/^18 file\(s\), 3145898 bytes, left out while copied: .*over the limit \(6 files, 1000 bytes per machine\); the archive was cut at \d+ bytes, the most this limit allows \(the node sent \d+\): what came after is left out$/),
    });
    // The fetched archive is gone; the node's directory emptied as always.
    expect(readdirSync(artifactsDir)).toEqual(['node-1.test']);
    expect(readdirSync(nodeArtifacts)).toEqual([]);
  });
});
