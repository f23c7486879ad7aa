import { formatReport, type RunReport, runMachine, runReportSchema } from '@ddw/cli';
import { describe, expect, it } from 'vitest';
import { runDdw } from './support/ddw-program.js';

/** The run's only PE decision, after checking the report against its schema. */
function decision(r: RunReport) {
  runReportSchema.parse(r);
  expect(r.guest!.decisions).toHaveLength(1);
  return r.guest!.decisions[0]!;
}

/** The text report's guest lines for the PE: the PE line, then the summary, then the reasons. */
function peLines(r: RunReport): string[] {
  const lines = formatReport(r).split('\n');
  const at = lines.findIndex((l) => l.startsWith('  PE '));
  return lines.slice(at, at + 3);
}

describe('ddw run explains the guest decision in one line', () => {
  it('linux-6.12 without maxmem: lrdr-capacity 0, create -3, give maxmem', async () => {
    const r = await runMachine({ qemuArgs: '-M pseries -m 2G -device e1000e', guest: 'linux-6.12' });
    const d = decision(r);
    expect(d.outcome).toBe('failed');
    expect(d.summary).toBe(
      'no DDW: Linux 6.12 sizes the window from ibm,lrdr-capacity, which is 0 without maxmem; create ' +
        'returned -3 (parameter error); the devices use the 1 GiB default window. Give maxmem ' +
        '(-m 2G,maxmem=4G,slots=2) for a direct window',
    );
    // The summary comes first under the PE line, the reasons after it.
    expect(peLines(r)).toEqual([
      '  PE /pci@800000020000000 (BUID 0x800000020000000): failed',
      `    ${d.summary}`,
      `    - ${d.reasons[0]}`,
    ]);
    expect(r.guest!.devices.map((dev) => dev.mode)).toEqual(['default']);
    // The fix works: with maxmem the same guest gets a direct window.
    const fixed = await runMachine({
      qemuArgs: '-M pseries -m 2G,maxmem=4G,slots=2 -device e1000e',
      guest: 'linux-6.12',
    });
    expect(decision(fixed).outcome).toBe('direct');
    expect(decision(fixed).summary).toMatch(
      /^direct window: Linux 6\.12 mapped RAM up to 4 GiB \(ibm,lrdr-capacity/,
    );
  });

  it('ddw=off, a page size the guest cannot use, no free window (4.x), pseries-2.7', async () => {
    const cases: [string, 'linux-6.1' | 'linux-4.x' | 'linux-6.12', string, RegExp][] = [
      [
        '-M pseries -m 2G -device e1000e -global spapr-pci-host-bridge.ddw=off',
        'linux-6.1',
        'failed',
        /^no DDW: the PHB offers none \(no ibm,ddw-applicable .*ddw=off.*\); the devices use the 1 GiB default window\. Turn DDW on/,
      ],
      [
        '-M pseries -m 2G -device e1000e -global spapr-pci-host-bridge.pgsz=0x200000',
        'linux-4.x',
        'failed',
        /^no DDW: the query offers only 2M pages \(mask 0x100\), none of which Linux 4\.x uses .*pgsz=0x1011000/,
      ],
      [
        '-M pseries -m 2G -device e1000e -global spapr-pci-host-bridge.x-ddw-windows=1',
        'linux-4.x',
        'failed',
        /^no DDW: the query says 0 windows available and Linux 4\.x never removes the default window.*drop x-ddw-windows=1/,
      ],
      [
        '-M pseries -m 2G -device e1000e -global spapr-pci-host-bridge.x-ddw-windows=1',
        'linux-6.1',
        'direct',
        /^direct window, default window removed: the query said 0 windows available .* \(remove returned 0\) .*LIOBN 0x80000000 at 0x0/,
      ],
      [
        '-M pseries-2.7 -m 2G -device e1000e',
        'linux-6.1',
        'direct',
        /in 64K pages, the largest of 4K, 64K the query offers \(a 5-output query: .*QEMU 2\.7/,
      ],
      [
        '-M pseries -m 1G,maxmem=16T,slots=1 -global spapr-pci-host-bridge.pgsz=0x1000 -device e1000e',
        'linux-6.1',
        'failed',
        /^no DDW: Linux 6\.1 asked for a window of 2\^44 bytes \(16 TiB\) in 4K pages; create returned -1 .*2\^32 TCEs/,
      ],
    ];
    for (const [qemuArgs, guest, outcome, summary] of cases) {
      const r = await runMachine({ qemuArgs, guest });
      const d = decision(r);
      expect(d.outcome, qemuArgs).toBe(outcome);
      expect(d.summary, qemuArgs).toMatch(summary);
      expect(peLines(r)[1]).toBe(`    ${d.summary}`);
      expect(r.dma.failedBytes).toBe(0);
    }
  });

  it('the CLI prints the summary in the text report and in --json', async () => {
    const args = ['run', '-M', 'pseries', '-m', '2G', '-device', 'e1000e', '--guest', 'linux-6.12'];
    const text = await runDdw(...args);
    expect(text.code).toBe(0);
    expect(text.out).toContain(
      '  PE /pci@800000020000000 (BUID 0x800000020000000): failed\n' +
        '    no DDW: Linux 6.12 sizes the window from ibm,lrdr-capacity, which is 0 without maxmem;',
    );
    const json = await runDdw(...args, '--json');
    const report = runReportSchema.parse(JSON.parse(json.out));
    expect(report.guest!.decisions[0]!.summary).toContain('Give maxmem (-m 2G,maxmem=4G,slots=2)');
  });

  it('the default machine: a direct window, said in one line', async () => {
    const d = decision(await runMachine());
    expect(d.summary).toBe(
      'direct window: Linux 6.12 mapped RAM up to 8 GiB (ibm,lrdr-capacity: maxmem) 1:1 into LIOBN ' +
        '0x80000001 at 0x800000000000000: 2^33 bytes (8 GiB) in 16M pages, the largest of 4K, 64K, 2M, ' +
        '16M the query offers; device address = guest address + 0x800000000000000',
    );
  });
});
