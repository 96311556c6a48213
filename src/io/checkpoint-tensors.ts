// A checkpoint's tensors onto the GPU, from safetensors readers already opened (files in Node,
// fetched bytes in the browser bundle): every expected tensor checked first (present, with the
// shape its config implies), all problems listed in one error, then uploaded in f32 or f16.
import type { Device } from '../gpu/device.ts';
import { fromArray, fromF16Bits, shapeStr, type DType, type Tensor } from '../tensor/tensor.ts';
import { listWithRest, LIST_LIMIT } from '../gpu/problem-list.ts';
import type { SafetensorsReader } from './safetensors-core.ts';

/** The last part of a path or URL. */
function leaf(path: string): string {
  return path.slice(Math.max(path.lastIndexOf('/'), path.lastIndexOf('\\')) + 1);
}

/**
 * The tensors named in `expected` from `stores` (a single file, or a sharded checkpoint's
 * shards) onto the GPU in `dtype`, and the scalars named in `scalars` (shape [] or [1], to the
 * host; null when absent). `where` names the checkpoint (a directory or URL) in the error that
 * lists every missing or mis-shaped tensor with the file it is in and the shape expected. The
 * caller closes the stores.
 */
export function uploadCheckpointTensors(
  where: string, stores: readonly SafetensorsReader[], expected: Map<string, number[]>, device: Device, dtype: DType, scalars: readonly string[] = [],
): { weights: Map<string, Tensor>; scalars: Map<string, number | null> } {
  const found = new Map<string, { file: SafetensorsReader; shape: number[] }>();
  for (const st of stores) for (const [name, info] of st.tensors) found.set(name, { file: st, shape: info.shape });
  const weights = new Map<string, Tensor>();
  const values = new Map<string, number | null>();
  try {
    const problems: string[] = [];
    const misShaped = (name: string, f: { file: SafetensorsReader; shape: number[] }, shape: number[]): string => `${name}: expected ${shapeStr(shape)}, found ${shapeStr(f.shape)} in ${leaf(f.file.path)}`;
    for (const [name, shape] of expected) {
      const f = found.get(name);
      if (!f) problems.push(`missing tensor ${name} (expected ${shapeStr(shape)})`);
      else if (shapeStr(f.shape) !== shapeStr(shape)) problems.push(misShaped(name, f, shape));
    }
    for (const name of scalars) {
      const f = found.get(name);
      if (f && f.shape.length !== 0 && !(f.shape.length === 1 && f.shape[0] === 1)) problems.push(misShaped(name, f, []));
    }
    if (problems.length) throw new Error(`${where}: checkpoint does not match its config.json (${problems.length} problem${problems.length > 1 ? 's' : ''}):\n  ${listWithRest(problems, LIST_LIMIT, '- ')}`);
    for (const [name, shape] of expected) {
      const f = found.get(name)!;
      // f16: F16 tensors go to the GPU as stored; BF16/F32 are rounded to f16 bit patterns on
      // the host with integer arithmetic (no f32 copy of the checkpoint is ever made).
      const t = dtype === 'f16' ? fromF16Bits(f.file.float16Bits(name), shape, device) : fromArray(f.file.float32(name), shape, device);
      weights.set(name, t.keep());
    }
    for (const name of scalars) {
      const f = found.get(name);
      values.set(name, f ? f.file.float32(name)[0] : null);
    }
  } catch (e) {
    for (const t of weights.values()) t.dispose();
    throw e;
  }
  return { weights, scalars: values };
}
