import { hash } from 'node:crypto';

/**
 * RFC 9162 (Certificate Transparency 2.0) Merkle tree: section 2.1.1 tree head, 2.1.4 consistency proofs.
 * Hashes are 32-byte Buffers. Pure, no I/O.
 */
// One-shot hashes of one buffer: a Hash object per call (two or so per event appended) cost more than the hashing.
const sha256 = (bytes: Buffer): Buffer => hash('sha256', bytes, 'buffer') as unknown as Buffer;
const LEAF = 0;
const NODE = 1;

export const EMPTY_ROOT = sha256(Buffer.alloc(0));
export const leafHash = (leaf: Buffer | string): Buffer => {
  const size = typeof leaf === 'string' ? Buffer.byteLength(leaf, 'utf8') : leaf.length;
  const bytes = Buffer.allocUnsafe(1 + size);
  bytes[0] = LEAF;
  if (typeof leaf === 'string') bytes.write(leaf, 1, 'utf8');
  else leaf.copy(bytes, 1);
  return sha256(bytes);
};
export const nodeHash = (left: Buffer, right: Buffer): Buffer => {
  const bytes = Buffer.allocUnsafe(1 + left.length + right.length);
  bytes[0] = NODE;
  left.copy(bytes, 1);
  right.copy(bytes, 1 + left.length);
  return sha256(bytes);
};

/** Leaf hashes in order: an array, or anything that hands out the i-th (an audit's columns, see digest.ts). */
export interface Leaves {
  readonly length: number;
  at(i: number): Buffer | undefined;
}

/** The largest power of two strictly less than n (n > 1). */
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** MTH over leaf hashes[lo, hi). */
export function rootOf(hashes: Leaves, lo = 0, hi = hashes.length): Buffer {
  const n = hi - lo;
  if (n === 0) return EMPTY_ROOT;
  if (n === 1) return hashes.at(lo)!;
  const k = split(n);
  return nodeHash(rootOf(hashes, lo, lo + k), rootOf(hashes, lo + k, hi));
}

/** PROOF(m, D[n]) of RFC 9162 2.1.4.1, over leaf hashes: shows the tree of the first m leaves is a prefix of this one. */
export function consistencyProof(hashes: Leaves, m: number, n = hashes.length): Buffer[] {
  if (m < 0 || m > n || n > hashes.length) throw new RangeError(`no consistency proof from ${m} to ${n} over ${hashes.length} leaves`);
  if (m === 0 || m === n) return [];
  const sub = (m: number, lo: number, hi: number, whole: boolean): Buffer[] => {
    const n = hi - lo;
    if (m === n) return whole ? [] : [rootOf(hashes, lo, hi)];
    const k = split(n);
    if (m <= k) return [...sub(m, lo, lo + k, whole), rootOf(hashes, lo + k, hi)];
    return [...sub(m - k, lo + k, hi, false), rootOf(hashes, lo, lo + k)];
  };
  return sub(m, 0, n, true);
}

/** RFC 9162 2.1.4.2: does `proof` show that the tree (second, secondRoot) extends (first, firstRoot)? */
export function verifyConsistency(first: number, second: number, firstRoot: Buffer, secondRoot: Buffer, proof: readonly Buffer[]): boolean {
  if (first < 0 || second < first) return false;
  if (first === second) return proof.length === 0 && firstRoot.equals(secondRoot);
  // The empty tree is a prefix of every tree; nothing to prove.
  if (first === 0) return proof.length === 0;
  if (proof.length === 0) return false;
  const path = (first & (first - 1)) === 0 ? [firstRoot, ...proof] : [...proof];
  let fn = first - 1;
  let sn = second - 1;
  while (fn & 1) {
    fn >>= 1;
    sn >>= 1;
  }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn & 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (!(fn & 1)) {
        while (!(fn & 1) && fn !== 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  return fr.equals(firstRoot) && sr.equals(secondRoot) && sn === 0;
}

/**
 * The tree kept in O(log n): the roots of the perfect subtrees the leaves so far decompose into, largest first
 * (RFC 9162's tree as Trillian's compact range). Append is amortised O(1), the root O(log n).
 */
export class CompactTree {
  private readonly sizes: number[] = [];
  private readonly roots: Buffer[] = [];
  size = 0;

  append(leaf: Buffer | string): void {
    this.appendHash(leafHash(leaf));
  }

  appendHash(hash: Buffer): void {
    let size = 1;
    let h = hash;
    while (this.sizes.length > 0 && this.sizes[this.sizes.length - 1] === size) {
      h = nodeHash(this.roots.pop()!, h);
      size += this.sizes.pop()!;
    }
    this.sizes.push(size);
    this.roots.push(h);
    this.size += 1;
  }

  /** The subtree roots, largest first: with `size`, all a tree needs to go on (see fromFrontier). */
  frontier(): Buffer[] {
    return [...this.roots];
  }

  /**
   * A tree of `size` leaves from its frontier; undefined unless there is one root per 1-bit of `size` (the perfect
   * subtrees are the powers of two that sum to it, largest first).
   */
  static fromFrontier(size: number, roots: readonly Buffer[]): CompactTree | undefined {
    if (!Number.isSafeInteger(size) || size < 0) return undefined;
    const sizes: number[] = [];
    for (let bit = 2 ** Math.floor(Math.log2(Math.max(size, 1))); bit >= 1; bit /= 2) if (Math.floor(size / bit) % 2 === 1) sizes.push(bit);
    if (sizes.length !== roots.length || roots.some((r) => r.length !== 32)) return undefined;
    const tree = new CompactTree();
    tree.sizes.push(...sizes);
    tree.roots.push(...roots);
    tree.size = size;
    return tree;
  }

  root(): Buffer {
    if (this.roots.length === 0) return EMPTY_ROOT;
    let r = this.roots[this.roots.length - 1];
    for (let i = this.roots.length - 2; i >= 0; i--) r = nodeHash(this.roots[i], r);
    return r;
  }
}
