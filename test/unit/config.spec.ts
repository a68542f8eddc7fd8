import { describe, expect, it } from '@jest/globals';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ConfigError, DEMO_CONFIG, legacyHostname, legacyPool, loadConfig, loadSettings } from '../../src/config/config.js';

const write = (yaml: string) => {
  const file = join(mkdtempSync(join(tmpdir(), 'duffy-cfg-')), 'duffy.yaml');
  writeFileSync(file, yaml);
  return file;
};
const pool = 'pools: [{ name: p1, type: baremetal, arch: x86_64, platform: intel }]\n';

describe('configuration', () => {
  it('loads the bundled demo inventory: baremetal and VM pools on several platform families', () => {
    const c = loadConfig(DEMO_CONFIG);
    expect(new Set(c.pools.map((p) => p.type))).toEqual(new Set(['baremetal', 'vm']));
    expect(new Set(c.pools.map((p) => p.platform)).size).toBeGreaterThanOrEqual(3);
    expect(c.machines.length).toBeGreaterThanOrEqual(20);
    for (const ver of ['7', '8', '8-stream', '9', '9-stream', '10-stream']) {
      for (const arch of ['x86_64', 'aarch64']) expect(legacyPool(c.legacy, { ver, arch })).toBeDefined();
    }
    expect(legacyPool(c.legacy, { ver: '6', arch: 'x86_64' })).toBeUndefined();
  });

  it("takes Duffy v3's metaclient poolmap: pool names as Jinja templates of ver, arch and flavor, and mangle_hostname", () => {
    const c = loadConfig(write(`${pool}legacy:
  - { arch: "aarch64|ppc64|ppc64le", pool: "virtual-centos{{ ver | replace('-', '') }}-{{ arch }}-{{ flavor | default('medium') }}" }
  - { arch: x86_64, pool: "physical-centos{{ ver | replace('-', '') }}-{{ arch }}" }
legacy-mangle-hostname: "{{ hostname | replace('.ci.centos.org', '') }}"
`));
    expect(legacyPool(c.legacy, { ver: '8-stream', arch: 'aarch64' })).toBe('virtual-centos8stream-aarch64-medium');
    expect(legacyPool(c.legacy, { ver: '9-stream', arch: 'ppc64le', flavor: 'large' })).toBe('virtual-centos9stream-ppc64le-large');
    expect(legacyPool(c.legacy, { ver: '7', arch: 'x86_64' })).toBe('physical-centos7-x86_64');
    expect(legacyPool(c.legacy, { ver: '7', arch: 's390x' })).toBeUndefined();
    expect(legacyHostname(c, 'n1.ci.centos.org')).toBe('n1');
    // Without the setting, host names are as registered.
    expect(legacyHostname(loadConfig(write(pool)), 'n1.ci.centos.org')).toBe('n1.ci.centos.org');
  });

  it.each([
    ['not YAML', 'pools: [', /cannot read YAML/],
    ['a list at top level', '- a\n- b\n', /top level must be a mapping/],
    ['an unknown type', 'pools: [{ name: p1, type: mainframe, arch: x, platform: y }]', /pools\[0\]\.type: type must be one of/],
    ['a machine in an unknown pool', `${pool}machines: [{ hostname: a.b, pool: nope }]`, /machines\[0\]\.pool: unknown pool nope/],
    ['a bad IP', `${pool}machines: [{ hostname: a.b, pool: p1, ipaddr: 999.1.1.1 }]`, /machines\[0\]\.ipaddr/],
    ['a default lease past 30 days (every request was a 500: its expiry no ISO time can write)', 'defaults: { session-lifetime: 100000000000000 }', /defaults\.session-lifetime: session-lifetime must not be greater than 2592000/],
    ['a machine in a state of a session', `${pool}machines: [{ hostname: a.b, pool: p1, state: deployed }]`, /machines\[0\]\.state: state must be one of unused, provisioning, ready, deprovisioning, done, failed$/],
    ['one address for two machines', `${pool}machines: [{ hostname: a.b, pool: p1, ipaddr: 10.0.0.1 }, { hostname: c.d, pool: p1, ipaddr: 10.0.0.1 }]`, /machines\[1\]\.ipaddr: 10\.0\.0\.1 is a\.b's too/],
    ...['a..b', 'bad-.lab', '-bad.lab', 'under_score.lab', `${'a'.repeat(64)}.lab`].map((h) => [`a host name that is no DNS name (${h.slice(0, 20)})`, `${pool}machines: [{ hostname: ${h}, pool: p1 }]`, /machines\[0\]\.hostname: hostname must be a DNS name/] as [string, string, RegExp]),
    ['a duplicate host', `${pool}machines: [{ hostname: a.b, pool: p1 }, { hostname: a.b, pool: p1 }]`, /machines\[1\]\.hostname: duplicate/],
    ['hardware that no request could match', `${pool}machines: [{ hostname: a.b, pool: p1, hardware: { cpus: many } }]`, /machines\[0\]\.hardware\.cpus must be a number, at least 0/],
    ['one host in two spellings', `${pool}machines: [{ hostname: a.b, pool: p1 }, { hostname: A.B., pool: p1 }]`, /machines\[1\]\.hostname: duplicate A\.B\. \(of a\.b: host names ignore case and a trailing dot\)/],
    ['a bad legacy pattern', `${pool}legacy: [{ ver: '(', pool: p1 }]`, /legacy\[0\]\.ver: invalid pattern/],
    ['a legacy pool template that is no Jinja', `${pool}legacy: [{ pool: "p{{ ver " }]`, /legacy\[0\]\.pool: .*expected variable end/],
    ['a legacy pool template with an unknown filter', `${pool}legacy: [{ pool: "p{{ ver | nosuch }}" }]`, /legacy\[0\]\.pool: .*filter not found: nosuch/],
    ['a host name template that cannot render', `${pool}legacy-mangle-hostname: "{{ hostname | nosuch }}"`, /legacy-mangle-hostname: .*filter not found: nosuch/],
    ['an unknown key', `${pool}colour: blue`, /colour/],
    ['a list inside the machines list', `${pool}machines:\n  - { hostname: a.b, pool: p1 }\n  -   - { hostname: c.d, pool: p1 }\n`, /machines\[1\]: must be a mapping like \{hostname: \.\.\., pool: \.\.\.\}, got a list$/],
    ['a string in the pools list', 'pools: [p1]', /pools\[0\]: must be a mapping like .*, got "p1"$/],
    ['machines that are no list', `${pool}machines: { hostname: a.b }`, /machines: must be a list of mappings/],
    ['a playbook override for a misspelt action', 'pools: [{ name: p1, type: vm, arch: x, platform: y, playbooks: { relase: release.yml } }]', /pools\[0\]\.playbooks\.relase: unknown action \(one of provision, /],
  ])('refuses %s, naming the file, key and problem', (_name, yaml, message) => {
    const file = write(yaml);
    let error: unknown;
    try {
      loadConfig(file);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toContain(file);
    expect((error as Error).message).toMatch(message);
  });

  it.each([
    [{ DUFFY_LOG_LEVEL: 'verbose' }, /^DUFFY_LOG_LEVEL: must be one of fatal, error, warn, info, debug, trace, silent, got "verbose"$/],
    [{ DUFFY_CHECKPOINT_EVERY_EVENTS: 'abc' }, /^DUFFY_CHECKPOINT_EVERY_EVENTS: must be a positive whole number, got "abc"$/],
    [{ DUFFY_CHECKPOINT_EVERY_SECONDS: '0' }, /^DUFFY_CHECKPOINT_EVERY_SECONDS: must be a positive whole number/],
    [{ DUFFY_PORT: '99999' }, /^DUFFY_PORT: not a port number/],
    [{ DUFFY_PORT: '0x50' }, /^DUFFY_PORT: not a port number: 0x50$/],
    [{ DUFFY_PORT: '1e3' }, /^DUFFY_PORT: not a port number: 1e3$/],
    [{ DUFFY_PORT: ' 8080' }, /^DUFFY_PORT: not a port number/],
    [{ DUFFY_ADMIN_NAME: 'ad:min' }, /^DUFFY_ADMIN_NAME: must be 1-128 letters, digits, dot, dash or underscore, starting with a letter or digit, got "ad:min"$/],
    [{ DUFFY_ADMIN_NAME: 'ops\u001b[2J' }, /^DUFFY_ADMIN_NAME: must be/],
    [{ DUFFY_EVENTSTORE: 'http://x' }, /^DUFFY_EVENTSTORE: unsupported URL "http:\/\/x" \(expected kurrentdb:/],
    [{ DUFFY_READMODELS: 'redis://x' }, /^DUFFY_READMODELS: unsupported URL "redis:\/\/x" \(expected mongodb:/],
    // A misspelt scheme must not print the password into the start-up log.
    [{ DUFFY_READMODELS: 'mongdb://duffy:s3cret@db1:27017/duffy' }, /^DUFFY_READMODELS: unsupported URL "mongdb:\/\/duffy:\*\*\*@db1:27017\/duffy" \(expected mongodb:/],
    [{ DUFFY_EVENTSTORE: 'esdbx://admin:changeit@es1:2113' }, /^DUFFY_EVENTSTORE: unsupported URL "esdbx:\/\/admin:\*\*\*@es1:2113" /],
  ])('refuses the environment %p at start, naming the variable', (env, message) => {
    expect(() => loadSettings(env)).toThrow(ConfigError);
    expect(() => loadSettings(env)).toThrow(message);
  });

  it('names ten problems of a configuration at most, then how many more (16,500 bad host names printed one 897 KB line)', () => {
    const machines = Array.from({ length: 30 }, (_, i) => `  - { hostname: bad_name_${i}, pool: p1 }`);
    const message = (() => {
      try {
        loadConfig(write(`${pool}machines:\n${machines.join('\n')}\n`));
      } catch (err) {
        return (err as Error).message;
      }
      return '';
    })();
    expect(message.split('; ')).toHaveLength(11);
    expect(message).toMatch(/: machines\[0\]\.hostname: .*; and 20 more$/);
  });

  it('takes a large inventory that shares its hardware by YAML anchors, and still refuses a billion laughs', () => {
    const machines = Array.from({ length: 2000 }, (_, i) =>
      i === 0 ? '  - { hostname: m0.lab, pool: p1, hardware: &xeon { cpus: 32, ram_gb: 256, cpu_model: Xeon } }' : `  - { hostname: m${i}.lab, pool: p1, hardware: *xeon }`,
    );
    const c = loadConfig(write(`${pool}machines:\n${machines.join('\n')}\n`));
    expect(c.machines).toHaveLength(2000);
    expect(c.machines[1999].hardware).toEqual({ cpus: 32, ram_gb: 256, cpu_model: 'Xeon' });
    // Ten levels of ten aliases each: 10^10 nodes once expanded.
    const levels = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'];
    for (let i = 1; i <= 9; i++) levels.push(`a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(', ')}]`);
    expect(() => loadConfig(write(`${pool}${levels.join('\n')}\nbomb: [${Array(10).fill('*a9').join(', ')}]\n`))).toThrow(/resource exhaustion/);
  });

  it('refuses a number YAML reads as infinite or not a number, and an ssh port that is none, naming where', () => {
    const pool = 'pools: [{ name: p1, type: vm, arch: x, platform: y }]\n';
    expect(() => loadConfig(write(`${pool}machines: [{ hostname: a.lab, pool: p1, data: { weight: .inf } }]\n`))).toThrow(/: machines\[0\]\.data\.weight: not a finite number$/);
    expect(() => loadConfig(write(`${pool}machines: [{ hostname: a.lab, pool: p1, hardware: { cpus: .nan } }]\n`))).toThrow(/: machines\[0\]\.hardware\.cpus: not a finite number$/);
    // BSON cannot store such a name: every MongoDB read-model write holding the machine would fail.
    expect(() => loadConfig(write(`${pool}machines: [{ hostname: a.lab, pool: p1, data: { bmc: { "ip\\0x": 1 } } }]\n`))).toThrow(/: machines\[0\]\.data\.bmc\.ip\\u0000x: a member name must not hold a NUL character \(\\u0000\)$/);
    // Nor text holding a lone surrogate (YAML's "\ud800" escape): no character, Ansible's modules fail on it.
    expect(() => loadConfig(write(`${pool}machines: [{ hostname: a.lab, pool: p1, comment: "x\\udfff" }]\n`))).toThrow(/: machines\[0\]\.comment: not valid Unicode text: it holds a lone UTF-16 surrogate/);
    expect(() => loadConfig(write(`${pool}machines: [{ hostname: a.lab, pool: p1, data: { ssh_port: "22.0" } }]\n`))).toThrow(/: machines\[0\]\.data\.ssh_port must be a port number, 1-65535 \(not "22\.0"\)$/);
    expect(() => loadConfig(write(`${pool}machines: [{ hostname: a.lab, pool: p1, ipaddr: 10.0.0.1 }, { hostname: b.lab, pool: p1, ipaddr: 10.0.0.1, data: { ssh_port: "022" } }]\n`))).toThrow(/machines\[1\]\.ipaddr: 10\.0\.0\.1 is a\.lab's too/);
  });

  it('says once what is wrong with a value of the wrong type, not its range too', () => {
    const file = write("defaults: { node-quota: '2' }\npools: [{ name: p1, type: vm, arch: x, platform: y, fill-level: two }]\n");
    expect(() => loadConfig(file)).toThrow(`${file}: pools[0].fill-level: fill-level must be an integer number; defaults.node-quota: node-quota must be an integer number`);
  });

  it('refuses at start a pool playbook that is not there, naming the pool, action and file', () => {
    const file = write('pools: [{ name: p1, type: vm, arch: x, platform: y, playbooks: { release: playbooks/relase.yml } }]\n');
    expect(() => loadSettings({ DUFFY_CONFIG: file })).toThrow(new RegExp(`^${file}: pools\\[0\\]\\.playbooks\\.release: no such playbook /.*/ansible/playbooks/relase\\.yml$`));
    const folder = write('pools: [{ name: p1, type: vm, arch: x, platform: y, playbooks: { release: playbooks } }]\n');
    expect(() => loadSettings({ DUFFY_CONFIG: folder })).toThrow(new RegExp(`^${folder}: pools\\[0\\]\\.playbooks\\.release: /.*/ansible/playbooks is not a file \\(a playbook is a YAML file\\)$`));
    // The auditor reads the file for its defaults only, wherever the playbooks are.
    expect(loadConfig(file).pools[0].playbooks).toEqual({ release: 'playbooks/relase.yml' });
    const fixed = write('pools: [{ name: p1, type: vm, arch: x, platform: y, playbooks: { release: playbooks/release.yml } }]\n');
    expect(loadSettings({ DUFFY_CONFIG: fixed }).config.pools[0].playbooks).toEqual({ release: 'playbooks/release.yml' });
  });

  it('takes an empty DUFFY_PORT or DUFFY_DATA_DIR as unset (a compose file passing an unset variable): port 8080 and ./data, not a random port and the working directory', () => {
    const s = loadSettings({ DUFFY_PORT: '', DUFFY_DATA_DIR: '' });
    expect([s.port, s.dataDir]).toEqual([8080, resolve('./data')]);
    expect(loadSettings({ DUFFY_PORT: '9090' }).port).toBe(9090);
  });

  it('takes the production stores by their URL schemes, and unset (or empty) as the embedded ones', () => {
    const s = loadSettings({ DUFFY_EVENTSTORE: 'kurrentdb://kdb:2113?tls=false', DUFFY_READMODELS: 'mongodb+srv://m/duffy' });
    expect([s.eventStoreUrl, s.readModelsUrl]).toEqual(['kurrentdb://kdb:2113?tls=false', 'mongodb+srv://m/duffy']);
    expect(loadSettings({ DUFFY_EVENTSTORE: 'esdb+discover://a:2113' }).eventStoreUrl).toBe('esdb+discover://a:2113');
    const embedded = loadSettings({ DUFFY_EVENTSTORE: '', DUFFY_READMODELS: '' });
    expect([embedded.eventStoreUrl, embedded.readModelsUrl]).toEqual([undefined, undefined]);
  });

  it('takes a UUID admin key and valid settings', () => {
    expect(loadSettings({ DUFFY_ADMIN_KEY: '00000000-0000-4000-8000-00000000beef', DUFFY_LOG_LEVEL: 'warn', DUFFY_CHECKPOINT_EVERY_EVENTS: '25' }).adminKey).toBe('00000000-0000-4000-8000-00000000beef');
  });
});
