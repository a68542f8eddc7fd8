import { type Hardware, type HardwareRequirement, unstorableAt } from './events.js';

/** The measures requests compare with `min_*`: a machine with `cpus: "many"` would silently never match. */
const MEASURES = ['cpus', 'ram_gb', 'disk_gb'];

/**
 * Hardware is flat: each value a string, a number or a boolean; `cpus`, `ram_gb`, `disk_gb` non-negative numbers
 * and `cpu_model` a string; no number JSON cannot carry (an event holding one would fail its own hash once stored).
 * Null when fine, else what is wrong.
 */
export function hardwareProblem(h: unknown): string | null {
  if (typeof h !== 'object' || h === null || Array.isArray(h)) return 'hardware must be an object';
  for (const [k, v] of Object.entries(h)) {
    if (!['string', 'number', 'boolean'].includes(typeof v)) return `hardware.${k} must be a string, a number or a boolean`;
    if (MEASURES.includes(k) && !(typeof v === 'number' && Number.isFinite(v) && v >= 0)) return `hardware.${k} must be a number, at least 0`;
    if (k === 'cpu_model' && typeof v !== 'string') return 'hardware.cpu_model must be a string';
  }
  const unstorable = unstorableAt(h, 'hardware');
  return unstorable === null ? null : `${unstorable.at}: ${unstorable.problem}`;
}

/** The requirements a machine's hardware does not meet, in the spec's words (`min_ram_gb 128`); empty when it qualifies. */
export function unmet(hardware: Hardware, req: HardwareRequirement | undefined): string[] {
  if (!req) return [];
  const out: string[] = [];
  const atLeast = (key: string, min: number | undefined, name: string) => {
    if (min !== undefined && !(Number(hardware[key]) >= min)) out.push(`${name} ${min}`);
  };
  atLeast('cpus', req.min_cpus, 'min_cpus');
  atLeast('ram_gb', req.min_ram_gb, 'min_ram_gb');
  atLeast('disk_gb', req.min_disk_gb, 'min_disk_gb');
  if (req.cpu_model !== undefined && !String(hardware.cpu_model ?? '').toLowerCase().includes(req.cpu_model.toLowerCase())) {
    out.push(`cpu_model ${JSON.stringify(req.cpu_model)}`);
  }
  return out;
}
