/**
 * The last revision and chain hash of every stream the Ledger may append to: the predecessor of the next link.
 * Hashes live as bytes in one growing arena, not as a string and an object per stream: a server folding millions of
 * events updates a head per event, and per-event objects that outlive a scavenge fill the old space with garbage.
 */
export class StreamHeads {
  private readonly slots = new Map<string, number>();
  private readonly free: number[] = [];
  private revisions = new Int32Array(1024);
  private hashes = Buffer.alloc(1024 * 32);
  /** 1 where the stream's last event carried no hash (ledgers older than the chain). */
  private unhashed = new Uint8Array(1024);

  get size(): number {
    return this.slots.size;
  }

  streams(): IterableIterator<string> {
    return this.slots.keys();
  }

  has(stream: string): boolean {
    return this.slots.has(stream);
  }

  revision(stream: string): number | undefined {
    const slot = this.slots.get(stream);
    return slot === undefined ? undefined : this.revisions[slot];
  }

  /** The hash of the stream's event at `revision`, if that is its head here. */
  hashAt(stream: string, revision: number): string | undefined {
    const slot = this.slots.get(stream);
    if (slot === undefined || this.revisions[slot] !== revision) return undefined;
    return this.unhashed[slot] ? '' : this.hashes.toString('hex', slot * 32, slot * 32 + 32);
  }

  set(stream: string, revision: number, hash: string | undefined): void {
    let slot = this.slots.get(stream);
    if (slot === undefined) {
      slot = this.free.pop() ?? this.slots.size;
      if (slot >= this.revisions.length) this.grow();
      this.slots.set(stream, slot);
    }
    this.revisions[slot] = revision;
    const hashed = typeof hash === 'string' && /^[0-9a-f]{64}$/.test(hash);
    this.unhashed[slot] = hashed ? 0 : 1;
    if (hashed) this.hashes.write(hash, slot * 32, 32, 'hex');
  }

  delete(stream: string): void {
    const slot = this.slots.get(stream);
    if (slot === undefined) return;
    this.slots.delete(stream);
    this.free.push(slot);
  }

  private grow(): void {
    const size = this.revisions.length * 2;
    const revisions = new Int32Array(size);
    revisions.set(this.revisions);
    const hashes = Buffer.alloc(size * 32);
    this.hashes.copy(hashes);
    const unhashed = new Uint8Array(size);
    unhashed.set(this.unhashed);
    [this.revisions, this.hashes, this.unhashed] = [revisions, hashes, unhashed];
  }
}
