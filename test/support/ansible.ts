import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';

/** Writes a configuration for the real-Ansible suites: local driver pools, machines unused unless told. */
export function ansibleConfig(pools: Array<Record<string, unknown>>, machines: Array<Record<string, unknown>>, defaults: Record<string, number> = {}, extra: Record<string, unknown> = {}): string {
  const file = join(mkdtempSync(join(tmpdir(), 'duffy-cfg-')), 'ansible.yaml');
  writeFileSync(
    file,
    stringify({
      defaults: { 'node-quota': 10, 'session-lifetime': 3600, 'session-lifetime-max': 7200, ...defaults },
      pools: pools.map((p) => ({ type: 'baremetal', arch: 'x86_64', platform: 'intel', driver: 'local', 'fill-level': 0, contextualize: true, 'playbook-timeout': 120, 'handover-timeout': 240, ...p })),
      machines: machines.map((m) => ({ state: 'unused', ...m })),
      ...extra,
    }),
  );
  return file;
}

/** The local driver's failure injection: `<data>/machines/<host>/inject/<kind>-<action>`. */
export function inject(dataDir: string, hostname: string, kind: 'fail' | 'hang', action: string, message = 'injected by the test'): void {
  const dir = join(dataDir, 'machines', hostname, 'inject');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${kind}-${action}`), message);
}
