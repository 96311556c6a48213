// Tape-based reverse-mode autograd.
//
// Each op that sees an input with requiresGrad (while grad is enabled) records a GradNode on
// its output. The node holds refcounted views of the tensors its backward needs, so a user
// may dispose() intermediates freely; the storage lives until the node is released.
// A node is released when nothing can reach it any more (its output disposed and no
// downstream node refers to it) or after backward() has run through it.
import { Tensor, Parameter, shapeStr } from './tensor.ts';
import type { GradFnRef } from './tensor.ts';

/**
 * Given dL/d(output) and the node's saved tensors (in the order they were passed to record),
 * returns dL/d(input_i) for each input (null where not needed: `needsGrad[i]` is false for inputs
 * that neither require grad nor lead to one, e.g. frozen weights — skip that work). Use `saved`, never the
 * original tensors captured in a closure: the user may have disposed those.
 */
export type BackwardFn = (gradOutput: Tensor, saved: readonly Tensor[], needsGrad: readonly boolean[]) => (Tensor | null)[];

/** Accumulation a += b, installed by the ops layer (which owns the add kernel). */
let accumulate: ((a: Tensor, b: Tensor) => Tensor) | null = null;
export function setGradAccumulator(fn: (a: Tensor, b: Tensor) => Tensor): void {
  accumulate = fn;
}

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn with recording off: nothing is saved for backward (the frozen teacher runs here). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    const r = fn();
    if (r instanceof Promise) {
      return r.finally(() => {
        gradEnabled = prev;
      }) as T;
    }
    gradEnabled = prev;
    return r;
  } catch (e) {
    gradEnabled = prev;
    throw e;
  }
}

interface InputEdge {
  node: GradNode | null;
  /** The leaf to accumulate into, when the input is a leaf that requires grad. */
  leaf: Tensor | null;
}

let liveNodes = 0;
export function liveGradNodes(): number {
  return liveNodes;
}

export class GradNode implements GradFnRef {
  private refs = 1; // the output tensor
  private released = false;
  consumed = false;
  readonly edges: InputEdge[];
  private saved: Tensor[];

  constructor(
    readonly name: string,
    inputs: Tensor[],
    saved: Tensor[],
    private backwardFn: BackwardFn | null,
    readonly outputShape: readonly number[],
  ) {
    liveNodes++;
    this.edges = inputs.map((t) => {
      const node = t.gradFn instanceof GradNode ? t.gradFn : null;
      if (node) node.refs++;
      return { node, leaf: !node && t.requiresGrad ? t : null };
    });
    this.saved = saved.map((t) => t.view(t.shape, false));
  }

  unref(): void {
    if (--this.refs === 0) this.release();
  }

  /** Frees saved tensors and lets go of upstream nodes. */
  release(): void {
    if (this.released) return;
    this.released = true;
    liveNodes--;
    for (const t of this.saved) t.dispose();
    this.saved = [];
    this.backwardFn = null;
    for (const e of this.edges) {
      if (e.node) e.node.unref();
      e.node = null;
      e.leaf = null;
    }
  }

  runBackward(grad: Tensor): (Tensor | null)[] {
    if (!this.backwardFn) {
      throw new Error(
        `backward through '${this.name}' a second time: its saved tensors were already freed. ` +
          'Run the forward pass again before calling backward() again.',
      );
    }
    return this.backwardFn(grad, this.saved, this.edges.map((e) => e.node !== null || e.leaf !== null));
  }

  /** After backward ran through it: drop saved tensors and the closure (retain_graph=False). */
  freeAfterBackward(): void {
    this.consumed = true;
    for (const t of this.saved) t.dispose();
    this.saved = [];
    this.backwardFn = null;
  }
}

/**
 * Records an op on the tape when grad is enabled and any input requires grad.
 * `saved` are the tensors backward needs; they are kept alive by the node.
 */
export function record(name: string, inputs: Tensor[], output: Tensor, saved: Tensor[], backward: BackwardFn): Tensor {
  if (!gradEnabled || !inputs.some((t) => t.requiresGrad)) return output;
  output.requiresGrad = true;
  output.gradFn = new GradNode(name, inputs, saved, backward, output.shape);
  return output;
}

