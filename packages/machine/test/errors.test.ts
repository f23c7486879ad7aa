import { describe, expect, it } from 'vitest';
import { ConfigError, DdwError, DeviceError, messageOf, PluginError } from '../src/errors.js';

describe('error hierarchy', () => {
  it('DdwError carries a code and an optional cause', () => {
    const cause = new Error('inner');
    const error = new DdwError('SOMETHING', 'it broke', { cause });
    expect(error).toBeInstanceOf(Error);
    expect(error.name).toBe('DdwError');
    expect(error.code).toBe('SOMETHING');
    expect(error.message).toBe('it broke');
    expect(error.cause).toBe(cause);
    expect(new DdwError('X', 'no cause').cause).toBeUndefined();
  });

  it('ConfigError names the field, the problem and the fix', () => {
    const error = new ConfigError(
      'ram',
      '"2X" is not a size',
      'write a number with an optional K/M/G/T/P/E suffix, e.g. "2G"',
    );
    expect(error).toBeInstanceOf(DdwError);
    expect(error.name).toBe('ConfigError');
    expect(error.code).toBe('CONFIG');
    expect(error.message).toBe(
      'machine description: ram: "2X" is not a size; write a number with an optional K/M/G/T/P/E suffix, e.g. "2G"',
    );
    expect(error).toMatchObject({
      field: 'ram',
      problem: '"2X" is not a size',
      subject: 'machine description',
    });
    expect(new ConfigError('/x', 'no such node', undefined, { subject: 'device tree' }).message).toBe(
      'device tree: /x: no such node',
    );
  });

  it('ConfigError.fromIssues lists every failing field', () => {
    const error = ConfigError.fromIssues([
      { field: 'ram', problem: 'is required', fix: 'give a size' },
      { field: 'phbs[0].dma_win_size', problem: '"x" is not a size' },
    ]);
    expect(error.field).toBe('ram');
    expect(error.issues).toHaveLength(2);
    expect(error.message).toBe(
      'machine description: 2 problems\n  ram: is required; give a size\n  phbs[0].dma_win_size: "x" is not a size',
    );
    expect(() => ConfigError.fromIssues([])).toThrow(DdwError);
  });

  it('PluginError names the plugin in each kind of failure', () => {
    const missing = PluginError.missingRequirement('spapr-pci', 'spapr-iommu');
    expect(missing.message).toBe(
      'plugin "spapr-pci" requires "spapr-iommu", which is not in the machine; add spapr-iommu() to the plugin list',
    );
    expect(missing).toMatchObject({
      name: 'PluginError',
      code: 'PLUGIN',
      plugin: 'spapr-pci',
      kind: 'missing-requirement',
    });
    expect(PluginError.duplicate('rtas-ddw').message).toMatch(/^plugin "rtas-ddw" appears more than once/);
    const cycle = PluginError.cycle(['a', 'b', 'a']);
    expect(cycle.plugin).toBe('a');
    expect(cycle.message).toContain('a -> b -> a');
    const cause = new TypeError('boom');
    const failed = PluginError.registerFailed('vfio', cause);
    expect(failed.message).toBe('plugin "vfio" failed to register: boom');
    expect(failed.cause).toBe(cause);
  });

  it('DeviceError names the device and phase and wraps the cause', () => {
    const cause = new Error('no host window');
    const error = new DeviceError('vfio0', 'realize', cause);
    expect(error).toBeInstanceOf(DdwError);
    expect(error).toMatchObject({ name: 'DeviceError', code: 'DEVICE', device: 'vfio0', phase: 'realize' });
    expect(error.message).toBe('device "vfio0" failed to realize: no host window');
    expect(error.cause).toBe(cause);
    const withRollback = new DeviceError('b', 'realize', cause, [new Error('a would not let go')]);
    expect(withRollback.message).toContain('(and 1 more while rolling back: a would not let go)');
  });

  it('messageOf reads errors and anything else thrown', () => {
    expect(messageOf(new Error('x'))).toBe('x');
    expect(messageOf('plain')).toBe('plain');
    expect(messageOf(42)).toBe('42');
  });
});
