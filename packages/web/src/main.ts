import type { RunReport } from '@ddw/cli/browser';
import {
  busPicture,
  heatPicture,
  hostPicture,
  mtreePicture,
  negotiationPicture,
  ramPicture,
} from './pictures.js';
import type { MachineInput, Reply, Request } from './protocol.js';

/** A request before it has an id. */
type Unsent = Request extends infer R ? (R extends Request ? Omit<R, 'id'> : never) : never;

declare global {
  interface Window {
    /** The object `ddw run --json` prints for the machine on the page. */
    ddwReport?: RunReport;
  }
}

function $<T extends Element>(selector: string): T {
  const node = document.querySelector<T>(selector);
  if (!node) throw new Error(`the page has no ${selector}`);
  return node;
}

const qemuBox = $<HTMLTextAreaElement>('textarea[data-input="qemu"]');
const versionSelect = $<HTMLSelectElement>('select[data-input="qemu-version"]');
const guestSelect = $<HTMLSelectElement>('select[data-input="guest"]');
const hostInput = $<HTMLInputElement>('input[data-input="host"]');
const errorOut = $<HTMLElement>('[data-output="error"]');
const progress = $<HTMLProgressElement>('[data-output="progress"]');
const stepOut = $<HTMLElement>('[data-output="step"]');
const reportOut = $<HTMLElement>('[data-output="report"]');
const traceFilter = $<HTMLInputElement>('input[data-input="trace-filter"]');
const tracePre = $<HTMLElement>('[data-picture="trace"] pre');
const traceNote = $<HTMLElement>('[data-picture="trace"] .note');
const replayFile = $<HTMLInputElement>('input[data-input="replay-trace"]');
const replayQemu = $<HTMLInputElement>('input[data-input="replay-qemu"]');
const replaySummary = $<HTMLElement>('[data-output="replay-summary"]');
const replayDiff = $<HTMLElement>('[data-output="replay-diff"]');
const snapshotFile = $<HTMLInputElement>('input[data-input="snapshot-file"]');
const snapshotOut = $<HTMLElement>('[data-output="snapshot"]');

const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' });
let nextId = 1;
const pending = new Map<number, (reply: Reply) => void>();
worker.onmessage = (event: MessageEvent<Reply>) => {
  const reply = event.data;
  if (reply.kind === 'ready') ready(reply.qemuVersions, reply.guests);
  else pending.get(reply.id)?.(reply);
};

/** The worker has started: the form gets its choices (from @ddw/cli) and the URL's machine runs. */
const params = new URLSearchParams(location.search);
qemuBox.value = params.get('qemu') ?? '';
hostInput.value = params.get('host') ?? '';

function ready(qemuVersions: string[], guests: string[]): void {
  const option = (value: string, text = value) =>
    Object.assign(document.createElement('option'), { value, text });
  versionSelect.append(option('', 'default (10.0)'), ...qemuVersions.map((v) => option(v)));
  guestSelect.append(option('', 'default (linux-6.12)'), ...guests.map((g) => option(g)));

  // The form from the URL: ?qemu=...&guest=...&host=...&qemuVersion=...
  const setSelect = (select: HTMLSelectElement, value: string | null) => {
    if (value === null) return;
    if (![...select.options].some((o) => o.value === value)) select.append(option(value));
    select.value = value;
  };
  setSelect(versionSelect, params.get('qemuVersion'));
  setSelect(guestSelect, params.get('guest'));
  run();
}

/** Sends a request; `onReply` gets every reply (progress too) until it returns true. */
function ask(request: Unsent, onReply: (reply: Reply) => boolean, transfer: Transferable[] = []): void {
  const id = nextId++;
  pending.set(id, (reply) => {
    if (onReply(reply)) pending.delete(id);
  });
  worker.postMessage({ ...request, id }, transfer);
}

function machineInput(): MachineInput {
  return {
    qemu: qemuBox.value.trim(),
    qemuVersion: versionSelect.value,
    guest: guestSelect.value,
    host: hostInput.value.trim(),
  };
}

function updateUrl(m: MachineInput): void {
  const p = new URLSearchParams();
  if (m.qemu !== '') p.set('qemu', m.qemu);
  if (m.guest !== '') p.set('guest', m.guest);
  if (m.host !== '') p.set('host', m.host);
  if (m.qemuVersion !== '') p.set('qemuVersion', m.qemuVersion);
  const query = p.toString();
  history.replaceState(null, '', query === '' ? location.pathname : `?${query}`);
}

function place(id: string, node: Element | undefined): void {
  const host = $<HTMLElement>(`#${id}`);
  host.replaceChildren(...(node ? [node] : []));
}

/** Lines shown at most; the worker keeps the run's lines and filters them (QEMU's -trace rules). */
const TRACE_SHOWN = 5000;
let traceNoteTail = '';
function showTrace(): void {
  const patterns = traceFilter.value.split(/\s+/).filter((w) => w !== '');
  ask({ kind: 'trace-filter', patterns, max: TRACE_SHOWN }, (reply) => {
    if (reply.kind === 'trace') {
      tracePre.textContent = reply.lines.join('\n');
      traceNote.textContent = `${reply.matched} line(s)${reply.matched > TRACE_SHOWN ? `, the first ${TRACE_SHOWN} shown` : ''}${traceNoteTail}`;
    } else if (reply.kind === 'error') traceNote.textContent = reply.message;
    return true;
  });
}
traceFilter.addEventListener('input', showTrace);

