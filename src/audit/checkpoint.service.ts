import { Inject, Injectable, Logger, type OnApplicationBootstrap, type OnApplicationShutdown } from '@nestjs/common';
import { chmodSync, closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { createPublicKey } from 'node:crypto';
import { type Settings, positiveIntEnv } from '../config/config.js';
import { EVENT_STORE, type EventStore, type RecordedEvent, type Subscription } from '../application/ports/event-store.port.js';
import { SETTINGS } from '../application/catalog.js';
import { Ledger } from '../application/ledger.service.js';
import { expectedAt } from '../domain/decide.js';
import { DUFFY_ACTOR } from '../domain/events.js';
import { CHECKPOINT_STREAM, type Checkpoint, eventLeaf, keyId, newSigningKey, privateKeyOf, signCheckpoint, signedWith } from './checkpoint.js';
import { CompactTree } from './merkle.js';
import { LegacyRun } from './chain.js';
import { syncToDisk } from '../adapters/eventstore/data-dir-lock.js';

export const KEY_FILE = 'audit-ed25519.pem';

/** The server's signing key: created on first start in the data dir, readable by its owner only. */
export function loadOrCreateKey(dataDir: string): { privateKey: KeyObject; publicKey: string; created: boolean } {
  const file = join(dataDir, KEY_FILE);
  let created = false;
  // Empty: a crash (power loss, kill -9) during the first start of a version that wrote the file in place; it never
  // held a key, and kept every later start failing on it.
  if (!existsSync(file) || statSync(file).size === 0) {
    writeKey(file, newSigningKey().privatePem);
    created = true;
  }
  chmodSync(file, 0o600);
  const privateKey = privateKeyOf(readFileSync(file, 'utf8'));
  return { privateKey, publicKey: createPublicKey(privateKey).export({ format: 'der', type: 'spki' }).toString('base64'), created };
}

/** Writes the key whole and durable under a private name, then renames it into place (the data dir's lock holder alone writes it). */
function writeKey(file: string, pem: string): void {
  const mine = `${file}.${process.pid}.tmp`;
  const fd = openSync(mine, 'w', 0o600);
  try {
    writeSync(fd, pem);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(mine, file);
  } catch (err) {
    rmSync(mine, { force: true });
    throw err;
  }
  syncToDisk(dirname(file));
}

/**
 * Signed tree heads of the ledger (RFC 9162): follows every event once, keeping the Merkle tree's frontier
 * (O(log n)), so a checkpoint costs a few hashes and a signature, never a read of the ledger. Every
 * DUFFY_CHECKPOINT_EVERY_EVENTS events (1000) or DUFFY_CHECKPOINT_EVERY_SECONDS (600) with new events, it appends
 * a CheckpointPublished to `audit-checkpoints`, so the ledger carries signed heads an auditor can check.
 */
@Injectable()
export class CheckpointService implements OnApplicationBootstrap, OnApplicationShutdown {
  private tree = new CompactTree();
  private lastPosition = 0n;
  private streamRevision = -1;
  private sincePublished = 0;
  /** The ledger's last position when this process started, once the Ledger has folded it: events up to it are history. */
  private historyEnd?: bigint;
  private publishing = false;
  /** The ledger's first events, while they are in the format of 2026-11-26 (their metadata not hashed). */
  private legacy?: LegacyRun = new LegacyRun();
  /** Such events that no checkpoint signs yet: only a checkpoint covers their metadata, so one is signed once caught up. */
  private legacyUnsigned = false;
  private subscription?: Subscription;
  private timer?: NodeJS.Timeout;
  private privateKey!: KeyObject;
  publicKey = '';
  readonly everyEvents = positiveIntEnv('DUFFY_CHECKPOINT_EVERY_EVENTS', 1000);
  readonly everyMs = positiveIntEnv('DUFFY_CHECKPOINT_EVERY_SECONDS', 600) * 1000;
  private readonly log = new Logger('Audit');

  constructor(
    @Inject(EVENT_STORE) private readonly store: EventStore,
    @Inject(SETTINGS) private readonly settings: Settings,
    private readonly ledger: Ledger,
  ) {}

  async onApplicationBootstrap(): Promise<void> {
    const key = loadOrCreateKey(this.settings.dataDir);
    this.privateKey = key.privateKey;
    this.publicKey = key.publicKey;
    // Before the Ledger folds the ledger (Bootstrap starts it after every module's bootstrap).
    this.ledger.checkpointKey = key.publicKey;
    this.log.log(`checkpoints signed with Ed25519 key ${keyId(key.publicKey)}${key.created ? ' (new)' : ''}, public key ${key.publicKey}`);
    await this.resumeFromLastCheckpoint();
    this.subscription = this.store.subscribeAll(this.lastPosition, (e) => this.add(e), (err) => this.log.error(`checkpoint subscription stopped: ${String(err)}`));
    void this.ledger.started.then((end) => {
      this.historyEnd = end;
      if (this.lastPosition >= end) this.publishIfDue();
    });
    this.timer = setInterval(() => void this.publish(), this.everyMs);
    this.timer.unref();
  }

  /**
   * The tree as the last checkpoint this server signed left it (its frontier), so a start hashes only the events
   * after it, not the whole history. One signed by another key (or none) is not ours to go on from: a forged
   * frontier would have us sign tree heads of a ledger that is not there. A frontier that does not give the
   * checkpoint's root is not used either: the tree is then built from the first event. Either way it is the tree
   * of the ledger as it is; an auditor recomputes it from the events.
   */
  private async resumeFromLastCheckpoint(): Promise<void> {
    const published = await this.store.readStream(CHECKPOINT_STREAM).catch(() => [] as RecordedEvent[]);
    const last = published.findLast((e) => signedWith(e.data as unknown as Checkpoint, this.publicKey));
    if (!last) return;
    const cp = last.data as Partial<Checkpoint> & { frontier?: unknown };
    const frontier = Array.isArray(cp.frontier) && cp.frontier.every((h) => typeof h === 'string' && /^[0-9a-f]{64}$/.test(h)) ? cp.frontier.map((h: string) => Buffer.from(h, 'hex')) : undefined;
    const tree = frontier && typeof cp.size === 'number' ? CompactTree.fromFrontier(cp.size, frontier) : undefined;
    // Not used: the subscription from 0 finds the stream's revision with everything else.
    if (!tree || tree.root().toString('hex') !== cp.rootHash || !/^[0-9]+$/.test(String(cp.lastPosition))) return;
    // Its own checkpoint where it no longer belongs (events before it deleted, the chains recomputed): going on from
    // it would sign heads of a history that is not there. The tree is then built from the ledger as it is.
    const count = await this.store.countUpTo?.(BigInt(cp.lastPosition!));
    if (count !== undefined && count !== cp.size) {
      this.log.warn(`the ledger holds ${count} events up to position ${cp.lastPosition}, where this server signed ${cp.size}: events before it were removed (\`duffy audit verify\` names them); hashing the whole ledger`);
      return;
    }
    this.tree = tree;
    this.lastPosition = BigInt(cp.lastPosition!);
    this.streamRevision = last.revision;
  }

  private add(e: RecordedEvent): void {
    if (this.legacy?.add(e)) this.legacyUnsigned = this.legacy.through > 0n;
    else this.legacy = undefined;
    if (e.stream === CHECKPOINT_STREAM) this.legacyUnsigned = false;
    this.tree.appendHash(eventLeaf(e));
    this.lastPosition = e.position;
    if (e.stream === CHECKPOINT_STREAM) {
      this.streamRevision = e.revision;
      // One already in the ledger: count from it (this instance's own reset the count when it signed).
      if (this.historyEnd === undefined || e.position <= this.historyEnd) this.sincePublished = 0;
    } else this.sincePublished += 1;
    // Not while catching up on history: a checkpoint of part of it, signed now, would make the rest (written
    // before now) read as back-dated to `audit verify`. Once caught up, one checkpoint covers all of it.
    if (this.historyEnd !== undefined && e.position >= this.historyEnd) this.publishIfDue();
  }

  private publishIfDue(): void {
    if (this.sincePublished >= this.everyEvents || this.legacyUnsigned) void this.publish();
  }

  /** The signed head of every event this instance has seen. */
  current(now = new Date(this.ledger.clock.nowMs())): Checkpoint {
    const head = { size: this.tree.size, lastPosition: this.lastPosition.toString(), rootHash: this.tree.root().toString('hex'), time: now.toISOString() };
    return signCheckpoint(head, this.privateKey);
  }

  /** Appends a signed checkpoint into the ledger when events came since the last one. */
  async publish(): Promise<void> {
    if (this.publishing || this.sincePublished === 0) return;
    this.publishing = true;
    try {
      const cp = this.current();
      // Not signed: what the next start goes on from (resumeFromLastCheckpoint checks it against the signed root).
      const frontier = this.tree.frontier().map((h) => h.toString('hex'));
      this.sincePublished = 0;
      this.legacyUnsigned = false;
      // A conflict means another instance published first: the next checkpoint covers these events too.
      await this.ledger.record(
        [{ stream: CHECKPOINT_STREAM, expected: expectedAt(this.streamRevision), events: [{ type: 'CheckpointPublished', data: { ...cp, frontier } }] }],
        { actor: DUFFY_ACTOR, at: cp.time },
      );
    } catch (err) {
      this.log.warn(`checkpoint not published: ${String(err)}`);
    } finally {
      this.publishing = false;
    }
  }

  async onApplicationShutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.subscription?.close();
  }
}
