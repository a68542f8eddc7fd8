/**
 * A set kept in order by a comparator: insert and delete in O(log n) (expected), the k smallest in O(k + log n).
 * A treap: a binary search tree on the order, a heap on random priorities, which keeps it balanced on average
 * whatever order items arrive in. Priorities come from a fixed-seed generator, so the shape is reproducible;
 * the order of items never depends on them.
 */
interface Node<T> {
  item: T;
  priority: number;
  left: Node<T> | null;
  right: Node<T> | null;
}

export class OrderedSet<T> {
  private root: Node<T> | null = null;
  private count = 0;
  private seed = 0x9e3779b9;
  /**
   * Nodes of deleted items, chained by `right`, for the next inserts: a set whose items come and go (a machine taken
   * and released) allocates nothing once it has been as big as it gets, so no node dies in the old space.
   */
  private spare: Node<T> | null = null;

  constructor(private readonly cmp: (a: T, b: T) => number) {}

  get size(): number {
    return this.count;
  }

  /** Adds an item that no item in the set compares equal to; its key must not change while it is in the set. */
  insert(item: T): void {
    let node = this.spare;
    if (node) {
      this.spare = node.right;
      node.item = item;
      node.priority = this.nextPriority();
      node.right = null;
    } else node = { item, priority: this.nextPriority(), left: null, right: null };
    // Down the search path while the nodes outrank the new one; there, the subtree is split around it.
    let parent: Node<T> | null = null;
    let at = this.root;
    while (at && at.priority > node.priority) {
      parent = at;
      at = this.cmp(item, at.item) < 0 ? at.left : at.right;
    }
    this.split(at, item);
    node.left = this.splitLeft;
    node.right = this.splitRight;
    this.splitLeft = this.splitRight = null;
    if (!parent) this.root = node;
    else if (this.cmp(item, parent.item) < 0) parent.left = node;
    else parent.right = node;
    this.count += 1;
  }

  /** The item that compares equal to `probe`, if any, in O(log n). */
  get(probe: T): T | undefined {
    let node = this.root;
    while (node) {
      const c = this.cmp(probe, node.item);
      if (c === 0) return node.item;
      node = c < 0 ? node.left : node.right;
    }
    return undefined;
  }

  /**
   * Removes `item` (this very object). Found by the order in O(log n); should its key have changed behind the set's
   * back, found by a walk instead, so the set never keeps a stale entry. False when it is not in the set.
   */
  delete(item: T): boolean {
    let parent: Node<T> | null = null;
    let node = this.root;
    while (node && node.item !== item) {
      const c = this.cmp(item, node.item);
      parent = node;
      node = c < 0 ? node.left : c > 0 ? node.right : null;
    }
    if (!node) [parent, node] = this.find(item);
    if (!node) return false;
    const joined = this.merge(node.left, node.right);
    if (!parent) this.root = joined;
    else if (parent.left === node) parent.left = joined;
    else parent.right = joined;
    this.count -= 1;
    // Kept for the next insert, holding nothing the caller let go of.
    node.item = null as T;
    node.left = null;
    node.right = this.spare;
    this.spare = node;
    return true;
  }

  /** The node holding `item` and its parent, by a walk over the whole tree. */
  private find(item: T): [Node<T> | null, Node<T> | null] {
    const stack: Array<[Node<T> | null, Node<T>]> = this.root ? [[null, this.root]] : [];
    while (stack.length > 0) {
      const [parent, node] = stack.pop()!;
      if (node.item === item) return [parent, node];
      if (node.left) stack.push([node, node.left]);
      if (node.right) stack.push([node, node.right]);
    }
    return [null, null];
  }

  /** Items from the smallest up, lazily: taking k of them walks O(k + log n) nodes. */
  *[Symbol.iterator](): Generator<T> {
    const stack: Node<T>[] = [];
    let node = this.root;
    while (node || stack.length > 0) {
      while (node) {
        stack.push(node);
        node = node.left;
      }
      node = stack.pop()!;
      yield node.item;
      node = node.right;
    }
  }

  /** Where `split` leaves its two halves (fields, not a returned pair: no allocation per level). */
  private splitLeft: Node<T> | null = null;
  private splitRight: Node<T> | null = null;

  /** Splits a subtree into items smaller than `key` (splitLeft) and the rest (splitRight). */
  private split(node: Node<T> | null, key: T): void {
    if (!node) {
      this.splitLeft = this.splitRight = null;
    } else if (this.cmp(node.item, key) < 0) {
      this.split(node.right, key);
      node.right = this.splitLeft;
      this.splitLeft = node;
    } else {
      this.split(node.left, key);
      node.left = this.splitRight;
      this.splitRight = node;
    }
  }

  /** Joins two trees where every item of `a` is smaller than every item of `b`. */
  private merge(a: Node<T> | null, b: Node<T> | null): Node<T> | null {
    if (!a) return b;
    if (!b) return a;
    if (a.priority > b.priority) {
      a.right = this.merge(a.right, b);
      return a;
    }
    b.left = this.merge(a, b.left);
    return b;
  }

  /** xorshift32: cheap, and the same shape on every run; 31 bits, so V8 keeps it a small integer, not a boxed number. */
  private nextPriority(): number {
    let x = this.seed;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.seed = x >>> 0;
    return this.seed >>> 1;
  }
}

/**
 * A set of ids, iterated in ascending order: what a Set<number> gives the World's readers (has, size, iteration),
 * without a Set's hash table. Once old, a Set's table is reallocated in the old space whenever it grows or shrinks,
 * so a set that keeps filling and emptying (open sessions) leaves garbage there on every event; this one reuses its
 * nodes and allocates nothing once it has been as big as it gets.
 */
export class IdSet implements Iterable<number> {
  private readonly ids = new OrderedSet<number>((a, b) => a - b);

  get size(): number {
    return this.ids.size;
  }

  has(id: number): boolean {
    return this.ids.get(id) !== undefined;
  }

  add(id: number): this {
    if (!this.has(id)) this.ids.insert(id);
    return this;
  }

  delete(id: number): boolean {
    return this.has(id) && this.ids.delete(id);
  }

  clear(): void {
    for (const id of [...this.ids]) this.ids.delete(id);
  }

  [Symbol.iterator](): Iterator<number> {
    return this.ids[Symbol.iterator]();
  }
}
