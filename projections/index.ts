import { entities } from './entities.projection.js';
import { fairness } from './fairness.projection.js';
import { machineStress } from './machine-stress.projection.js';
import type { Projection } from './projection.js';
import { tenantAllocations } from './tenant-allocations.projection.js';

export type { Doc, Mark, Projection } from './projection.js';
export const PROJECTIONS: readonly Projection[] = [entities, tenantAllocations, machineStress, fairness];
