import { H_PUT_TCE } from '@ddw/machine';
import { describe, expect, it } from 'vitest';
import {
  VFIO_TRACE_EVENTS_7_2,
  VFIO_TRACE_EVENTS_10_0,
  type VfioQemuVersion,
  VfioTokens,
  vfioCommon,
} from '../src/index.js';
import { BUID, passthrough, rtas, W0, W1 } from './helpers.js';

const names = (text: string) =>
  text
    .trim()
    .split('\n')
    .map((l) => l.slice(0, l.indexOf('(')));

/**
 * The same guest traffic on each version: a passthrough machine boots, the guest maps and unmaps
 * one page of window 0, creates a DDW and removes it, then the device goes away.
 */
async function traffic(qemuVersion: VfioQemuVersion): Promise<string[]> {
  const { m, lines } = await passthrough('-M pseries-7.2 -m 2G', { qemuVersion });
  expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x7000n, 0x123000n | 3n).ret).toBe(0n);
  expect(m.guest.hcall(H_PUT_TCE, BigInt(W0), 0x7000n, 0n).ret).toBe(0n);
  expect(rtas(m, 'ibm,create-pe-dma-window', [0, ...BUID, 16, 32], 4)).toEqual([0, W1, 0x08000000, 0]);
  expect(rtas(m, 'ibm,remove-pe-dma-window', [W1], 1)).toEqual([0]);
  m.get(VfioTokens.Vfio).containers[0]!.detachGroup('0000:01:00.0');
  return lines;
}

describe('VFIO trace events per QEMU version', () => {
  it('declares the events each version has, and 7.2 by default', () => {
    expect(names(VFIO_TRACE_EVENTS_7_2)).toEqual([
      'vfio_iommu_map_notify',
      'vfio_listener_region_add_skip',
      'vfio_listener_region_add_iommu',
      'vfio_listener_region_del_skip',
      'vfio_listener_region_del',
      'vfio_spapr_create_window',
      'vfio_spapr_remove_window',
      'vfio_prereg_listener_region_add_skip',
      'vfio_prereg_listener_region_del_skip',
      'vfio_prereg_register',
      'vfio_prereg_unregister',
      'vfio_spapr_group_attach',
    ]);
    expect(names(VFIO_TRACE_EVENTS_10_0)).toEqual([
      'vfio_iommu_map_notify',
      'vfio_listener_region_skip',
      'vfio_spapr_group_attach',
      'vfio_listener_region_add_iommu',
      'vfio_listener_region_del_iommu',
      'vfio_listener_region_del',
      'vfio_spapr_create_window',
      'vfio_spapr_remove_window',
      'vfio_prereg_listener_region_add_skip',
      'vfio_prereg_listener_region_del_skip',
      'vfio_prereg_register',
      'vfio_prereg_unregister',
    ]);
  });

  it('prints QEMU 7.2 lines for the same traffic', async () => {
    expect(await traffic('7.2')).toEqual([
      'vfio_prereg_register va=0x7e0000000000 size=0x80000000 ret=0',
      'vfio_spapr_remove_window offset=0x0',
      'vfio_listener_region_add_skip SKIPPING region_add 0x40000000000 - 0x40000000fff',
      'vfio_spapr_create_window pageshift=0xc levels=1 winsize=0x40000000 offset=0x0',
      'vfio_listener_region_add_iommu region_add [iommu] 0x0 - 0x3fffffff',
      'vfio_iommu_map_notify iommu MAP @ 0x7000 - 0x7fff',
      'vfio_iommu_map_notify iommu UNMAP @ 0x7000 - 0x7fff',
      'vfio_spapr_create_window pageshift=0x10 levels=1 winsize=0x100000000 offset=0x800000000000000',
      'vfio_listener_region_add_iommu region_add [iommu] 0x800000000000000 - 0x8000000ffffffff',
      'vfio_listener_region_del region_del 0x800000000000000 - 0x8000000ffffffff',
      'vfio_spapr_remove_window offset=0x800000000000000',
      'vfio_listener_region_del region_del 0x0 - 0x3fffffff',
      'vfio_spapr_remove_window offset=0x0',
      'vfio_listener_region_del_skip SKIPPING region_del 0x40000000000 - 0x40000000fff',
      'vfio_prereg_unregister va=0x7e0000000000 size=0x80000000 ret=0',
    ]);
  });

  it('prints QEMU 10.0 lines for the same traffic: one skip event, region names, region_del [iommu]', async () => {
    expect(await traffic('10.0')).toEqual([
      'vfio_prereg_register va=0x7e0000000000 size=0x80000000 ret=0',
      'vfio_spapr_remove_window offset=0x0',
      'vfio_listener_region_skip SKIPPING region_add 0x40000000000 - 0x40000000fff',
      'vfio_spapr_create_window pageshift=0xc levels=1 winsize=0x40000000 offset=0x0',
      'vfio_listener_region_add_iommu region_add [iommu] iommu-spapr 0x0 - 0x3fffffff',
      'vfio_iommu_map_notify iommu MAP @ 0x7000 - 0x7fff',
      'vfio_iommu_map_notify iommu UNMAP @ 0x7000 - 0x7fff',
      'vfio_spapr_create_window pageshift=0x10 levels=1 winsize=0x100000000 offset=0x800000000000000',
      'vfio_listener_region_add_iommu region_add [iommu] iommu-spapr 0x800000000000000 - 0x8000000ffffffff',
      'vfio_listener_region_del_iommu region_del [iommu] iommu-spapr',
      'vfio_listener_region_del region_del 0x800000000000000 - 0x8000000ffffffff',
      'vfio_spapr_remove_window offset=0x800000000000000',
      'vfio_listener_region_del_iommu region_del [iommu] iommu-spapr',
      'vfio_listener_region_del region_del 0x0 - 0x3fffffff',
      'vfio_spapr_remove_window offset=0x0',
      'vfio_listener_region_skip SKIPPING region_del 0x40000000000 - 0x40000000fff',
      'vfio_prereg_unregister va=0x7e0000000000 size=0x80000000 ret=0',
    ]);
  });

  it('selects 7.2 by default, and QEMU-style patterns select each version by its own names', async () => {
    const plain = await passthrough('-M pseries-7.2 -m 2G', {}, ['vfio_listener_region_*_skip']);
    expect(plain.lines).toEqual([
      'vfio_listener_region_add_skip SKIPPING region_add 0x40000000000 - 0x40000000fff',
    ]);
    const v10 = await passthrough('-M pseries-7.2 -m 2G', { qemuVersion: '10.0' }, [
      'vfio_listener_region_*_skip',
    ]);
    expect(v10.lines).toEqual([]);
  });

  it('refuses a version it does not model, naming the option', () => {
    expect(() =>
      vfioCommon({ qemuVersion: '9.2' as VfioQemuVersion }).register({ description: {} } as never),
    ).toThrow(/vfio-common\.qemuVersion.*"9\.2" is not a QEMU version whose VFIO side ddw models/s);
  });
});
