import { describe, expect, it } from 'vitest';
import { PluginError } from '../src/errors.js';
import { definePlugin, orderPlugins, type Plugin, validatePlugin } from '../src/plugin.js';

const plugin = (name: string, ...requires: string[]): Plugin => ({ name, requires, register: () => {} });
const names = (plugins: readonly Plugin[]) => plugins.map((p) => p.name);

describe('definePlugin', () => {
  it('builds plugins from options', () => {
    const spaprIommu = definePlugin((options: { pageShift: number }) => ({
      name: 'spapr-iommu',
      register: () => {},
      pageShift: options.pageShift,
    }));
    const built = spaprIommu({ pageShift: 16 });
    expect(built.name).toBe('spapr-iommu');
    expect((built as Plugin & { pageShift: number }).pageShift).toBe(16);
  });

  it('lets an all-optional plugin be called without options', () => {
    const rtasDdw = definePlugin((options: { extensions?: number } | undefined) => ({
      name: `rtas-ddw-${options?.extensions ?? 2}`,
      register: () => {},
    }));
    expect(rtasDdw().name).toBe('rtas-ddw-2');
    expect(rtasDdw({ extensions: 1 }).name).toBe('rtas-ddw-1');
  });

  it('validates what the factory returns, naming the plugin', () => {
    const nameless = definePlugin(() => ({ name: '', register: () => {} }));
    expect(nameless).toThrow(/a plugin has no name/);
    const noRegister = definePlugin(() => ({ name: 'broken' }) as unknown as Plugin);
    expect(noRegister).toThrow(/plugin "broken" has no register\(ctx\) function/);
    const badRequires = definePlugin(() => ({ name: 'odd', requires: [''], register: () => {} }));
    expect(badRequires).toThrow(PluginError);
    expect(() => validatePlugin(null as unknown as Plugin)).toThrow(/returned null/);
    expect(() => definePlugin('nope' as unknown as () => Plugin)).toThrow(PluginError);
  });
});

describe('orderPlugins', () => {
  it('puts each plugin after its requirements', () => {
    const ordered = orderPlugins([
      plugin('rtas-ddw', 'spapr-pci'),
      plugin('spapr-pci', 'spapr-iommu'),
      plugin('spapr-iommu'),
    ]);
    expect(names(ordered)).toEqual(['spapr-iommu', 'spapr-pci', 'rtas-ddw']);
  });

  it('keeps the given order where nothing constrains it', () => {
    expect(names(orderPlugins([plugin('c'), plugin('a'), plugin('b')]))).toEqual(['c', 'a', 'b']);
    expect(
      names(orderPlugins([plugin('x'), plugin('pci', 'iommu'), plugin('y'), plugin('iommu'), plugin('z')])),
    ).toEqual(['x', 'y', 'iommu', 'pci', 'z']);
  });

  it('does not modify its input', () => {
    const input = [plugin('b', 'a'), plugin('a')];
    orderPlugins(input);
    expect(names(input)).toEqual(['b', 'a']);
  });

  it('names a missing requirement and how to add it', () => {
    const attempt = () => orderPlugins([plugin('spapr-pci', 'spapr-iommu')]);
    expect(attempt).toThrow(
      'plugin "spapr-pci" requires "spapr-iommu", which is not in the machine; add spapr-iommu() to the plugin list',
    );
    try {
      attempt();
    } catch (error) {
      expect(error).toMatchObject({ plugin: 'spapr-pci', kind: 'missing-requirement' });
    }
  });

  it('names a duplicate plugin', () => {
    expect(() => orderPlugins([plugin('spapr-iommu'), plugin('x'), plugin('spapr-iommu')])).toThrow(
      /plugin "spapr-iommu" appears more than once/,
    );
  });

  it('names the cycle path', () => {
    expect(() => orderPlugins([plugin('a', 'b'), plugin('b', 'a')])).toThrow(/a -> b -> a/);
    expect(() => orderPlugins([plugin('ok'), plugin('p', 'q'), plugin('q', 'r'), plugin('r', 'q')])).toThrow(
      /q -> r -> q/,
    );
    expect(() => orderPlugins([plugin('self', 'self')])).toThrow(/self -> self/);
  });
});