/** The seed gradient of `output`: ones of its shape and dtype. */
function ones(output: Tensor): Tensor {
  const t = Tensor.empty(output.shape, output.device, output.dtype);
  t.write(new Float32Array(output.size).fill(1));
  return t;
}

function topoOrder(root: GradNode): GradNode[] {
  const order: GradNode[] = [];
  const seen = new Set<GradNode>();
  const stack: [GradNode, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [node, i] = top;
    if (i < node.edges.length) {
      top[1]++;
      const next = node.edges[i].node;
      if (next && !seen.has(next)) {
        seen.add(next);
        stack.push([next, 0]);
      }
    } else {
      stack.pop();
      order.push(node);
    }
  }
  return order.reverse(); // root first
}

function accumulateInto(map: Map<GradNode, Tensor>, node: GradNode, g: Tensor): void {
  const prev = map.get(node);
  if (!prev) {
    map.set(node, g);
    return;
  }
  if (!accumulate) throw new Error('internal: gradient accumulator not installed (import the ops layer)');
  map.set(node, accumulate(prev, g));
  prev.dispose();
  g.dispose();
}

function accumulateLeaf(leaf: Tensor, g: Tensor): void {
  if (leaf.disposed) {
    g.dispose();
    return;
  }
  g.keep();
  if (!leaf.grad) {
    leaf.grad = g;
    return;
  }
  if (!accumulate) throw new Error('internal: gradient accumulator not installed (import the ops layer)');
  const sum = accumulate(leaf.grad, g).keep();
  leaf.grad.dispose();
  g.dispose();
  leaf.grad = sum;
}

/**
 * Reverse-mode backward from `output`. Gradients accumulate into `.grad` of leaf tensors
 * (Parameters and requiresGrad leaves); calling backward again adds to them (use zeroGrad).
 * The graph is freed afterwards, like PyTorch's retain_graph=False.
 */
export function backward(output: Tensor, gradOutput?: Tensor): void {
  if (gradOutput && gradOutput.dtype !== output.dtype) {
    throw new Error(`backward(): gradOutput ${gradOutput.describe()} is ${gradOutput.dtype} but ${output.describe()} is ${output.dtype}; pass a gradOutput of the output's dtype (toF16 / toF32)`);
  }
  if (!output.requiresGrad) throw new Error(`backward(): ${output.describe()} does not require grad (no parameter or requiresGrad input reached it, or it was computed under noGrad)`);
  if (!output.gradFn) {
    // A leaf: its gradient is just the seed.
    const seed = gradOutput ? gradOutput.view() : ones(output);
    accumulateLeaf(output, seed);
    return;
  }
  if (!gradOutput && output.size !== 1) {
    throw new Error(`backward(): ${output.describe()} is not a scalar; pass gradOutput of shape ${shapeStr(output.shape)}`);
  }
  if (gradOutput && gradOutput.size !== output.size) {
    throw new Error(`backward(): gradOutput ${gradOutput.describe()} does not match ${output.describe()}`);
  }
  const root = output.gradFn as GradNode;
  const order = topoOrder(root);
  const grads = new Map<GradNode, Tensor>();
  try {
    noGrad(() => {
      const seed = gradOutput ? gradOutput.view(output.shape) : ones(output);
      grads.set(root, seed);
      for (const node of order) {
        const g = grads.get(node);
        if (!g) continue;
        grads.delete(node);
        let inGrads: (Tensor | null)[];
        try {
          inGrads = node.runBackward(g);
        } finally {
          g.dispose();
        }
        node.edges.forEach((edge, i) => {
          const gi = inGrads[i];
          if (!gi) return;
          if (edge.node) accumulateInto(grads, edge.node, gi);
          else if (edge.leaf) accumulateLeaf(edge.leaf, gi);
          else gi.dispose();
        });
        node.freeAfterBackward();
      }
    });
  } finally {
    // Pending gradients (all of them when a node's backward threw) are freed either way.
    for (const g of grads.values()) g.dispose();
  }
}

export function zeroGrad(params: Iterable<Parameter>): void {
  for (const p of params) p.zeroGrad();
}
