/**
 * The layout rules of the repository (README "Layout"), checked on the sources: what a reviewer
 * would otherwise have to remember. Each rule names the files that break it.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { buildPseries } from '@ddw/pseries';
import { describe, expect, it } from 'vitest';
// Internal to @ddw/machine: which classes are decorated and which were handed to a container.
import { classesProvidedToContainers, injectableClasses } from '../packages/machine/src/di.js';

const root = new URL('..', import.meta.url).pathname;
const packages = readdirSync(join(root, 'packages')).filter((p) =>
  statSync(join(root, 'packages', p)).isDirectory(),
);

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sources(path));
    else if (/\.tsx?$/.test(entry.name)) out.push(path);
  }
  return out;
}

const files = packages.flatMap((p) => sources(join(root, 'packages', p, 'src')).map((f) => ({ pkg: p, f })));
const rel = (f: string) => f.slice(root.length);

describe('repository layout', () => {
  it('keeps every source file at 700 lines or fewer', () => {
    const long = files
      .map(({ f }) => ({ f: rel(f), lines: readFileSync(f, 'utf8').split('\n').length }))
      .filter((x) => x.lines > 700);
    expect(long).toEqual([]);
  });

  it('re-exports nothing wholesale: no `export *` in package sources', () => {
    const wholesale = files
      .filter(({ f }) => /^export \* from/m.test(readFileSync(f, 'utf8')))
      .map(({ f }) => rel(f));
    expect(wholesale).toEqual([]);
  });

  it('imports tsyringe only in the DI facade of @ddw/machine', () => {
    const importers = files
      .filter(({ f }) => /from 'tsyringe'/.test(readFileSync(f, 'utf8')))
      .map(({ f }) => rel(f));
    expect(importers).toEqual(['packages/machine/src/di.ts']);
  });

  it('imports other packages only through their declared dependencies', () => {
    const undeclared: string[] = [];
    for (const pkg of packages) {
      const manifest = JSON.parse(readFileSync(join(root, 'packages', pkg, 'package.json'), 'utf8'));
      const declared = new Set([
        ...Object.keys(manifest.dependencies ?? {}),
        ...Object.keys(manifest.peerDependencies ?? {}),
      ]);
      for (const { f } of files.filter((x) => x.pkg === pkg)) {
        for (const [, name] of readFileSync(f, 'utf8').matchAll(/from '(@ddw\/[a-z-]+)/g)) {
          if (name !== manifest.name && !declared.has(name!)) undeclared.push(`${rel(f)} -> ${name}`);
        }
      }
    }
    expect([...new Set(undeclared)]).toEqual([]);
  });

  it('keeps QEMU-side VFIO free of sPAPR PCI and of the simulated host', () => {
    const manifest = JSON.parse(readFileSync(join(root, 'packages/vfio-common/package.json'), 'utf8'));
    expect(Object.keys(manifest.dependencies ?? {})).not.toContain('@ddw/spapr-pci');
    expect(Object.keys(manifest.dependencies ?? {})).not.toContain('@ddw/host-linux');
  });
});

describe('the DI assembly', () => {
  it('has the container construct every @injectable class of every package', async () => {
    // A machine with every plugin: a DDW PHB, an emulated device, VFIO on a v2 host, pre-registration.
    const m = await buildPseries(
      '-M pseries -m 4G -device e1000e,id=nic0 -device vfio-pci,host=0000:01:00.0,id=hostnic',
    );
    try {
      const provided = classesProvidedToContainers();
      const notByContainer = injectableClasses()
        .filter((cls) => !provided.has(cls))
        .map((cls) => cls.name);
      expect(notByContainer).toEqual([]);
    } finally {
      m.dispose();
    }
  });
});
