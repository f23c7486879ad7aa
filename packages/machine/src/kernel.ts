// The kernel's public surface; index.ts re-exports it next to the machine, builder and guest port.
export * from './description.js';
export * from './devicetree.js';
export * from './di.js';
export * from './errors.js';
export * from './events.js';
export * from './hcall.js';
export * from './lifecycle.js';
export * from './papr.js';
export * from './plugin.js';
export * from './rtas.js';
export * from './trace.js';
export * from './vmstate.js';
