/**
 * Saving a machine to a file and loading it back through @ddw/machine's public API: the streaming
 * API (writeSnapshot(machine, sink) and loadSnapshot(machine, {size, read(offset, length)})) when
 * the package exports it, else the bytes API (saveSnapshot(machine): Uint8Array and
 * loadSnapshot(machine, bytes)) with fs around it.
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import type { Machine } from '@ddw/machine';
import * as machineApi from '@ddw/machine';

/** Where writeSnapshot puts the stream, chunk after chunk. */
interface SnapshotSink {
  write(chunk: Uint8Array): void | Promise<void>;
}

/** Where the streaming loadSnapshot reads a snapshot of `size` bytes from. */
interface SnapshotSource {
  size: number;
  read(offset: number, length: number): Uint8Array;
}

interface StreamingApi {
  writeSnapshot(machine: Machine, sink: SnapshotSink): void | Promise<void>;
  loadSnapshot(machine: Machine, source: SnapshotSource): void | Promise<void>;
}

const exported = machineApi as unknown as Partial<StreamingApi>;
const streaming: StreamingApi | undefined =
  typeof exported.writeSnapshot === 'function' ? (exported as StreamingApi) : undefined;

/** Which API the benchmarks use: 'stream' or 'bytes'. */
export const snapshotApi = streaming ? 'stream' : 'bytes';

export async function saveToFile(machine: Machine, path: string): Promise<void> {
  if (!streaming) {
    writeFileSync(path, machineApi.saveSnapshot(machine));
    return;
  }
  const fd = openSync(path, 'w');
  try {
    await streaming.writeSnapshot(machine, {
      write(chunk) {
        for (let at = 0; at < chunk.length; ) at += writeSync(fd, chunk, at);
      },
    });
  } finally {
    closeSync(fd);
  }
}

export async function loadFromFile(machine: Machine, path: string): Promise<void> {
  if (!streaming) {
    machineApi.loadSnapshot(machine, readFileSync(path));
    return;
  }
  const fd = openSync(path, 'r');
  try {
    await streaming.loadSnapshot(machine, {
      size: fstatSync(fd).size,
      read(offset, length) {
        const out = new Uint8Array(length);
        for (let got = 0; got < length; ) {
          const n = readSync(fd, out, got, length - got, offset + got);
          if (n === 0) throw new Error(`${path}: short read at ${offset + got}`);
          got += n;
        }
        return out;
      },
    });
  } finally {
    closeSync(fd);
  }
}
