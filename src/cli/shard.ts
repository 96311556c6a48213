// Which share of a job array this process takes (cache-teacher, embed): --shard I/N; else a Slurm
// job array's SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT; else a Kubernetes
// Indexed Job's JOB_COMPLETION_INDEX of --shards N; else everything (share 0 of 1). Item k of a
// list belongs to share k mod N (shareOf), so the shares are disjoint and complete for any N.
import { UsageError, positive, type FlagSpec, type ParsedFlags } from './args.ts';

/** The items of share `index` of `count` (0-based): every count-th item from the index-th. Disjoint and together complete for any count. */
export function shareOf<T>(items: readonly T[], index: number, count: number): T[] {
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(index) || index < 0 || index >= count) throw new Error(`share ${index} of ${count}: needs 0 <= share < count`);
  return items.filter((_, i) => i % count === index);
}

export const SHARD_FLAGS: FlagSpec[] = [
  { name: 'shard', type: 'string', help: "this job's share, I/N (0 <= I < N); default: from a Slurm array or a Kubernetes Indexed Job (see --shards), else everything" },
  { name: 'shards', type: 'int', help: 'N for a Kubernetes Indexed Job (the share is JOB_COMPLETION_INDEX of N)', check: positive },
];

export interface Share {
  index: number;
  count: number;
  /** Where it came from, for the log. */
  source: string;
}

/** This job's share from --shard, --shards (flags of `cmd`) and the environment (see the file header). */
export function resolveShare(cmd: string, f: ParsedFlags, env: NodeJS.ProcessEnv): Share {
  const shard = f.shard === undefined ? undefined : String(f.shard);
  const shards = f.shards === undefined ? undefined : Number(f.shards);
  const bad = (what: string): never => {
    throw new UsageError(`${cmd}: ${what}`);
  };
  const int = (v: string | undefined, name: string): number => {
    const n = Number(v);
    if (v === undefined || v.trim() === '' || !Number.isInteger(n) || n < 0) bad(`${name} must be an integer >= 0, got '${v}'`);
    return n;
  };
  const checked = (index: number, count: number, source: string): Share => {
    if (count < 1) bad(`${source}: the number of shares must be >= 1, got ${count}`);
    if (index >= count) bad(`${source}: share ${index} does not exist among ${count} (0 to ${count - 1})`);
    return { index, count, source };
  };
  if (shard !== undefined) {
    const m = /^(\d+)\/(\d+)$/.exec(shard.trim());
    if (!m) bad(`--shard must be I/N (e.g. 0/4), got '${shard}'`);
    if (shards !== undefined && shards !== Number(m![2])) bad(`--shard ${shard} and --shards ${shards} disagree`);
    return checked(Number(m![1]), Number(m![2]), `--shard ${shard}`);
  }
  if (env.SLURM_ARRAY_TASK_ID !== undefined) {
    const id = int(env.SLURM_ARRAY_TASK_ID, 'SLURM_ARRAY_TASK_ID');
    const min = env.SLURM_ARRAY_TASK_MIN === undefined ? 0 : int(env.SLURM_ARRAY_TASK_MIN, 'SLURM_ARRAY_TASK_MIN');
    const count = shards ?? int(env.SLURM_ARRAY_TASK_COUNT, 'SLURM_ARRAY_TASK_COUNT');
    return checked(id - min, count, `Slurm array task ${id} (SLURM_ARRAY_TASK_MIN ${min}, ${count} tasks; use a contiguous --array such as 0-${count - 1})`);
  }
  if (env.JOB_COMPLETION_INDEX !== undefined) {
    if (shards === undefined) bad('JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): pass --shards N, the Job\'s completions');
    return checked(int(env.JOB_COMPLETION_INDEX, 'JOB_COMPLETION_INDEX'), shards!, `Kubernetes job completion index ${env.JOB_COMPLETION_INDEX} of ${shards}`);
  }
  if (shards !== undefined && shards !== 1) bad(`--shards ${shards} needs JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) or --shard I/${shards}`);
  return { index: 0, count: 1, source: 'the whole cache' };
}

