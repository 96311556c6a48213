import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BufferPool, bucketSize } from '../../src/gpu/pool.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { device } from '../helpers/fixtures.ts';

test('bucketSize: 256-byte floor, powers of two exact, 4 steps per octave', () => {
  assert.is(bucketSize(0), 256);
  assert.is(bucketSize(1), 256);
  assert.is(bucketSize(256), 256);
  assert.is(bucketSize(257), 320);
  assert.is(bucketSize(320), 320);
  assert.is(bucketSize(321), 384);
  assert.is(bucketSize(1000), 1024);
  assert.is(bucketSize(1025), 1280);
  assert.is(bucketSize(4096), 4096);
  assert.is(bucketSize(5000), 5120);
  assert.is(bucketSize(3 * 2 ** 20 + 1), 3.5 * 2 ** 20);
});

test('bucketSize: never smaller than asked, at most 25% slack, multiples of 4', () => {
  for (let n = 1; n < 70000; n += 37) {
    const b = bucketSize(n);
    assert.ok(b >= n, `bucket ${b} < ${n}`);
    assert.ok(b % 4 === 0, `bucket ${b} for ${n} not a multiple of 4`);
    if (n >= 256) assert.ok(b <= n * 1.25, `bucket ${b} for ${n} wastes more than 25%`);
  }
});

test('acquire/release/acquire reuses the buffer; allocations stay flat', async () => {
  const d = await device();
  const pool = new BufferPool(d.gpu);
  const a = pool.acquire(1000);
  assert.is(a.size, 1024);
  assert.equal(pool.stats(), { liveBytes: 1024, liveBuffers: 1, freeBytes: 0, totalBytes: 1024, allocations: 1, peakLiveBytes: 1024 });
  pool.release(a);
  assert.equal(pool.stats(), { liveBytes: 0, liveBuffers: 0, freeBytes: 1024, totalBytes: 1024, allocations: 1, peakLiveBytes: 1024 });
  // 900 bytes lands in the same 1024-byte bucket: the freed buffer comes back.
  const b = pool.acquire(900);
  assert.ok(b === a, 'same bucket hands back the released buffer');
  assert.is(pool.stats().allocations, 1);
  // A different bucket allocates.
  const c = pool.acquire(2000);
  assert.is(c.size, 2048);
  assert.ok(c !== a);
  assert.equal(pool.stats(), { liveBytes: 1024 + 2048, liveBuffers: 2, freeBytes: 0, totalBytes: 3072, allocations: 2, peakLiveBytes: 3072 });
  for (let i = 0; i < 50; i++) {
    const x = pool.acquire(1500);
    pool.release(x);
  }
  assert.is(pool.stats().allocations, 3, '50 acquire/release cycles allocate once');
  pool.release(b);
  pool.release(c);
  assert.is(pool.stats().liveBytes, 0);
  assert.is(pool.stats().freeBytes, 1024 + 2048 + 1536); // 1500 bytes -> 1536 bucket
  // The peak saw a, c and one 1536-byte buffer live at once; resetPeak starts from now.
  assert.is(pool.stats().peakLiveBytes, 1024 + 2048 + 1536);
  pool.resetPeak();
  assert.is(pool.stats().peakLiveBytes, 0);
  pool.destroyAll();
});

test('release of a buffer that is not live throws', async () => {
  const d = await device();
  const pool = new BufferPool(d.gpu);
  const a = pool.acquire(64);
  pool.release(a);
  assert.throws(() => pool.release(a), /not live in this pool/);
  const b = pool.acquire(64);
  pool.destroyAll();
  // After destroyAll (device destroyed) a late release from a tensor's dispose() is a no-op.
  pool.release(b);
  assert.is(pool.stats().liveBytes, 0);
});

test('trim destroys free buffers; live ones stay counted', async () => {
  const d = await device();
  const pool = new BufferPool(d.gpu);
  const a = pool.acquire(300);
  const b = pool.acquire(300);
  pool.release(a);
  assert.is(pool.stats().freeBytes, 320);
  pool.trim();
  assert.equal(pool.stats(), { liveBytes: 320, liveBuffers: 1, freeBytes: 0, totalBytes: 320, allocations: 2, peakLiveBytes: 640 });
  // After a trim the bucket is empty, so the next acquire allocates.
  const c = pool.acquire(300);
  assert.ok(c !== a);
  assert.is(pool.stats().allocations, 3);
  pool.release(b);
  pool.release(c);
  pool.destroyAll();
  assert.equal(pool.stats(), { liveBytes: 0, liveBuffers: 0, freeBytes: 0, totalBytes: 0, allocations: 3, peakLiveBytes: 640 });
});

test('tensors take buffers from the device pool and give them back on dispose', async () => {
  const d = await device();
  const before = d.pool.stats();
  const t = Tensor.empty([10, 30], d); // 1200 bytes -> 1280 bucket
  assert.is(d.pool.stats().liveBytes - before.liveBytes, 1280);
  assert.is(d.pool.stats().liveBuffers - before.liveBuffers, 1);
  const buf = t.buffer;
  const allocsWithT = d.pool.stats().allocations;
  assert.ok(allocsWithT - before.allocations <= 1);
  t.dispose();
  assert.is(d.pool.stats().liveBytes, before.liveBytes);
  assert.is(d.pool.stats().liveBuffers, before.liveBuffers);
  const u = Tensor.empty([1200 / 4], d);
  assert.ok(u.buffer === buf, 'a same-bucket tensor reuses the freed buffer');
  assert.is(d.pool.stats().allocations, allocsWithT);
  u.dispose();
});

test.run();
