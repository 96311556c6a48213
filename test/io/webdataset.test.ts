// WebDataset shards: the shard-spec expansion, what a member's key and extension are, a round
// trip through make-shards' writer, and the tar reader's edge cases (directories and links
// skipped, long names, missing sides, repeated or scattered keys, bad JSON or text, a damaged
// or cut-short tar, a file that is not a tar).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadDataset } from '../../src/io/dataset.ts';
import { expandShardSpec, packShard, readShard, splitKey, type ShardProblem, type ShardSample } from '../../src/io/webdataset.ts';
import { tmp, tinyDataset, runCli } from '../cli/helpers.ts';
import { tarOf } from '../helpers/tar.ts';

const root = tmp('wds');
test.after(() => rmSync(root, { recursive: true, force: true }));

test('expandShardSpec: zero-padded ranges, brace lists, comma lists; unbalanced braces refused', () => {
  assert.equal(expandShardSpec('s/{000..002}.tar'), ['s/000.tar', 's/001.tar', 's/002.tar']);
  assert.equal(expandShardSpec('s/{8..10}.tar'), ['s/8.tar', 's/9.tar', 's/10.tar']);
  assert.equal(expandShardSpec('{a,b}/{0..1}.tar,extra.tar'), ['a/0.tar', 'a/1.tar', 'b/0.tar', 'b/1.tar', 'extra.tar']);
  assert.equal(expandShardSpec('one.tar'), ['one.tar']);
  assert.throws(() => expandShardSpec('s/{0..2.tar'), /a '\{' without its '\}'/);
  assert.throws(() => expandShardSpec('s/{3..1}.tar'), /runs backwards/);
});

test('splitKey: the key runs to the first dot of the file name; directories may hold dots', () => {
  assert.equal(splitKey('000123.real.png'), ['000123', 'real.png']);
  assert.equal(splitKey('a.b/c/000123.gen.0.JPG'), ['a.b/c/000123', 'gen.0.jpg']);
  assert.is(splitKey('README'), null);
  assert.is(splitKey('dir/.hidden'), null);
});

async function collect(shard: string): Promise<{ samples: ShardSample[]; problems: ShardProblem[] }> {
  const samples: ShardSample[] = [];
  const problems: ShardProblem[] = [];
  for await (const s of readShard(shard, (p) => problems.push(p))) samples.push(s);
  return { samples, problems };
}

test('a shard written by make-shards\' writer reads back: the same images byte for byte, ids, captions and labels', async () => {
  const data = await tinyDataset(join(root, 'data'), 5);
  const pairs = loadDataset(data).pairs;
  const shard = join(root, 'round.tar');
  writeFileSync(shard, await packShard(pairs.map((p, i) => ({ key: `k${i}`, real: p.real, generated: p.generated, id: p.id, ...(p.caption ? { caption: p.caption } : {}), ...(p.label ? { label: p.label } : {}) }))));
  const { samples, problems } = await collect(shard);
  assert.equal(problems, []);
  assert.equal(samples.map((s) => s.id), pairs.map((p) => p.id));
  samples.forEach((s, i) => {
    assert.ok(s.real.data.equals(readFileSync(pairs[i].real)), 'real bytes');
    assert.equal(s.generated.map((g) => g.data.length), pairs[i].generated.map((g) => readFileSync(g).length));
    assert.is(s.caption, pairs[i].caption);
    assert.is(s.label, pairs[i].label);
  });
});


const PNG = Buffer.from('not decoded here');

test('reader edge cases: directories and links skipped, long names, gen order by k; each bad sample named and left out', async () => {
  const long = `${'d'.repeat(120)}/s1`;
  const shard = join(root, 'edge.tar');
  writeFileSync(shard, await tarOf([
    { name: 'dir/', type: 'directory' },
    { name: 'ok.real.png', data: PNG },
    { name: 'ok.gen.1.jpg', data: 'g1' },
    { name: 'ok.gen.0.jpg', data: 'g0' },
    { name: 'ok.txt', data: 'a red circle\n' },
    { name: 'ok.json', data: '{"label": "circle"}' },
    { name: 'link.real.png', type: 'symlink', linkname: 'ok.real.png' },
    { name: `${long}.real.png`, data: PNG },
    { name: `${long}.gen.png`, data: 'g' },
    { name: 'noreal.gen.png', data: 'g' },
    { name: 'nogen.real.png', data: PNG },
    { name: 'dup.real.png', data: PNG },
    { name: 'dup.real.png', data: PNG },
    { name: 'dup.gen.png', data: 'g' },
    { name: 'badjson.real.png', data: PNG },
    { name: 'badjson.gen.png', data: 'g' },
    { name: 'badjson.json', data: '{"label": ' },
    { name: 'badtext.real.png', data: PNG },
    { name: 'badtext.gen.png', data: 'g' },
    { name: 'badtext.txt', data: Buffer.from([0xff, 0xfe, 0x41]) },
    { name: 'scattered.real.png', data: PNG },
    { name: 'between.real.png', data: PNG },
    { name: 'between.gen.png', data: 'g' },
    { name: 'scattered.gen.png', data: 'g' },
  ]));
  const { samples, problems } = await collect(shard);
  assert.equal(samples.map((s) => s.key), ['ok', long, 'between']);
  const ok = samples[0];
  assert.equal(ok.generated.map((g) => g.data.toString()), ['g0', 'g1'], 'ordered by k');
  assert.equal([ok.caption, ok.label, ok.id], ['a red circle', 'circle', 'ok']);
  const why = new Map<string, string[]>();
  for (const p of problems) why.set(p.key, [...(why.get(p.key) ?? []), p.reason]);
  assert.match(why.get('noreal')![0], 'no real image (noreal.real.png');
  assert.match(why.get('nogen')![0], 'no generated image');
  assert.match(why.get('dup')![0], 'two members named dup.real.png');
  assert.match(why.get('badjson')![0], 'badjson.json is not JSON');
  assert.match(why.get('badtext')![0], 'badtext.txt is not UTF-8 text');
  assert.ok(why.get('scattered')!.some((r) => r.includes('its members are not consecutive in the tar')), JSON.stringify(why.get('scattered')));
  assert.ok(problems.every((p) => p.shard === shard));
});

