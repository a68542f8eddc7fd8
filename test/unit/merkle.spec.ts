import { describe, expect, it } from '@jest/globals';
import { createHash } from 'node:crypto';
import { CompactTree, EMPTY_ROOT, consistencyProof, leafHash, nodeHash, rootOf, verifyConsistency } from '../../src/audit/merkle.js';

// RFC 6962's reference test vectors (the same hashing as RFC 9162): leaves of the Go/C++ test suites.
const LEAVES = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map((h) => Buffer.from(h, 'hex'));
const ROOTS = [
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];
const hashes = (n: number) => LEAVES.slice(0, n).map((l) => leafHash(l));
const hex = (b: Buffer) => b.toString('hex');
const random = (seed: number) => () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed / 2 ** 31);

describe('RFC 9162 Merkle tree', () => {
  it('hashes leaves and nodes with the 0x00 / 0x01 prefixes', () => {
    expect(hex(leafHash(Buffer.alloc(0)))).toBe(createHash('sha256').update(Buffer.from([0])).digest('hex'));
    expect(hex(nodeHash(Buffer.alloc(32, 1), Buffer.alloc(32, 2)))).toBe(
      createHash('sha256').update(Buffer.concat([Buffer.from([1]), Buffer.alloc(32, 1), Buffer.alloc(32, 2)])).digest('hex'),
    );
    expect(hex(EMPTY_ROOT)).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });

  it('gives the reference roots for 1 to 8 leaves, in full and incrementally', () => {
    const tree = new CompactTree();
    for (let n = 1; n <= 8; n++) {
      expect(hex(rootOf(hashes(n)))).toBe(ROOTS[n - 1]);
      tree.append(LEAVES[n - 1]);
      expect(hex(tree.root())).toBe(ROOTS[n - 1]);
      expect(tree.size).toBe(n);
    }
  });

  it('goes on from its frontier as the same tree (any size), and takes no frontier that does not fit its size', () => {
    const leaves = Array.from({ length: 70 }, (_, i) => leafHash(Buffer.from([i])));
    for (let size = 0; size <= 64; size++) {
      const whole = new CompactTree();
      leaves.slice(0, size).forEach((h) => whole.appendHash(h));
      const resumed = CompactTree.fromFrontier(size, whole.frontier())!;
      expect(hex(resumed.root())).toBe(hex(whole.root()));
      for (const h of leaves.slice(size, size + 6)) {
        whole.appendHash(h);
        resumed.appendHash(h);
        expect({ size, root: hex(resumed.root()), n: resumed.size }).toEqual({ size, root: hex(whole.root()), n: whole.size });
      }
    }
    const five = new CompactTree();
    leaves.slice(0, 5).forEach((h) => five.appendHash(h));
    expect(CompactTree.fromFrontier(7, five.frontier())).toBeUndefined();
    expect(CompactTree.fromFrontier(5, [...five.frontier(), Buffer.alloc(32)])).toBeUndefined();
    expect(CompactTree.fromFrontier(-1, [])).toBeUndefined();
  });

  it('gives the reference consistency proofs (RFC 6962 test shapes 1->1, 1->8, 6->8, 2->5)', () => {
    const all = hashes(8);
    expect(consistencyProof(all, 1, 1)).toEqual([]);
    expect(consistencyProof(all, 1, 8).map(hex)).toEqual([
      '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
    ]);
    expect(consistencyProof(all, 6, 8).map(hex)).toEqual([
      '0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a',
      'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    ]);
    expect(consistencyProof(all, 2, 5).map(hex)).toEqual([
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    ]);
  });

  it('verifies every proof between every pair of sizes up to 8, and rejects altered ones', () => {
    const all = hashes(8);
    for (let m = 0; m <= 8; m++) {
      for (let n = m; n <= 8; n++) {
        const proof = consistencyProof(all, m, n);
        const r1 = rootOf(all, 0, m);
        const r2 = rootOf(all, 0, n);
        expect(verifyConsistency(m, n, r1, r2, proof)).toBe(true);
        if (m > 0 && m < n) {
          expect(verifyConsistency(m, n, r1, nodeHash(r2, r2), proof)).toBe(false);
          expect(verifyConsistency(m, n, nodeHash(r1, r1), r2, proof)).toBe(false);
          const bent = proof.map((p, i) => (i === proof.length - 1 ? leafHash(p) : p));
          expect(verifyConsistency(m, n, r1, r2, bent)).toBe(false);
          expect(verifyConsistency(m, n, r1, r2, proof.slice(0, -1))).toBe(false);
        }
      }
    }
  });

  it('random sizes: incremental root equals MTH, proofs verify, a changed leaf in the prefix fails them', () => {
    const rnd = random(7);
    for (let round = 0; round < 60; round++) {
      const n = 1 + Math.floor(rnd() * 700);
      const m = 1 + Math.floor(rnd() * n);
      const leaves = Array.from({ length: n }, (_, i) => leafHash(`event ${i} ${round}`));
      const tree = new CompactTree();
      leaves.forEach((h) => tree.appendHash(h));
      expect(tree.root().equals(rootOf(leaves))).toBe(true);
      const proof = consistencyProof(leaves, m, n);
      expect(proof.length).toBeLessThanOrEqual(2 * Math.ceil(Math.log2(n)) + 1);
      expect(verifyConsistency(m, n, rootOf(leaves, 0, m), rootOf(leaves), proof)).toBe(true);
      const changed = [...leaves];
      changed[Math.floor(rnd() * m)] = leafHash('forged');
      expect(verifyConsistency(m, n, rootOf(leaves, 0, m), rootOf(changed), consistencyProof(changed, m, n))).toBe(false);
    }
  });
});
