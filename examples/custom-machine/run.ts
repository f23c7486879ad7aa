/**
 * Runs the custom machine: builds it, boots the Linux guest model, probes the PCI functions, moves
 * data both ways through each, and prints what happened. `npx tsx examples/custom-machine/run.ts`
 */
import { formatCustomReport, runCustomMachine } from './custom-machine.js';

const report = await runCustomMachine();
process.stdout.write(formatCustomReport(report));
if (!report.ok) process.exitCode = 1;
