import { writeFileSync } from 'node:fs';
import { stringify } from 'yaml';

/**
 * A generated inventory for scale runs (the P8 bench, the 20,000-machine e2e test): `machines` ready machines
 * spread round-robin over four pools (intel and amd, baremetal and VM), no playbook on any path. Writes it to `file`.
 */
export function writeScaleInventory(file: string, machines: number, hostname: (i: number) => string, extra: Record<string, unknown> = {}): string {
  const pools = ['metal-a', 'metal-b', 'vm-a', 'vm-b'].map((name, i) => ({
    name,
    type: name.startsWith('metal') ? 'baremetal' : 'vm',
    arch: 'x86_64',
    platform: i % 2 ? 'amd' : 'intel',
    driver: 'local',
    'release-policy': 'reuse',
    contextualize: false,
    'collect-artifacts': false,
    'fill-level': 0,
  }));
  const list = Array.from({ length: machines }, (_, i) => ({ hostname: hostname(i), pool: pools[i % pools.length].name, state: 'ready' }));
  writeFileSync(file, stringify({ ...extra, pools, machines: list }));
  return file;
}
