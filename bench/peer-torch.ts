// The PyTorch peer's rows (bench/peer-torch/gmail_step.py, run on the same GPU machine in the same
// device call) set beside genalign's own rows in one bench report.
//
// The Python script cannot run inside this Node process, so it writes its rows first and the
// bench reads them with `--torch-rows FILE`. A torch row is matched to genalign's row of the same
// kernel, variant, shape and dtype (the script labels its rows exactly as bench/suites/train.ts
// does: 'train-step', 'teacher cache', '<preset> B=<batch> [B,3,S,S] P=<proj>', and dtype 'f32'
// for fp32 or 'f16' for bf16 autocast, the comparison issue 14 asks for). The matched row gets
//   peer = the torch row's peer ('torch-<version> fp32' | '... bf16-autocast'), peer_ms, ratio =
//   peer_ms / ms (above 1: genalign faster), and in extra: peer_images_per_s, peer_peak_bytes
//   (torch.cuda.max_memory_allocated) and peak_over_peer = genalign's pool peak / torch's.
// A genalign row that already has a peer (tfjs, composed) keeps it; the torch row is then added
// as a copy of genalign's row with the torch peer, so no comparison is lost. Torch rows with no
// genalign counterpart are listed in `unmatched` (e.g. micro-batch 128, which genalign's suite
// does not run) and kept in the report under `torch_unmatched`.
import { readFileSync } from 'node:fs';
import type { Report, Row } from './harness.ts';

export interface TorchRow {
  kernel: string;
  variant: string;
  shape: string;
  dtype: string;
  peer: string;
  peer_ms: number;
  extra?: Record<string, number>;
}

export interface TorchRows {
  rows: TorchRow[];
  failures?: unknown[];
}

/** Reads and checks the script's JSON ({ rows, failures }); the error names the file and the bad row. */
export function readTorchRows(path: string): TorchRows {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`bench: cannot read the PyTorch peer rows ${path}: ${e instanceof Error ? e.message : String(e)} (write them with bench/peer-torch/gmail_step.py --out ${path})`);
  }
  if (!parsed || typeof parsed !== 'object' || !Array.isArray((parsed as { rows?: unknown }).rows)) {
    throw new Error(`bench: ${path} is not a PyTorch peer file: expected an object with a "rows" array (bench/peer-torch/gmail_step.py --out writes one)`);
  }
  const rows = (parsed as { rows: unknown[] }).rows;
  rows.forEach((r, i) => {
    const o = r as Record<string, unknown>;
    const strings = ['kernel', 'variant', 'shape', 'dtype', 'peer'].every((k) => typeof o?.[k] === 'string');
    if (!strings || typeof o.peer_ms !== 'number' || !(o.peer_ms > 0)) {
      throw new Error(`bench: ${path} rows[${i}] needs string kernel/variant/shape/dtype/peer and a positive peer_ms, got ${JSON.stringify(r)}`);
    }
  });
  return parsed as TorchRows;
}

/**
 * Sets the torch rows beside the report's rows (see the header). Returns the torch rows that
 * matched nothing.
 */
export function mergeTorchRows(report: Report, torch: TorchRows): TorchRow[] {
  const unmatched: TorchRow[] = [];
  const added: Row[] = [];
  for (const t of torch.rows) {
    const same = report.results.filter((r) => r.kernel === t.kernel && r.variant === t.variant && r.shape === t.shape && r.dtype === t.dtype);
    const ours = same.find((r) => r.peer === null) ?? same[0];
    if (!ours) {
      unmatched.push(t);
      continue;
    }
    const withPeer = ours.peer === null ? ours : { ...ours, extra: { ...(ours.extra ?? {}) } };
    withPeer.peer = t.peer;
    withPeer.peer_ms = t.peer_ms;
    withPeer.ratio = t.peer_ms / ours.ms;
    const extra: Record<string, number> = { ...(withPeer.extra ?? {}) };
    const peerPeak = t.extra?.peer_peak_bytes;
    if (typeof t.extra?.peer_images_per_s === 'number') extra.peer_images_per_s = t.extra.peer_images_per_s;
    if (typeof peerPeak === 'number') {
      extra.peer_peak_bytes = peerPeak;
      if (peerPeak > 0 && typeof extra.peak_bytes === 'number') extra.peak_over_peer = extra.peak_bytes / peerPeak;
    }
    withPeer.extra = extra;
    if (withPeer !== ours) added.push(withPeer);
  }
  report.results.push(...added);
  if (unmatched.length) report.torch_unmatched = unmatched;
  return unmatched;
}
