export { createMachine, MachineBuilder, type MachineBuilderOptions } from './builder.js';
export {
  DEFAULT_RTAS_ARGS_ADDRESS,
  type GuestDeviceTree,
  GuestPort,
  RTAS_MAX_CELLS,
  type RtasCallOptions,
  type RtasCallResult,
} from './guest-port.js';
export * from './kernel.js';
export { Machine, type MachineInit, type MachineState } from './machine.js';
export { MachineTokens } from './tokens.js';
