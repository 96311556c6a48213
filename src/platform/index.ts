// The platform the engine runs on. In Node (sources, tests, the CLI bundles) this is
// platform/node.ts; the browser bundle (scripts/build.mjs) resolves this file to
// platform/browser.ts instead. Both export the same functions (platform/types.ts).
export * from './node.ts';
