/**
 * @ddw/machine: the framework kernel. A machine is an assembly of services registered against
 * tokens (the DI facade), built from plugins and a description (the builder), driven through its
 * lifecycle, reached by the guest through the guest port, traced in QEMU's log format, and saved
 * and loaded as snapshots. Everything else in src/ is private.
 */

// Hex as ddw writes it: @ddw/memory's helpers, importable from either package.
export { formatHex, hexDigits } from '@ddw/memory';
export { AddressSpaceList } from './address-spaces.js';
// The machine and how it is built.
export { createMachine, MachineBuilder, type MachineBuilderOptions } from './builder.js';
// Machine descriptions: data merged over a preset, validated by the plugins' sections.
export {
  DescriptionSchemaRegistry,
  type DescriptionSection,
  formatFieldPath,
  hexSchema,
  isPlainObject,
  type MachineDescription,
  mergeDescription,
  parseDescription,
  QEMU_ID_PATTERN,
  qemuIdSchema,
  sizeSchema,
} from './description.js';
export { DeviceTree } from './devicetree.js';
export {
  type Constructor,
  inject,
  injectable,
  type Provider,
  type ServiceGetter,
  type Token,
  token,
} from './di.js';
// Errors: one line naming what is wrong and how to fix it.
export {
  ConfigError,
  type ConfigIssue,
  DdwError,
  DeviceError,
  type DevicePhase,
  InvalidArgumentError,
  messageOf,
  PluginError,
  type PluginErrorKind,
} from './errors.js';
export {
  type GuestErrorEvent,
  type HostErrorEvent,
  type LifecycleEvent,
  type LifecyclePhase,
  MachineEventBus,
  type MachineEvents,
  type ProgressEvent,
} from './events.js';
// The guest's side.
export {
  DEFAULT_RTAS_ARGS_ADDRESS,
  type GuestDeviceTree,
  GuestPort,
  RTAS_MAX_CELLS,
  type RtasCallOptions,
  type RtasCallResult,
} from './guest-port.js';

// What plugins contribute to: hypercalls, RTAS calls, the device tree, devices, events.
export {
  type HypercallHandler,
  type HypercallInfo,
  type HypercallObserver,
  HypercallRegistry,
  type HypercallRegistryOptions,
  type HypercallResult,
} from './hcall.js';
export { type Device, DeviceRegistry, type DeviceState } from './lifecycle.js';
export { Machine, type MachineInit, type MachineState } from './machine.js';
// PAPR: return codes, hypercall opcodes, RTAS statuses and tokens (the one definition of each).
export {
  H_FUNCTION,
  H_GET_TCE,
  H_HARDWARE,
  H_NOT_ENOUGH_RESOURCES,
  H_PARAMETER,
  H_PRIVILEGE,
  H_PUT_TCE,
  H_PUT_TCE_INDIRECT,
  H_RTAS,
  H_STUFF_TCE,
  H_SUCCESS,
  hcallReturnName,
  KVMPPC_HCALL_BASE,
  RTAS_IBM_CREATE_PE_DMA_WINDOW,
  RTAS_IBM_QUERY_PE_DMA_WINDOW,
  RTAS_IBM_REMOVE_PE_DMA_WINDOW,
  RTAS_IBM_RESET_PE_DMA_WINDOW,
  RTAS_OUT_BUSY,
  RTAS_OUT_HW_ERROR,
  RTAS_OUT_NO_ERRORS_FOUND,
  RTAS_OUT_NOT_SUPPORTED,
  RTAS_OUT_PARAM_ERROR,
  RTAS_OUT_SUCCESS,
  RTAS_TOKEN_BASE,
} from './papr.js';
// Plugins and the DI facade (the only way to reach tsyringe).
export { definePlugin, type Plugin, type PluginContext, type PluginFactory } from './plugin.js';
export {
  type RtasCall,
  type RtasCallInfo,
  type RtasHandler,
  type RtasObserver,
  RtasRegistry,
  type RtasRegistryOptions,
} from './rtas.js';
// Sizes as descriptions and QEMU options write them, and for people.
export { formatPageShift, formatSize, parseQemuSize, parseSize } from './sizes.js';
export { MachineTokens } from './tokens.js';

// Traces in QEMU's format.
export {
  callbackSink,
  type ParsedTraceLine,
  parseTraceLine,
  streamSink,
  TRACE_MAX_ARGS,
  type TraceArg,
  TraceBus,
  type TraceBusOptions,
  type TraceCollector,
  TraceEvent,
  type TraceListener,
  type TraceParam,
  type TraceRecord,
  type TraceRecorder,
  TraceSelection,
  type TraceSink,
  type TraceValue,
} from './trace/index.js';

// Migration: sections, the snapshot file, its streams.
export {
  loadSnapshot,
  RAM_VMSTATE,
  type RamImage,
  SNAPSHOT_FORMAT_VERSION,
  SNAPSHOT_FORMAT_VERSIONS_READ,
  SnapshotError,
  type SnapshotInfo,
  type SnapshotMachine,
  type SnapshotReader,
  type SnapshotSink,
  type SnapshotSource,
  type SnapshotWriter,
  saveSnapshot,
  snapshotInfo,
  type VarraySource,
  VarrayView,
  VMState,
  type VMStateCustomField,
  type VMStateDescription,
  type VMStateElementType,
  type VMStateField,
  type VMStateInfo,
  type VMStateLoaded,
  type VMStateScalarField,
  type VMStateScalarType,
  type VMStateSection,
  type VMStateSubsection,
  type VMStateVarrayField,
  VmstateRegistry,
  varrayOf,
  writeSnapshot,
} from './vmstate/index.js';
