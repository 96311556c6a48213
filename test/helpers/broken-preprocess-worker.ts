// A preprocessing worker entry that fails while it loads, for test/io/preprocess-pool.test.ts
// (a pool whose workers cannot start must reject its requests, not hang).
throw new Error('this worker entry cannot load');
export {};
