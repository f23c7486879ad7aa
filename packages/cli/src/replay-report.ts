import * as z from 'zod';

/** The object `ddw replay --json` prints. */
export const replayReportSchema = z
  .object({
    schemaVersion: z.literal(1),
    kind: z.literal('replay'),
    /** The trace file replayed. */
    trace: z.string(),
    /** The selection used: the user's --trace patterns, or the default one. */
    patterns: z.array(z.string()),
    /** Whether the model was compared with the input (--check). */
    check: z.boolean(),
    /** With --check: the input lines in scope. */
    compared: z.number().int().nonnegative().optional(),
    /** With --check: lines only one side has (a lower bound when `exact` is false). */
    differ: z.number().int().nonnegative().optional(),
    /** With --check: false when the traces were too far apart to align (see `message`). */
    exact: z.boolean().optional(),
    /** With --check: the unified diff (`--- qemu`, `+++ ddw`, hunks); empty when nothing differs. */
    diff: z.string().optional(),
    /** With --check, when `exact` is false: why there is no diff. */
    message: z.string().optional(),
    /** Without --check: the model's lines the patterns select. */
    lines: z.array(z.string()).optional(),
    /** The first skipped input lines (at most 1000). */
    skipped: z.array(
      z.object({
        line: z.number().int().positive(),
        event: z.string(),
        reason: z.string(),
      }),
    ),
    /** How many input lines were skipped in all. */
    skippedTotal: z.number().int().nonnegative(),
  })
  .strict();

export type ReplayReport = z.infer<typeof replayReportSchema>;
