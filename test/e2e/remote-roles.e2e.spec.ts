import { afterAll, beforeAll, describe, expect, it, jest } from '@jest/globals';
import { execa } from 'execa';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AnsibleRunner, type DuffyIn, type NodeOutcome, type PlaybookAction } from '../../src/adapters/ansible-runner.js';
import { filesUnder } from '../support/ansible.js';
import { type Sshd, freePort, sshRun, sshdMissing, startSshd } from '../support/sshd.js';

/**
 * The baremetal and vm roles' ssh side, run for real: Duffy's AnsibleRunner runs the playbooks, the node is this
 * machine behind a private sshd on 127.0.0.1 (test/support/sshd.ts). IPMI, PXE and real libvirt VMs cannot run here.
 */
jest.setTimeout(120_000);
const MARKER = '# --- duffy session keys below: removed on release ---';

const missing = sshdMissing();
if (missing) {
  console.log(`SKIPPED: remote roles over ssh (test/e2e/remote-roles.e2e.spec.ts): ${missing}`);
  describe('remote roles over ssh', () => {
    it.skip(`SKIPPED: ${missing}`, () => undefined);
  });
} else {
  describe('remote roles over ssh', () => {
    let sshd: Sshd;
    let dataDir: string;
    let nodeArtifacts: string;
    let tenantKey: string;
    const runner = new AnsibleRunner();

    beforeAll(async () => {
      sshd = await startSshd();
      dataDir = mkdtempSync(join(tmpdir(), 'duffy-remote-'));
      nodeArtifacts = join(sshd.dir, 'artifacts');
      tenantKey = join(sshd.dir, 'tenant_key');
      await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'alice@ci', '-f', tenantKey]);
    });
    afterAll(() => sshd?.stop());

    const node = (id: number, port = sshd.port, data: Record<string, unknown> = {}) => ({
      id,
      hostname: `n${id}.test`,
      ipaddr: '127.0.0.1',
      data: { ssh_port: port, ssh_user: sshd.user, authorized_keys: sshd.authorizedKeys, artifacts_path: nodeArtifacts, ...data },
    });
    const input = (action: PlaybookAction, driver: string, nodes = [node(1)], extra: Partial<DuffyIn> = {}): DuffyIn => ({
      action,
      // ssh_args (Duffy's key) from the pool's vars, the configuration; port, user and paths from node data.
      pool: { name: `remote-${driver}`, type: driver === 'vm' ? 'vm' : 'baremetal', driver, arch: 'x86_64', platform: 'intel', vars: { ssh_args: sshd.sshArgs } },
      session: { id: 7, tenant: 'alice', ssh_key: readFileSync(`${tenantKey}.pub`, 'utf8') },
      nodes,
      data_dir: dataDir,
      ...extra,
    });
    const run = async (i: DuffyIn): Promise<Map<string, NodeOutcome>> => {
      const r = await runner.run(i, { timeoutMs: 100_000 });
      expect(r.fault).toBeUndefined();
      return r.nodes;
    };
    const accepted = (): number => (sshd.log().match(/Accepted publickey for /g) ?? []).length;
    const keysFile = (): string => readFileSync(sshd.authorizedKeys, 'utf8');
    const duffyKey = (): string => readFileSync(`${sshd.keyFile}.pub`, 'utf8').trim();

    it('probe: a node nobody answers for fails alone, "unreachable over ssh", and the other node of the run is served over ssh', async () => {
      const deadPort = await freePort(2200, 2299, [sshd.port]);
      const before = accepted();
      // No session key: the live node's keys stay as they are for the next test.
      // ssh options come from the pool's vars (configuration) only: node data is written through the API, and a
      // ProxyCommand in it would run on Duffy's host.
      const pwned = join(sshd.dir, 'pwned');
      const out = await run(
        input('contextualize', 'baremetal', [node(1, deadPort, { authorized_keys: join(sshd.dir, 'dead_keys') }), node(2, sshd.port, { ssh_args: `-o ProxyCommand="touch ${pwned}"` })], {
          session: { id: 6, tenant: 'bob', ssh_key: '' },
        }),
      );
      expect(existsSync(pwned)).toBe(false);
      // 127.0.0.1 is Ansible's implicit localhost: delegating to it ran the "node's" tasks on Duffy's own host, so
      // a dead node passed and the tenant's key went into this host's authorized_keys.
      expect(out.get('n1.test')).toMatchObject({ ok: false, error: expect.stringMatching(new RegExp(`unreachable over ssh: .*port ${deadPort}: Connection refused`)) });
      expect(existsSync(join(sshd.dir, 'dead_keys'))).toBe(false);
      expect(out.get('n2.test')).toMatchObject({ ok: true, ipaddr: '127.0.0.1' });
      // Over ssh with Duffy's key, as the node's user (the first login of the suite: later runs may reuse
      // Ansible's persistent ssh connection).
      expect(accepted()).toBeGreaterThan(before);
      expect(sshd.log()).toContain(`Accepted publickey for ${sshd.user} from 127.0.0.1`);
      expect(keysFile().split('\n').filter(Boolean)).toEqual([duffyKey()]);
    });

    it.each(['baremetal', 'vm'])('%s: contextualize lets the tenant log in, twice adds one copy; decontextualize locks them out and keeps the node\'s own keys', async (driver) => {
      expect((await sshRun(sshd, tenantKey, 'true')).exitCode).not.toBe(0);

      expect((await run(input('contextualize', driver))).get('n1.test')).toMatchObject({ ok: true });
      // The same run again (a retried hand-over); once is enough to prove it for both drivers' shared tasks.
      if (driver === 'baremetal') expect((await run(input('contextualize', driver))).get('n1.test')).toMatchObject({ ok: true });
      const tenantPub = readFileSync(`${tenantKey}.pub`, 'utf8').trim();
      expect(keysFile().split('\n').filter(Boolean)).toEqual([duffyKey(), MARKER, tenantPub]);
      const login = await sshRun(sshd, tenantKey, 'id -un');
      expect(login).toMatchObject({ exitCode: 0, stdout: sshd.user });

      expect((await run(input('decontextualize', driver))).get('n1.test')).toMatchObject({ ok: true });
      expect(keysFile().split('\n').filter(Boolean)).toEqual([duffyKey()]);
      expect((await sshRun(sshd, tenantKey, 'true')).exitCode).toBe(255);
    });

    /** Files on the node, relative to its artifacts directory. */
    const leave = (files: Record<string, string>): void => {
      for (const [rel, content] of Object.entries(files)) {
        mkdirSync(join(nodeArtifacts, rel, '..'), { recursive: true });
        writeFileSync(join(nodeArtifacts, rel), content);
      }
    };
    const tree = filesUnder;

    it('collect_artifacts: the files that fit the limit, in path order, relative paths kept; leftOut noted; the node\'s directory emptied', async () => {
      // Names as tenants make them: hidden, nested, a space, a leading dash, a newline.
      leave({ '-dash.txt': 'd', '.hidden': 'h', 'logs/a.txt': 'alpha', 'logs/deep/b.txt': 'bravo', 'new\nline.txt': 'nl', 'with space.txt': 'sp', 'z-last.txt': 'zulu-zulu' });
      // A link the tenant planted is not followed: /etc/passwd of the node never reaches Duffy's disk.
      symlinkSync('/etc/passwd', join(nodeArtifacts, 'logs', 'passwd-link'));
      const artifactsDir = join(dataDir, 'artifacts', 'session-7');
      // Six files fit; in path order the seventh (z-last.txt, 9 bytes) is left out.
      const out = await run(input('collect_artifacts', 'vm', [node(1)], { artifacts_dir: artifactsDir, artifacts_limit: { bytes: 1000, files: 6 } }));
      expect(out.get('n1.test')).toMatchObject({ ok: true, note: expect.stringMatching(/^1 file\(s\), 9 bytes, left out: over the pool's artifacts limit \(6 files, 1000 bytes per machine\)$/) });
      const got = join(artifactsDir, 'n1.test');
      expect(tree(got)).toEqual(['-dash.txt', '.hidden', 'logs/a.txt', 'logs/deep/b.txt', 'new\nline.txt', 'with space.txt']);
      // Nothing but the files: the archive made on the node and fetched is gone from both sides.
      expect(readdirSync(artifactsDir)).toEqual(['n1.test']);
      expect(readFileSync(join(got, 'logs', 'deep', 'b.txt'), 'utf8')).toBe('bravo');
      // Emptied, kept as a directory.
      expect(readdirSync(nodeArtifacts)).toEqual([]);

      // The byte limit too: 6 bytes take a.txt (5) only.
      leave({ 'a.txt': 'alpha', 'b.txt': 'bravo' });
      const bytes = await run(input('collect_artifacts', 'baremetal', [node(1)], { artifacts_dir: join(dataDir, 'artifacts', 'session-8'), artifacts_limit: { bytes: 6, files: 100 } }));
      expect(bytes.get('n1.test')).toMatchObject({ ok: true, note: expect.stringMatching(/^1 file\(s\), 5 bytes, left out/) });
      expect(tree(join(dataDir, 'artifacts', 'session-8', 'n1.test'))).toEqual(['a.txt']);
      expect(readdirSync(nodeArtifacts)).toEqual([]);
    });

    it('collect_artifacts of 1500 files is one archive and one fetch, not a task per file: well within a playbook-timeout', async () => {
      const files: Record<string, string> = {};
      for (let i = 0; i < 1500; i += 1) files[`many/${String(Math.floor(i / 100)).padStart(2, '0')}/f${String(i).padStart(4, '0')}.log`] = `line ${i}\n`;
      leave(files);
      const artifactsDir = join(dataDir, 'artifacts', 'session-10');
      const started = Date.now();
      const out = await run(input('collect_artifacts', 'baremetal', [node(1)], { artifacts_dir: artifactsDir, artifacts_limit: { bytes: 1 << 20, files: 1200 } }));
      // A fetch task per file took a few tenths of a second each: 1200 of them, several minutes.
      expect(Date.now() - started).toBeLessThan(60_000);
      expect(out.get('n1.test')).toMatchObject({ ok: true, note: expect.stringMatching(/^300 file\(s\), \d+ bytes, left out/) });
      const got = tree(join(artifactsDir, 'n1.test'));
      expect(got).toHaveLength(1200);
      expect(got[0]).toBe('many/00/f0000.log');
      expect(got[1199]).toBe('many/11/f1199.log');
      expect(readFileSync(join(artifactsDir, 'n1.test', 'many', '11', 'f1199.log'), 'utf8')).toBe('line 1199\n');
      expect(readdirSync(nodeArtifacts)).toEqual([]);
    });

    it('collect_artifacts with nothing to collect (no directory on the node) is ok and notes nothing', async () => {
      const out = await run(input('collect_artifacts', 'baremetal', [node(1, sshd.port, { artifacts_path: join(sshd.dir, 'none') })], { artifacts_dir: join(dataDir, 'artifacts', 'session-9'), artifacts_limit: { bytes: 1000, files: 10 } }));
      expect(out.get('n1.test')).toEqual({ ok: true, ipaddr: '127.0.0.1' });
      expect(tree(join(dataDir, 'artifacts', 'session-9'))).toEqual([]);
    });

    // libvirt's built-in test driver (no daemon, no hypervisor) has one domain, "test", always running: enough for the
    // vm role's health check to get past libvirt to its ssh probe. Needs python3-libvirt (scripts/setup.sh).
    if (!existsSync('/usr/lib/python3/dist-packages/libvirt.py')) {
      it.skip('SKIPPED: vm health_check over ssh: python3-libvirt is not installed (scripts/setup.sh installs it)', () => undefined);
    } else {
      it('vm health_check: libvirt (its test driver) says running and the node answers over ssh; an unknown domain or a dead node fails', async () => {
        const vm = (id: number, hostname: string, port = sshd.port) => ({ ...node(id, port), hostname });
        const health = (nodes: ReturnType<typeof vm>[]): DuffyIn => {
          const i = input('health_check', 'vm', nodes, { session: null });
          return { ...i, pool: { ...i.pool, vars: { ...i.pool.vars, libvirt_uri: 'test:///default' } } };
        };
        const out = await run(health([vm(1, 'n1.test'), vm(2, 'test')]));
        expect(out.get('n1.test')).toMatchObject({ ok: false, error: 'virtual machine n1.test not found' });
        expect(out.get('test')).toMatchObject({ ok: true, ipaddr: '127.0.0.1' });
        // Where VMs are made is the configuration's to say: a libvirt URI in node data (the API writes it; a
        // qemu+ext:// one runs a command on the Duffy host) is not used.
        const planted = vm(2, 'test');
        planted.data = { ...planted.data, libvirt_uri: 'test:///no-such-definition.xml' } as typeof planted.data;
        expect((await run(health([planted]))).get('test')).toMatchObject({ ok: true, ipaddr: '127.0.0.1' });
        // The same node on a port nobody answers: the ssh probe is what passed above.
        const deadPort = await freePort(2200, 2299, [sshd.port]);
        expect((await run(health([vm(2, 'test', deadPort)]))).get('test')).toMatchObject({ ok: false, error: expect.stringMatching(/^unreachable over ssh: .*Connection refused/) });
      });
    }

    it.each(['baremetal', 'vm'])('%s: release with policy reuse drops the session keys and empties the artifacts directory', async (driver) => {
      // The key part is the same shared tasks for both drivers: once is enough.
      if (driver === 'baremetal') await run(input('contextualize', driver));
      leave({ 'left/over.txt': 'x' });
      expect((await run(input('release', driver, [node(1)], { policy: 'reuse' }))).get('n1.test')).toMatchObject({ ok: true });
      expect(keysFile().split('\n').filter(Boolean)).toEqual([duffyKey()]);
      expect(readdirSync(nodeArtifacts)).toEqual([]);
      expect((await sshRun(sshd, tenantKey, 'true')).exitCode).toBe(255);
    });
  });
}