test('a cut-short tar, a file that is not a tar and an empty file are errors naming the shard', async () => {
  const good = await tarOf([{ name: 'a.real.png', data: Buffer.alloc(3000, 1) }, { name: 'a.gen.png', data: 'g' }]);
  const cut = join(root, 'cut.tar');
  writeFileSync(cut, good.subarray(0, 1500));
  const junk = join(root, 'junk.tar');
  writeFileSync(junk, Buffer.alloc(2048, 0x41));
  const empty = join(root, 'empty.tar');
  writeFileSync(empty, '');
  for (const [path, msg] of [[cut, 'not a readable tar archive'], [junk, 'not a readable tar archive'], [empty, 'the file is empty, not a tar archive']] as const) {
    let err = '';
    try {
      await collect(path);
    } catch (e) {
      err = (e as Error).message;
    }
    assert.match(err, `shard ${path}: ${msg}`);
  }
});

test('make-shards: N samples per shard in order, the --data pattern printed; a non-empty --out refused', async () => {
  const data = await tinyDataset(join(root, 'ms-data'), 7);
  const out = join(root, 'shards');
  const r = await runCli('make-shards', ['--data', data, '--out', out, '--per-shard', '3']);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, `make-shards: 7 pairs in 3 shard(s)`);
  assert.match(r.stderr, `--data ${out}/{00000..00002}.tar`);
  const ids: string[] = [];
  for (const s of expandShardSpec(`${out}/{00000..00002}.tar`)) for (const x of (await collect(s)).samples) ids.push(x.id);
  assert.equal(ids, loadDataset(data).pairs.map((p) => p.id));
  const again = await runCli('make-shards', ['--data', data, '--out', out]);
  assert.is(again.code, 2);
  assert.match(again.stderr, `make-shards: --out ${out} is not empty`);
});

test('train --validate on shards: clean shards pass; a corrupt member, a sample without its real image and a cut-short shard are each named', async () => {
  const data = await tinyDataset(join(root, 'val-data'), 4);
  const out = join(root, 'val-shards');
  assert.is((await runCli('make-shards', ['--data', data, '--out', out, '--per-shard', '2'])).code, 0);
  const clean = await runCli('train', ['--validate', '--data', `${out}/{00000..00001}.tar`, '--model', 'tiny']);
  assert.is(clean.code, 0, clean.stderr);
  assert.match(clean.stderr, 'validate: 2 shard(s), 4 samples, 8 images checked: no problems found.');
  const pair = loadDataset(data).pairs[0];
  const bad = join(root, 'bad.tar');
  writeFileSync(bad, await tarOf([
    { name: 'a.real.png', data: readFileSync(pair.real) },
    { name: 'a.gen.0.jpg', data: readFileSync(pair.generated[0]).subarray(0, 200) },
    { name: 'b.gen.0.jpg', data: readFileSync(pair.generated[0]) },
  ]));
  const cut = join(root, 'val-cut.tar');
  writeFileSync(cut, readFileSync(join(out, '00000.tar')).subarray(0, 700));
  const r = await runCli('train', ['--validate', '--data', `${bad},${cut},${out}/00001.tar`, '--model', 'tiny']);
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, `bad image: ${bad}:a.gen.0.jpg: cannot decode image (`);
  assert.match(r.stderr, `${bad}: sample b left out: no real image`);
  assert.match(r.stderr, `shard ${cut}: not a readable tar archive`);
  assert.match(r.stderr, /validate: 3 shard\(s\), \d+ samples, \d+ images checked; 3 problem\(s\) above\./);
});

test.run();
