import type { DocChange } from '../../application/ports/read-model.port.js';

/** The filter values `ReadModelStore.find` takes. */
export type FilterValue = string | number | boolean | null;

/**
 * Marks the changes to apply: of several changes to one document from the same event (same position) only the last
 * counts. Applying each would keep the first, since the rest are "at or below" the position it just wrote.
 * Both adapters follow this rule.
 */
export function latestPerDocAndEvent(changes: DocChange[]): boolean[] {
  const keep = new Array<boolean>(changes.length).fill(true);
  // Per collection, then id: no key string built per change.
  const last = new Map<string, Map<string, number>>();
  for (let i = 0; i < changes.length; i++) {
    const { collection, id } = changes[i];
    let ids = last.get(collection);
    if (!ids) last.set(collection, (ids = new Map()));
    const prev = ids.get(id);
    if (prev !== undefined && changes[prev].position === changes[i].position) keep[prev] = false;
    ids.set(id, i);
  }
  return keep;
}

/** Top-level field names only: MongoDB would read a dot as a path and `$` as an operator. */
export function filterEntries(filter: Record<string, FilterValue>): Array<[string, FilterValue]> {
  const entries = Object.entries(filter);
  for (const [field] of entries) {
    if (!field || field.startsWith('$') || /[."]/.test(field)) throw new Error(`read models: unsupported filter field '${field}'`);
  }
  return entries;
}
