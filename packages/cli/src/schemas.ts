import { linuxGuestSection } from '@ddw/guest-linux';
import { DescriptionSchemaRegistry } from '@ddw/machine';
import { machineType, PRESET_NAMES, pseriesPlugins } from '@ddw/pseries';
import * as z from 'zod';
import { UsageError } from './configuration.js';
import { mtreeReportSchema } from './mtree-report.js';
import { replayReportSchema } from './replay-report.js';
import { runReportSchema } from './run.js';
import { snapshotInfoReportSchema } from './snapshot.js';

/** The machine description's schema: the kernel's keys and every section the pseries plugins declare. */
function descriptionSchema(): z.ZodType {
  const registry = new DescriptionSchemaRegistry();
  const type = machineType('pseries');
  for (const plugin of [
    ...pseriesPlugins({ type: type.name, ram: type.defaultRam, accel: 'tcg' }),
    linuxGuestSection(),
  ]) {
    for (const [key, schema] of Object.entries(plugin.sections ?? {}))
      registry.registerSection(key, schema, plugin.name);
  }
  // Read by the configuration layers, not by a plugin: the preset a file was written over.
  registry.registerSection('preset', z.enum(PRESET_NAMES).optional(), 'configuration');
  return registry.schema();
}

const SCHEMAS: Readonly<Record<string, { title: string; schema: () => z.ZodType; io: 'input' | 'output' }>> =
  {
    description: { title: 'ddw machine description', schema: descriptionSchema, io: 'input' },
    run: { title: 'ddw run --json', schema: () => runReportSchema, io: 'output' },
    replay: { title: 'ddw replay --json', schema: () => replayReportSchema, io: 'output' },
    'snapshot-info': {
      title: 'ddw snapshot info --json',
      schema: () => snapshotInfoReportSchema,
      io: 'output',
    },
    mtree: { title: 'ddw info mtree --json', schema: () => mtreeReportSchema, io: 'output' },
  };

export function schemaNames(): string[] {
  return Object.keys(SCHEMAS);
}

/** `ddw schema NAME`: a JSON Schema (draft 2020-12) generated from the zod schema the code uses. */
export function schemaOf(name: string): Record<string, unknown> {
  const entry = SCHEMAS[name];
  if (!entry) throw new UsageError(`no schema "${name}"; the schemas are ${schemaNames().join(', ')}`);
  const schema = z.toJSONSchema(entry.schema(), { io: entry.io, unrepresentable: 'any' }) as Record<
    string,
    unknown
  >;
  return { title: entry.title, ...(name === 'description' ? asOverlay(schema) : withoutBigint(schema)) };
}

/**
 * The machine's schema as a description FILE must follow: a file is an overlay merged over a
 * preset, so no field is required, and `phbs`/`devices` entries may be `{ "id": ..., "remove": true }`.
 */
function asOverlay(node: unknown): Record<string, unknown> {
  const walk = (value: unknown, key?: string): unknown => {
    if (Array.isArray(value)) return value.map((v) => walk(v));
    if (value === null || typeof value !== 'object') return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (k === 'required') continue;
      out[k] = walk(v, k);
    }
    if ((key === 'devices' || key === 'phbs') && typeof out.items === 'object' && out.items !== null) {
      const items = out.items as { properties?: Record<string, unknown> };
      items.properties = {
        ...items.properties,
        remove: { type: 'boolean', description: 'remove the entry with this id from the preset' },
      };
    }
    return out;
  };
  return withoutBigint(walk(node) as Record<string, unknown>);
}

/** JSON has no bigint: the API's bigint alternative (rendered as an any-schema `{}`) is dropped. */
function withoutBigint(node: Record<string, unknown>): Record<string, unknown> {
  const walk = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(walk);
    if (value === null || typeof value !== 'object') return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] =
        k === 'anyOf' && Array.isArray(v)
          ? v.filter((alt) => Object.keys(alt as object).length > 0).map(walk)
          : walk(v);
    }
    return out;
  };
  return walk(node) as Record<string, unknown>;
}
