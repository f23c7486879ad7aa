import { linuxGuestSection } from '@ddw/guest-linux';
import { DescriptionSchemaRegistry } from '@ddw/machine';
import { machineType, PRESET_NAMES, pseriesPlugins } from '@ddw/pseries';
import { z } from 'zod';
import { UsageError } from './configure.js';
import { mtreeReportSchema } from './mtree-report.js';
import { replayReportSchema } from './replay.js';
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
  return {
    title: entry.title,
    ...z.toJSONSchema(entry.schema(), { io: entry.io, unrepresentable: 'any' }),
  };
}
