import { existsSync, mkdirSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
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

/** Every file under `root` (not directories), relative to it, sorted; none if `root` is missing. */
export function filesUnder(root: string): string[] {
  if (!existsSync(root)) return [];
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else out.push(relative(root, join(d, e.name)));
    }
  };
  walk(root);
  return out.sort();
}

/** How many files and bytes are under `root`: what a collection left on Duffy's disk. */
export function diskUse(root: string): { files: number; bytes: number } {
  const files = filesUnder(root);
  return { files: files.length, bytes: files.reduce((n, f) => n + statSync(join(root, f)).size, 0) };
}
