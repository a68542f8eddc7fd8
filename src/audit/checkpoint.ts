import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify as verifySignature, type KeyObject } from 'node:crypto';
import type { RecordedEvent } from '../application/ports/event-store.port.js';
import { canonical, takeCanonical } from './chain.js';
import type { LedgerDigest } from './digest.js';
import { CompactTree, consistencyProof, leafHash, rootOf, verifyConsistency } from './merkle.js';

/**
 * Checkpoints in the transparency-log model (RFC 9162, Trillian): a Merkle tree over every event in global position
 * order; a checkpoint is its head. An auditor who kept one can later prove today's ledger extends it.
 */
export interface Checkpoint {
  /** Number of leaves (events). */
  size: number;
  /** Global position of the last event covered ("0" for an empty ledger). */
  lastPosition: string;
  /** RFC 9162 MTH, hex. */
  rootHash: string;
  time: string;
  /** Ed25519 over signedPart(), base64; with the signer's public key (SPKI DER, base64). */
  signature?: string;
  publicKey?: string;
  /**
   * The auditor's own copy only: the first 4 bytes of every leaf hash (base64), to name the first leaf that differs.
   * The root decides; these only point.
   */
  leafPrints?: string;
}

export const CHECKPOINT_STREAM = 'audit-checkpoints';
const PRINT = 4;
const BACKDATE_SLACK_MS = 60_000;

/** The canonical bytes of one event: everything it says, where it stands. */
export function leafBytes(e: RecordedEvent): Buffer {
  if (e.data === undefined || e.metadata === undefined) {
    return Buffer.from(canonical({ position: e.position.toString(), stream: e.stream, revision: e.revision, type: e.type, data: e.data, metadata: e.metadata }), 'utf8');
  }
  // The same bytes, keys in canonical order, with the canonical data and metadata the chain link already made.
  const canonicalEvent = takeCanonical(e.data, e.metadata);
  const text = `{"data":${canonicalEvent.data},"metadata":${canonicalEvent.metadata},"position":${canonical(e.position.toString())},"revision":${canonical(e.revision)},"stream":${canonical(e.stream)},"type":${canonical(e.type)}}`;
  return Buffer.from(text, 'utf8');
}

export const eventLeaf = (e: RecordedEvent): Buffer => leafHash(leafBytes(e));

export function signedPart(cp: Pick<Checkpoint, 'size' | 'lastPosition' | 'rootHash' | 'time'>): Buffer {
  return Buffer.from(canonical({ size: cp.size, lastPosition: cp.lastPosition, rootHash: cp.rootHash, time: cp.time }), 'utf8');
}

/** The auditor's checkpoint of a whole ledger, with leaf prints. */
export function checkpointOf(events: LedgerDigest, time: Date): Checkpoint {
  const prints = Buffer.alloc(events.length * PRINT);
  for (let i = 0; i < events.length; i++) events.leaf(i).copy(prints, i * PRINT, 0, PRINT);
  return {
    size: events.length,
    lastPosition: events.lastPosition.toString(),
    rootHash: rootOf(events.leaves).toString('hex'),
    time: time.toISOString(),
    leafPrints: prints.toString('base64'),
  };
}

export const keyId = (publicKey: string) => `sha256:${createHash('sha256').update(Buffer.from(publicKey, 'base64')).digest('hex').slice(0, 16)}`;

export function signCheckpoint(cp: Checkpoint, privateKey: KeyObject): Checkpoint {
  const publicKey = createPublicKey(privateKey).export({ format: 'der', type: 'spki' }).toString('base64');
  return { ...cp, signature: sign(null, signedPart(cp), privateKey).toString('base64'), publicKey };
}

/** True when unsigned; false when the signature does not verify. */
export function signatureHolds(cp: Checkpoint): boolean {
  if (cp.signature === undefined && cp.publicKey === undefined) return true;
  if (!cp.signature || !cp.publicKey) return false;
  try {
    const key = createPublicKey({ key: Buffer.from(cp.publicKey, 'base64'), format: 'der', type: 'spki' });
    return verifySignature(null, signedPart(cp), key, Buffer.from(cp.signature, 'base64'));
  } catch {
    return false;
  }
}

/** Signed, validly, with this key (a server's own): a checkpoint signed with another key, or none, is not. */
export const signedWith = (cp: Checkpoint, publicKey: string | undefined): boolean => publicKey !== undefined && cp.publicKey === publicKey && signatureHolds(cp);

