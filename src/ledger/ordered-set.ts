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

  constructor(private readonly cmp: (a: T, b: T) => number) {}

  get size(): number {
    return this.count;
  }

  /** Adds an item that no item in the set compares equal to. */
  insert(item: T): void {
    const node: Node<T> = { item, priority: this.nextPriority(), left: null, right: null };
    const [l, r] = this.split(this.root, item);
    this.root = this.merge(this.merge(l, node), r);
    this.count += 1;
  }

  /** Removes the item that compares equal to `item`; false when there is none. */
  delete(item: T): boolean {
    let parent: Node<T> | null = null;
    let node = this.root;
    while (node) {
      const c = this.cmp(item, node.item);
      if (c === 0) break;
      parent = node;
      node = c < 0 ? node.left : node.right;
    }
    if (!node) return false;
    const joined = this.merge(node.left, node.right);
    if (!parent) this.root = joined;
    else if (parent.left === node) parent.left = joined;
    else parent.right = joined;
    this.count -= 1;
    return true;
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

  /** Splits into items smaller than `key` and the rest. */
  private split(node: Node<T> | null, key: T): [Node<T> | null, Node<T> | null] {
    if (!node) return [null, null];
    if (this.cmp(node.item, key) < 0) {
      const [l, r] = this.split(node.right, key);
      node.right = l;
      return [node, r];
    }
    const [l, r] = this.split(node.left, key);
    node.left = r;
    return [l, node];
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

  /** xorshift32: cheap, and the same shape on every run. */
  private nextPriority(): number {
    let x = this.seed;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.seed = x >>> 0;
    return this.seed;
  }
}
