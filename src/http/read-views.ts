import { Injectable } from '@nestjs/common';
import { MACHINES, SESSIONS, TENANTS, tenantFromDoc } from '../../projections/entities.projection.js';
import { Ledger } from '../application/ledger.service.js';
import { type Machine, type Session, type World, emptyWorld } from '../domain/world.js';
import { ReadSide } from '../application/read-side.service.js';
import type { Doc } from '../application/ports/read-model.port.js';

type Filter = Record<string, string | number | boolean | null>;
/** Documents by id or by filter (several for sessions, read in turn). */
type Wanted = { sessions?: Filter | number | Filter[]; machines?: Filter | number; tenants?: Filter | number };
/** A stored document as the API shows it: without the id field the store keeps in it. */
export const strip = ({ __id, ...d }: Doc) => (void __id, d);

/**
 * Reads for the Duffy v3 and cico endpoints, from the `entities` read models (MongoDB or embedded).
 * Each read first waits until the read models hold everything this instance has written, so a client always
 * reads its own writes. The result is a World holding just what the answer needs, for the shared view code.
 */
@Injectable()
export class ReadViews {
  constructor(
    private readonly readSide: ReadSide,
    private readonly ledger: Ledger,
  ) {}

  /**
   * `sessions` may be several filters, read in the order given into one World (a later read of a session wins).
   * A session whose tenant is missing was read while another instance rebuilds a shared store: read again.
   */
  load(what: Wanted): Promise<World> {
    return this.readSide.readWhole(this.ledger.world.position, () => this.read(what), (world) => [...world.sessions.values()].every((s) => world.tenants.has(s.tenantId)));
  }

  private async read(what: Wanted): Promise<World> {
    const store = this.readSide.store;
    const world = emptyWorld();
    const many = async (collection: string, q: Filter | number) =>
      typeof q === 'number' ? [await store.get(collection, String(q))].filter((d): d is Doc => d !== undefined) : store.find(collection, q);
    for (const q of what.sessions === undefined ? [] : Array.isArray(what.sessions) ? what.sessions : [what.sessions]) {
      for (const d of await many(SESSIONS, q)) world.sessions.set(Number(d.id), strip(d) as unknown as Session);
    }
    if (what.machines !== undefined) for (const d of await many(MACHINES, what.machines)) world.machines.set(Number(d.id), strip(d) as unknown as Machine);
    if (what.tenants !== undefined) for (const d of await many(TENANTS, what.tenants)) world.tenants.set(Number(d.id), tenantFromDoc(strip(d)));
    // What the sessions refer to: their tenants and machines.
    const tenantIds = new Set<number>();
    const machineIds = new Set<number>();
    for (const s of world.sessions.values()) {
      tenantIds.add(s.tenantId);
      for (const id of s.machineIds) machineIds.add(id);
    }
    for (const [id, t] of await this.referred(TENANTS, tenantIds, world.tenants)) world.tenants.set(id, tenantFromDoc(t));
    for (const [id, m] of await this.referred(MACHINES, machineIds, world.machines)) world.machines.set(id, m as unknown as Machine);
    return world;
  }

  /**
   * The documents of `ids` not already in `have`, in one read of those ids (it read the whole collection past 64 of
   * them: 296 ms of the main thread for an admin's GET /sessions at 20,000 machines).
   */
  private async referred(collection: string, ids: ReadonlySet<number>, have: ReadonlyMap<number, unknown>): Promise<Map<number, Doc>> {
    const missing = [...ids].filter((id) => !have.has(id));
    const found = new Map<number, Doc>();
    if (missing.length === 0) return found;
    for (const d of await this.readSide.store.getMany(collection, missing.map(String))) found.set(Number(d.id), strip(d));
    return found;
  }
}
