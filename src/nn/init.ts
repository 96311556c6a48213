// Seeded random numbers for weight init (deterministic across runs and machines).

/**
 * mulberry32 with its state in view: a small, fast 32-bit PRNG returning floats in [0, 1). The
 * state is one uint32, so a stream of draws can be saved (checkpoints) and continued exactly.
 */
export class Mulberry32 {
  constructor(public state: number) {
    this.state = state >>> 0;
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/** mulberry32 as a function: each call is the next draw of a generator seeded with `seed`. */
export function mulberry32(seed: number): () => number {
  const g = new Mulberry32(seed);
  return () => g.next();
}

/** Normal(0, std²) samples via Box–Muller. */
export function randomNormal(n: number, std: number, rnd: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(rnd(), 1e-12);
    const v = rnd();
    const r = std * Math.sqrt(-2 * Math.log(u));
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}