export function newSigningKey(): { privatePem: string; publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicKey: publicKey.export({ format: 'der', type: 'spki' }).toString('base64'),
  };
}

export const privateKeyOf = (pem: string): KeyObject => createPrivateKey(pem);

/**
 * The first of events[from, to) that claims a time more than a minute before `taken`, when a checkpoint saw only
 * the first `from`: a forged, back-dated fact (the minute is for commands in flight when the checkpoint was taken).
 * Both times an event carries: `who-had` and the replay read the data's.
 */
const backdated = (events: LedgerDigest, from: number, to: number, taken: number) => events.firstClaimBefore(from, to, taken - BACKDATE_SLACK_MS);

export interface CheckpointVerdict {
  ok: boolean;
  /** What failed and where, or what held. */
  message: string;
  /** The first leaf that differs, when it can be named. */
  leafIndex?: number;
  position?: string;
}

/**
 * Does this ledger extend the checkpoint? Rebuilds the tree, checks the checkpoint's root against the ledger's first
 * `size` leaves and the RFC 9162 consistency proof from it to the whole ledger.
 */
export function checkExtends(cp: Checkpoint, events: LedgerDigest): CheckpointVerdict {
  if (!signatureHolds(cp)) return { ok: false, message: 'the checkpoint signature does not verify: the checkpoint file was altered or forged' };
  const leaves = events.leaves;
  const at = (i: number) => ({ leafIndex: i, position: i < events.length ? events.position(i).toString() : undefined });
  const prints = cp.leafPrints ? Buffer.from(cp.leafPrints, 'base64') : undefined;
  // Every leaf that differs: the first one may be a checkpoint signed again, not the fact that was changed.
  const diffs = (): number[] => {
    const out: number[] = [];
    if (!prints) return out;
    for (let i = 0; i < Math.min(cp.size, leaves.length); i++) {
      if (!events.leaf(i).subarray(0, PRINT).equals(prints.subarray(i * PRINT, (i + 1) * PRINT))) out.push(i);
    }
    return out;
  };
  const firstDiff = (): number | undefined => diffs()[0];
  if (leaves.length < cp.size) {
    const d = firstDiff();
    const where = d === undefined ? '' : `; first leaf that differs: ${d} (position ${events.position(d)})`;
    return { ok: false, message: `ledger shorter than checkpoint: ${leaves.length} events, the checkpoint saw ${cp.size}${where}`, ...(d === undefined ? {} : at(d)) };
  }
  const oldRoot = Buffer.from(cp.rootHash, 'hex');
  if (!rootOf(leaves, 0, cp.size).equals(oldRoot)) {
    const [d, ...more] = diffs();
    if (d === undefined) return { ok: false, message: `the first ${cp.size} events are not the ones the checkpoint saw (root hash differs)` };
    const name = (i: number) => `${i} (position ${events.position(i)}, ${events.stream(i)}@${events.revision(i)})`;
    const also = more.length === 0 ? '' : `; also leaves ${more.slice(0, 5).map(name).join(', ')}${more.length > 5 ? ` and ${more.length - 5} more` : ''}`;
    return { ok: false, message: `leaf ${name(d)} differs from the checkpoint: the covered prefix was changed${also}`, ...at(d) };
  }
  const late = backdated(events, cp.size, events.length, Date.parse(cp.time));
  if (late) {
    const i = late.index;
    return { ok: false, message: `event at position ${events.position(i)} (${events.type(i)}) was appended after the checkpoint of ${cp.time} but claims ${late.claimed}`, ...at(i) };
  }
  const newRoot = rootOf(leaves);
  if (!verifyConsistency(cp.size, leaves.length, oldRoot, newRoot, consistencyProof(leaves, cp.size))) {
    return { ok: false, message: 'consistency proof does not verify' };
  }
  return { ok: true, message: `the ledger (${leaves.length} events, root ${newRoot.toString('hex')}) extends the checkpoint of ${cp.size} events at ${cp.time}` };
}

/**
 * Signed checkpoints the server published into the ledger: each must be signed and match the ledger's prefix of its
 * size. `pinned`: the key of the auditor's own checkpoint (a server-signed one) and its size; a checkpoint signed by
 * another key is then refused where nothing that key signed vouches for it (a key made up to sign a rewrite), and
 * taken where it does (signed before the server's key changed, inside a prefix the pinned key signed).
 */
