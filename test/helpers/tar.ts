// A tar archive in memory, member by member (tar-stream's pack), for tests of the shard reader.
import { pack } from 'tar-stream';

export type Member = { name: string; data?: Buffer | string; type?: 'file' | 'directory' | 'symlink'; linkname?: string };

export async function tarOf(members: Member[]): Promise<Buffer> {
  const p = pack();
  const out: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) out.push(c as Buffer);
  })();
  for (const m of members) {
    const data = typeof m.data === 'string' ? Buffer.from(m.data) : (m.data ?? Buffer.alloc(0));
    await new Promise<void>((res, rej) => p.entry({ name: m.name, type: m.type ?? 'file', size: m.type && m.type !== 'file' ? 0 : data.length, ...(m.linkname ? { linkname: m.linkname } : {}) }, m.type && m.type !== 'file' ? Buffer.alloc(0) : data, (e) => (e ? rej(e) : res())));
  }
  p.finalize();
  await done;
  return Buffer.concat(out);
}
