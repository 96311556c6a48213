// What the engine core (gpu/, tensor/, ops/, nn/) asks of the platform it runs on, so that the
// core itself imports no Node module: platform/node.ts implements it with Dawn's Node bindings
// and the file system, platform/browser.ts with navigator.gpu (the browser bundle resolves
// platform/index.ts to it; scripts/build.mjs).

/** Options for acquiring an adapter (Node: Dawn's; the browser ignores what it cannot set). */
export interface DeviceOptions {
  backend?: string;
  adapter?: string;
  enableToggles?: string[];
  disableToggles?: string[];
  unsafeApis?: boolean;
}

/** A WebGPU entry point and how it was obtained (for error messages and adapter descriptions). */
export interface GpuHandle {
  gpu: GPU;
  /** The backend named in the options ('default' when none), or 'browser'. */
  backend: string;
  /** What was asked for, in words, for the error when no adapter is found. */
  options: string;
}