function run(): void {
  const m = machineInput();
  updateUrl(m);
  document.body.dataset.status = 'running';
  errorOut.textContent = '';
  progress.hidden = false;
  progress.removeAttribute('value');
  stepOut.textContent = 'building';
  window.ddwReport = undefined;
  ask({ kind: 'run', machine: m }, (reply) => {
    switch (reply.kind) {
      case 'progress':
        progress.max = reply.total;
        progress.value = reply.done;
        stepOut.textContent = reply.step;
        return false;
      case 'error':
        errorOut.textContent = reply.message;
        document.body.dataset.status = 'failed';
        break;
      case 'text':
        reportOut.textContent = reply.text;
        document.body.dataset.status = 'ok';
        break;
      case 'run': {
        const r = reply.result;
        window.ddwReport = r.report;
        reportOut.textContent = r.text;
        place('bus', busPicture(r.report, r.phbs));
        place('ram', ramPicture(r.report, r.phbs));
        place('heat', heatPicture(r.phbs));
        const host = hostPicture(r.report, r.phbs);
        place('host', host);
        $<HTMLElement>('#host-section').hidden = !host;
        place('negotiation', negotiationPicture(r.report, r.phbs));
        place('mtree', mtreePicture(r.mtree));
        traceNoteTail =
          r.traceTotal > r.traceKept ? ` (${r.traceTotal} traced, the first ${r.traceKept} kept)` : '';
        tracePre.textContent = r.traceShown.join('\n');
        traceNote.textContent = `${r.traceKept} line(s)${r.traceKept > r.traceShown.length ? `, the first ${r.traceShown.length} shown` : ''}${traceNoteTail}`;
        if (traceFilter.value.trim() !== '') showTrace();
        document.body.dataset.status = r.report.ok ? 'ok' : 'failed';
        if (!r.report.ok) errorOut.textContent = 'ddw: the run failed (see the report)';
        break;
      }
      default:
        return false;
    }
    progress.hidden = true;
    stepOut.textContent = '';
    return true;
  });
}

$<HTMLFormElement>('#machine').addEventListener('submit', (event) => {
  event.preventDefault();
  run();
});

function download(bytes: Uint8Array, name: string, type: string): void {
  const url = URL.createObjectURL(new Blob([bytes as BlobPart], { type }));
  const a = Object.assign(document.createElement('a'), { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// The timeline: the machine on the form run again with a recorder, as `ddw run --trace-json`.
const timelineButton = $<HTMLButtonElement>('button[data-action="timeline"]');
timelineButton.hidden = false;
timelineButton.disabled = false;
timelineButton.addEventListener('click', () => {
  timelineButton.disabled = true;
  ask({ kind: 'timeline', machine: machineInput() }, (reply) => {
    if (reply.kind === 'progress') return false;
    timelineButton.disabled = false;
    if (reply.kind === 'timeline') {
      download(new TextEncoder().encode(reply.json), 'ddw-timeline.json', 'application/json');
    } else if (reply.kind === 'error') errorOut.textContent = reply.message;
    return true;
  });
});

// Replay: a file (input or drop) and the traced run's QEMU options.
let dropped: File | undefined;
const drop = $<HTMLElement>('#drop');
drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  dropped = e.dataTransfer?.files[0];
  if (dropped) replaySummary.textContent = `${dropped.name}: ready`;
});
replayFile.addEventListener('change', () => {
  dropped = undefined;
});
$<HTMLButtonElement>('button[data-action="replay"]').addEventListener('click', () => {
  const file = replayFile.files?.[0] ?? dropped;
  if (!file) {
    replaySummary.textContent = 'choose or drop a QEMU trace first';
    return;
  }
  replaySummary.textContent = 'replaying...';
  replayDiff.textContent = '';
  const m = machineInput();
  ask(
    {
      kind: 'replay',
      file,
      name: file.name,
      qemu: replayQemu.value,
      host: m.host,
      qemuVersion: m.qemuVersion,
    },
    (reply) => {
      if (reply.kind === 'progress') return false;
      if (reply.kind === 'replay') {
        replaySummary.textContent = reply.summary;
        replayDiff.textContent = reply.stderr + reply.diff;
      } else if (reply.kind === 'error') {
        replaySummary.textContent = reply.message;
      } else if (reply.kind === 'text') {
        replayDiff.textContent = reply.text;
      }
      return true;
    },
  );
});

// Snapshots: save the machine on the form (negotiated), load one into a fresh machine of it.
$<HTMLButtonElement>('button[data-action="snapshot-save"]').addEventListener('click', () => {
  snapshotOut.textContent = 'saving...';
  ask({ kind: 'snapshot-save', machine: machineInput() }, (reply) => {
    if (reply.kind === 'progress') return false;
    if (reply.kind === 'snapshot-save') {
      snapshotOut.textContent = reply.text;
      download(reply.bytes, 'machine.ddws', 'application/octet-stream');
    } else if (reply.kind === 'error') snapshotOut.textContent = reply.message;
    else if (reply.kind === 'text') snapshotOut.textContent = reply.text;
    return true;
  });
});
snapshotFile.addEventListener('change', async () => {
  const file = snapshotFile.files?.[0];
  if (!file) return;
  snapshotOut.textContent = 'loading...';
  const bytes = await file.arrayBuffer();
  ask(
    { kind: 'snapshot-load', machine: machineInput(), bytes, name: file.name },
    (reply) => {
      if (reply.kind === 'progress') return false;
      if (reply.kind === 'snapshot-load' || reply.kind === 'text') snapshotOut.textContent = reply.text;
      else if (reply.kind === 'error') snapshotOut.textContent = reply.message;
      return true;
    },
    [bytes],
  );
});