export function checkPublished(events: LedgerDigest, pinned?: { publicKey: string; size: number }): { checked: number; keys: Set<string>; problems: Array<{ position: bigint; problem: string }>; covered: number } {
  const wanted = new Set<number>();
  for (const c of events.checkpoints) wanted.add(Number(c.data.size));
  const roots = new Map<number, string>();
  const tree = new CompactTree();
  if (wanted.has(0)) roots.set(0, tree.root().toString('hex'));
  for (let i = 0; i < events.length; i++) {
    tree.appendHash(events.leaf(i));
    if (wanted.has(tree.size)) roots.set(tree.size, tree.root().toString('hex'));
  }
  const matches = (cp: Checkpoint, index: number) => cp.size <= index && roots.get(cp.size) === cp.rootHash;
  // The events the pinned key vouches for: its checkpoint's, and those of its checkpoints in the ledger that match it.
  let vouched = pinned?.size ?? 0;
  for (const { index, data } of events.checkpoints) {
    const cp = data as unknown as Checkpoint;
    if (pinned && cp.publicKey === pinned.publicKey && cp.signature && signatureHolds(cp) && matches(cp, index)) vouched = Math.max(vouched, cp.size);
  }
  const problems: Array<{ position: bigint; problem: string }> = [];
  const keys = new Set<string>();
  const sound: Checkpoint[] = [];
  const differs: Array<{ position: bigint; size: number; index: number }> = [];
  let checked = 0;
  for (const { index, position, data } of events.checkpoints) {
    checked += 1;
    const cp = data as unknown as Checkpoint;
    if (!cp.signature || !signatureHolds(cp)) problems.push({ position, problem: 'published checkpoint without a valid signature' });
    else if (pinned && cp.publicKey !== pinned.publicKey && index >= vouched) {
      problems.push({ position, problem: `published checkpoint signed by another key (${keyId(cp.publicKey!)}) after the ${vouched} events the key you pinned (${keyId(pinned.publicKey)}) signed: made up to sign a rewrite, or the server's key changed since (then verify with a checkpoint it signs now)` });
    } else if (!matches(cp, index)) differs.push({ position, size: cp.size, index });
    else sound.push(cp);
    if (cp.publicKey) keys.add(keyId(cp.publicKey));
  }
  // Where: past the largest prefix a sound checkpoint vouches for (with recomputed chains, nothing else points there).
  for (const d of differs) {
    if (d.size > d.index) {
      problems.push({ position: d.position, problem: `the server signed ${d.size} events before this checkpoint, the ledger has ${d.index}: events before it were removed` });
      continue;
    }
    const held = sound.reduce((most, cp) => (cp.size < d.size && cp.size > most ? cp.size : most), 0);
    const range = d.size === 0 ? '' : `; ${held ? `the first ${held} are: ` : ''}an event at positions ${events.position(held)}..${events.position(d.size - 1)} was changed, inserted, removed or moved`;
    problems.push({ position: d.position, problem: `the first ${d.size} events are not the ones the server signed${range}` });
  }
  problems.sort((a, b) => (a.position < b.position ? -1 : a.position > b.position ? 1 : 0));
  // Each signed checkpoint also dates what came after it, as an auditor's own does: no later event claims an earlier time.
  sound.sort((a, b) => a.size - b.size);
  let taken = -Infinity;
  let dating: Checkpoint | undefined;
  sound.forEach((cp, k) => {
    if (Date.parse(cp.time) > taken) [taken, dating] = [Date.parse(cp.time), cp];
    const late = backdated(events, cp.size, sound[k + 1]?.size ?? events.length, taken);
    // The checkpoint that dates it, and its key: one signed by a key made up for it dates genuine events too (pin the
    // server's with --checkpoint).
    if (late && dating) problems.push({ position: events.position(late.index), problem: `${events.type(late.index)} was appended after a checkpoint of ${dating.size} events signed at ${dating.time} by ${keyId(dating.publicKey!)}, but claims ${late.claimed}: back-dated` });
  });
  // The events the sound ones vouch for: past them, only the writer's head record (or an auditor's checkpoint) guards.
  return { checked, keys, problems, covered: sound.at(-1)?.size ?? 0 };
}
