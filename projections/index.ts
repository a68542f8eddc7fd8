import { entities } from './entities.projection.js';
import { fairness } from './fairness.projection.js';
import { machineStress } from './machine-stress.projection.js';
import type { Projection } from './projection.js';

export type { Doc, Mark, Projection } from './projection.js';
export const PROJECTIONS: readonly Projection[] = [entities, machineStress, fairness];

/**
 * Projections that were dropped, with their collections: a store written by an older Duffy still holds their
 * documents and checkpoint, which nothing reads or updates any more. Removed at start.
 */
export const RETIRED_PROJECTIONS: ReadonlyArray<{ name: string; collections: string[] }> = [
  // What each tenant holds, by session: the `entities` sessions show it, and no route read it.
  { name: 'tenant-allocations', collections: ['tenant_sessions'] },
];
