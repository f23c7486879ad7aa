import type { MtreeReport, RunReport } from '@ddw/cli/browser';

/** A machine as the form gives it: the CLI's QEMU options, --qemu, --guest and --host. */
export interface MachineInput {
  qemu: string;
  /** `--qemu`; empty: not given. */
  qemuVersion: string;
  /** `--guest`; empty: not given. */
  guest: string;
  /** `--host`; empty: not given. */
  host: string;
}

export type Request =
  | { id: number; kind: 'run'; machine: MachineInput }
  | { id: number; kind: 'replay'; file: Blob; name: string; qemu: string; host: string; qemuVersion: string }
  | { id: number; kind: 'snapshot-save'; machine: MachineInput }
  | { id: number; kind: 'snapshot-load'; machine: MachineInput; bytes: ArrayBuffer; name: string }
  /** The machine run again with a timeline recorder: its trace-event JSON. */
  | { id: number; kind: 'timeline'; machine: MachineInput }
  /** The last run's trace lines the patterns select (QEMU's -trace rules), at most `max`. */
  | { id: number; kind: 'trace-filter'; patterns: string[]; max: number };

/** A window's TCE table, summarised by runs: occupancy per bucket and the RAM it maps. */
export interface WindowPicture {
  liobn: string;
  busOffset: string;
  pageShift: number;
  entries: number;
  /** Entries per bucket of `buckets` (the last may hold fewer). */
  bucketSize: number;
  /** Non-zero entries per bucket. */
  buckets: number[];
  /** What the window maps: guest RAM ranges and their bus addresses (hex), merged by runs. */
  ram: { ram: string; bus: string; size: string }[];
  /** More ranges than were kept. */
  ramTruncated: boolean;
}

export interface PhbPicture {
  index: number;
  id: string;
  buid: string;
  dmaWinAddr: string;
  dmaWinSize: string;
  dma64WinAddr: string;
  ddw: boolean;
  windows: WindowPicture[];
}

export interface RunResult {
  report: RunReport;
  /** The report as `ddw run` prints it. */
  text: string;
  phbs: PhbPicture[];
  mtree: MtreeReport;
  /** How many trace lines the run printed, and how many the worker keeps (for trace-filter). */
  traceTotal: number;
  traceKept: number;
  /** The first lines, shown before any filter. */
  traceShown: string[];
  /** What the CLI would print on stderr (warnings). */
  stderr: string;
}

export type Reply =
  /** Sent once when the worker starts (id 0): the choices the form offers. */
  | { id: 0; kind: 'ready'; qemuVersions: string[]; guests: string[] }
  | { id: number; kind: 'trace'; lines: string[]; matched: number }
  | { id: number; kind: 'progress'; step: string; done: number; total: number }
  | { id: number; kind: 'error'; message: string }
  | { id: number; kind: 'text'; text: string }
  | { id: number; kind: 'run'; result: RunResult }
  | { id: number; kind: 'replay'; summary: string; diff: string; stderr: string; code: number }
  | { id: number; kind: 'snapshot-save'; bytes: Uint8Array; text: string }
  | { id: number; kind: 'snapshot-load'; text: string }
  | { id: number; kind: 'timeline'; json: string; events: number; dropped: number };
