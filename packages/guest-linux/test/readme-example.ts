import { LinuxGuest } from '@ddw/guest-linux';
import { buildPseries } from '@ddw/pseries';

// QEMU 7.2's pseries, 4 GiB, one NIC; the PHB offers only 4K and 64K IOMMU pages.
const machine = await buildPseries(
  '-M pseries -m 4G -global spapr-pci-host-bridge.pgsz=0x11000 -device e1000e',
);
const guest = new LinuxGuest(machine.guest); // linux-6.1, 64K PAGE_SIZE
guest.boot(); // clears the 1 GiB default window: 512 x H_STUFF_TCE of 512
const [nic] = guest.probeAll(); // e1000e sets a 64-bit mask: query, create, populate

const { mode, window } = nic!;
console.log(
  `${mode}: LIOBN 0x${window.liobn.toString(16)} at 0x${window.busOffset.toString(16)}, 2^${window.pageShift}-byte pages`,
);
console.log(guest.decisions()[0]!.reasons.join('\n'));
console.log(JSON.stringify(guest.hypercallCounts()));

// Direct DMA: the device's address is the guest physical address plus the window's address.
const bus = guest.dmaMap(nic!.fn, 0x1230000n, 4096, 'to-device')!;
console.log(`0x${bus.toString(16)}`);
machine.dispose();
