import type { MtreeRegion, MtreeReport, RunReport } from '@ddw/cli/browser';
import { formatHex } from '@ddw/memory';
import type { PhbPicture } from './protocol.js';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 960;
const LEFT = 150;
const PLOT = WIDTH - LEFT - 20;

type Attrs = Record<string, string | number>;

function el<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  text?: string,
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(picture: string, height: number): SVGSVGElement {
  const root = el('svg', { viewBox: `0 0 ${WIDTH} ${height}`, width: WIDTH, height, role: 'img' });
  root.dataset.picture = picture;
  return root;
}

function titled<T extends SVGElement>(node: T, title: string): T {
  node.append(el('title', {}, title));
  return node;
}

/** 1K, 64K, 16M, 8G, ... (the CLI's sizes). */
export function size(bytes: bigint): string {
  const units = ['', 'K', 'M', 'G', 'T', 'P', 'E'];
  let u = 0;
  let v = bytes;
  while (u < units.length - 1 && v >= 1024n && v % 1024n === 0n) {
    v /= 1024n;
    u++;
  }
  return `${v}${units[u]}`;
}

/** x of a bus address on a log2 scale over 64 bits (0 at the left edge). */
function logX(addr: bigint): number {
  const bits = addr === 0n ? 0 : addr.toString(2).length - 1 + fraction(addr);
  return LEFT + (bits / 64) * PLOT;
}

function fraction(addr: bigint): number {
  const len = addr.toString(2).length;
  const top = Number(addr >> BigInt(Math.max(0, len - 53)));
  return Math.log2(top) - Math.floor(Math.log2(top));
}

function logAxis(root: SVGSVGElement, y: number): void {
  root.append(el('line', { x1: LEFT, x2: LEFT + PLOT, y1: y, y2: y, class: 'axis' }));
  for (let b = 0; b <= 64; b += 8) {
    const x = LEFT + (b / 64) * PLOT;
    root.append(el('line', { x1: x, x2: x, y1: y, y2: y + 4, class: 'axis' }));
    root.append(
      el('text', { x, y: y + 16, class: 'tick', 'text-anchor': 'middle' }, b === 0 ? '0' : `2^${b}`),
    );
  }
}

/** The PCI bus address space of each PHB (log scale) with its DMA windows. */
export function busPicture(report: RunReport, phbs: PhbPicture[]): SVGSVGElement {
  const rows = phbs.reduce((n, p) => n + 1 + p.windows.length, 0);
  const root = svg('bus', 40 + rows * 26 + 30);
  let y = 24;
  for (const phb of phbs) {
    root.append(
      el('text', { x: 4, y: y + 4, class: 'label strong' }, `PHB ${phb.index} "${phb.id}"`),
      el(
        'text',
        { x: LEFT, y: y + 4, class: 'label' },
        `BUID ${phb.buid}; default window at ${phb.dmaWinAddr} (${size(BigInt(phb.dmaWinSize))}); DDW at ${phb.ddw ? phb.dma64WinAddr : 'off'}`,
      ),
    );
    const ddwX = logX(BigInt(phb.dma64WinAddr));
    if (phb.ddw)
      root.append(
        el('line', { x1: ddwX, x2: ddwX, y1: y + 8, y2: y + 8 + phb.windows.length * 26, class: 'marker' }),
      );
    y += 12;
    for (const w of phb.windows) {
      const start = BigInt(w.busOffset);
      const bytes = BigInt(w.entries) << BigInt(w.pageShift);
      const x1 = logX(start);
      const x2 = Math.max(logX(start + bytes), x1 + 3);
      const kind = start === BigInt(phb.dmaWinAddr) ? 'default' : 'ddw';
      root.append(
        el('text', { x: 4, y: y + 14, class: 'label' }, `LIOBN ${w.liobn}`),
        titled(
          el('rect', { x: x1, y: y + 2, width: x2 - x1, height: 16, class: `window ${kind}` }),
          `${w.busOffset} - ${formatHex(start + bytes - 1n)}`,
        ),
        el(
          'text',
          { x: Math.min(x2 + 6, WIDTH - 300), y: y + 14, class: 'label' },
          `${w.busOffset}: ${size(bytes)} in ${size(1n << BigInt(w.pageShift))} pages, ${w.entries} TCEs`,
        ),
      );
      y += 26;
    }
    y += 6;
  }
  logAxis(root, y + 4);
  void report;
  return root;
}

/** Guest RAM (and hotplug space up to maxmem), and which part each window maps. */
export function ramPicture(report: RunReport, phbs: PhbPicture[]): SVGSVGElement {
  const ram = BigInt(report.machine.ram);
  const maxmem = report.machine.maxmem ? BigInt(report.machine.maxmem) : ram;
  // Hotplug space starts at RAM rounded up to 1 GiB (as QEMU).
  const hotplugBase = maxmem > ram ? (ram + (1n << 30n) - 1n) & ~((1n << 30n) - 1n) : ram;
  const top = maxmem > ram ? hotplugBase + (maxmem - ram) : ram;
  const windows = phbs.flatMap((p) => p.windows.map((w) => ({ phb: p, w })));
  const root = svg('ram', 70 + windows.length * 26 + 20);
  const x = (a: bigint) => LEFT + Number((a * 100000n) / (top === 0n ? 1n : top)) * (PLOT / 100000);
  root.append(
    el('text', { x: 4, y: 28, class: 'label strong' }, 'guest RAM'),
    titled(
      el('rect', { x: x(0n), y: 14, width: x(ram) - x(0n), height: 20, class: 'ram' }),
      `RAM ${size(ram)}`,
    ),
    el('text', { x: x(0n) + 4, y: 28, class: 'label inverse' }, `RAM ${size(ram)}`),
  );
  if (maxmem > ram) {
    root.append(
      titled(
        el('rect', {
          x: x(hotplugBase),
          y: 14,
          width: x(top) - x(hotplugBase),
          height: 20,
          class: 'hotplug',
        }),
        `hotplug space ${formatHex(hotplugBase)} + ${size(maxmem - ram)} (maxmem ${size(maxmem)})`,
      ),
      el('text', { x: x(hotplugBase) + 4, y: 28, class: 'label' }, `hotplug (maxmem ${size(maxmem)})`),
    );
  }
  root.append(el('text', { x: LEFT + PLOT, y: 48, class: 'tick', 'text-anchor': 'end' }, formatHex(top)));
  root.append(el('text', { x: LEFT, y: 48, class: 'tick' }, '0x0'));
  let y = 58;
  for (const { phb, w } of windows) {
    root.append(el('text', { x: 4, y: y + 14, class: 'label' }, `PHB ${phb.index} ${w.liobn}`));
    root.append(el('rect', { x: LEFT, y: y + 2, width: PLOT, height: 16, class: 'lane' }));
    let covered = 0n;
    for (const r of w.ram) {
      const start = BigInt(r.ram);
      const len = BigInt(r.size);
      covered += len;
      const a = x(start > top ? top : start);
      const b = x(start + len > top ? top : start + len);
      root.append(
        titled(
          el('rect', { x: a, y: y + 2, width: Math.max(b - a, 1.5), height: 16, class: 'mapped' }),
          `RAM ${r.ram} + ${size(len)} at bus ${r.bus}`,
        ),
      );
    }
    root.append(
      el(
        'text',
        { x: LEFT + PLOT - 4, y: y + 14, class: 'label', 'text-anchor': 'end' },
        w.ram.length === 0
          ? 'maps nothing'
          : `maps ${size(covered)}${w.ramTruncated ? ' (first ranges)' : ''}`,
      ),
    );
    y += 26;
  }
  return root;
}

function heat(f: number): string {
  if (f === 0) return '#eef1f5';
  const l = 85 - Math.round(f * 55);
  return `hsl(20 85% ${l}%)`;
}

/** Each window's TCE occupancy: a strip of buckets, darker where more entries are in use. */
export function heatPicture(phbs: PhbPicture[]): SVGSVGElement {
  const windows = phbs.flatMap((p) => p.windows.map((w) => ({ phb: p, w })));
  const root = svg('tce-heat', 20 + windows.length * 30);
  let y = 10;
  for (const { phb, w } of windows) {
    root.append(el('text', { x: 4, y: y + 14, class: 'label' }, `PHB ${phb.index} ${w.liobn}`));
    const cell = PLOT / Math.max(1, w.buckets.length);
    w.buckets.forEach((n, i) => {
      const cap = Math.min(w.bucketSize, w.entries - i * w.bucketSize);
      root.append(
        titled(
          el('rect', { x: LEFT + i * cell, y: y + 2, width: cell + 0.5, height: 18, fill: heat(n / cap) }),
          `entries ${i * w.bucketSize}..${i * w.bucketSize + cap - 1}: ${n} of ${cap} in use`,
        ),
      );
    });
    y += 30;
  }
  return root;
}

/** The host IOMMU's windows beside the guest's, and the pre-registered memory. */
export function hostPicture(report: RunReport, phbs: PhbPicture[]): SVGSVGElement | undefined {
  const host = report.host;
  if (!host) return undefined;
  const guest = phbs.flatMap((p) => p.windows);
  const root = svg('host', 70 + (guest.length + host.windows.length + host.prereg.length) * 26 + 40);
  root.append(el('text', { x: 4, y: 16, class: 'label strong' }, `host IOMMU (${host.config})`));
  let y = 26;
  const row = (label: string, start: bigint, bytes: bigint, cls: string, text: string) => {
    const x1 = logX(start);
    const x2 = Math.max(logX(start + bytes), x1 + 3);
    root.append(
      el('text', { x: 4, y: y + 14, class: 'label' }, label),
      titled(el('rect', { x: x1, y: y + 2, width: x2 - x1, height: 16, class: cls }), text),
      el('text', { x: Math.min(x2 + 6, WIDTH - 280), y: y + 14, class: 'label' }, text),
    );
    y += 26;
  };
  for (const w of guest) {
    const bytes = BigInt(w.entries) << BigInt(w.pageShift);
    row(
      `guest ${w.liobn}`,
      BigInt(w.busOffset),
      bytes,
      'window ddw',
      `${w.busOffset}: ${size(bytes)}, ${size(1n << BigInt(w.pageShift))} pages`,
    );
  }
  for (const w of host.windows) {
    row(
      'host window',
      BigInt(w.startAddr),
      BigInt(w.size),
      'window host',
      `${w.startAddr}: ${size(BigInt(w.size))}, ${size(1n << BigInt(w.pageShift))} pages, ${w.levels} level${w.levels === 1 ? '' : 's'}`,
    );
  }
  for (const p of host.prereg) {
    row(
      'pre-registered',
      BigInt(p.vaddr),
      BigInt(p.size),
      'prereg',
      `${size(BigInt(p.size))} at host VA ${p.vaddr}`,
    );
  }
  logAxis(root, y + 4);
  y += 40;
  root.append(
    el(
      'text',
      { x: 4, y: y - 4, class: 'label' },
      `${host.mappings} host IOMMU pages mapped${host.errors.length > 0 ? `; errors: ${host.errors.join('; ')}` : ''}`,
    ),
  );
  return root;
}

/** One step of a negotiation, read from the report's reasons. */
interface Step {
  kind: string;
  text: string;
  code?: string;
}

function stepOf(reason: string): Step {
  const code = /returned (-?\d+)/.exec(reason)?.[1] ?? /\bstatus (-?\d+)/.exec(reason)?.[1];
  const kind = /^query/.test(reason)
    ? 'query'
    : /^created|create/.test(reason)
      ? 'create'
      : /remov/.test(reason)
        ? 'remove'
        : /reset/.test(reason)
          ? 'reset'
          : /page size/.test(reason)
            ? 'page size'
            : /lrdr|RAM|window of/.test(reason)
              ? 'size'
              : 'note';
  return { kind, text: reason, ...(code !== undefined ? { code } : {}) };
}

function wrap(text: string, chars: number): string[] {
  const out: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line !== '' && line.length + word.length + 1 > chars) {
      out.push(line);
      line = word;
    } else line = line === '' ? word : `${line} ${word}`;
  }
  if (line !== '') out.push(line);
  return out;
}

/** The guest's negotiation per PE: query -> create -> populate, with codes and the report's reasons. */
export function negotiationPicture(report: RunReport, phbs: PhbPicture[]): SVGSVGElement {
  const decisions = report.guest?.decisions ?? [];
  const blocks: { title: string; steps: Step[] }[] = decisions.map((d) => {
    const phb = phbs.find((p) => p.buid === d.buid);
    const steps = d.reasons.map(stepOf);
    for (const w of phb?.windows ?? []) {
      const mapped = report.phbs
        .find((p) => p.buid === d.buid)
        ?.windows.find((x) => x.liobn === w.liobn)?.mapped;
      steps.push({ kind: 'populate', text: `LIOBN ${w.liobn}: ${mapped ?? 0} of ${w.entries} TCEs in use` });
    }
    return { title: `PE ${d.pe}: ${d.outcome} — ${d.summary}`, steps };
  });
  const root = svg('negotiation', 0);
  let y = 18;
  if (!report.guest) root.append(el('text', { x: 4, y, class: 'label' }, 'no guest (--guest none)'));
  for (const b of blocks) {
    for (const l of wrap(b.title, 140)) {
      root.append(el('text', { x: 4, y, class: 'label strong' }, l));
      y += 16;
    }
    b.steps.forEach((s, i) => {
      const text = wrap(s.text, 110);
      const h = text.length * 16 + 4;
      root.append(
        el('rect', {
          x: 20,
          y: y - 12,
          width: 110,
          height: h - 2,
          rx: 4,
          class: `step ${s.kind.replace(' ', '-')}`,
        }),
        el('text', { x: 26, y: y + 2, class: 'label strong' }, s.kind),
      );
      if (s.code !== undefined) {
        root.append(el('text', { x: 124, y: y + 2, class: 'label code', 'text-anchor': 'end' }, s.code));
      }
      if (i > 0) root.append(el('line', { x1: 75, x2: 75, y1: y - 16, y2: y - 12, class: 'arrow' }));
      for (const t of text) {
        root.append(el('text', { x: 140, y: y + 2, class: 'label' }, t));
        y += 16;
      }
      y += 4;
    });
    y += 12;
  }
  // Sized to what was drawn.
  root.setAttribute('viewBox', `0 0 ${WIDTH} ${y}`);
  root.setAttribute('height', String(y));
  return root;
}

/** The memory tree (info mtree), collapsible. */
export function mtreePicture(mtree: MtreeReport): HTMLElement {
  const root = document.createElement('div');
  root.dataset.picture = 'mtree';
  const region = (r: MtreeRegion, depth: number): HTMLElement => {
    const label = `${r.start}-${r.end} (prio ${r.priority}, ${r.type}): ${r.name}${
      r.alias ? ` @${r.alias.target} ${r.alias.offset}` : ''
    }${r.enabled ? '' : ' [disabled]'}`;
    if (r.subregions.length === 0) {
      const leaf = document.createElement('div');
      leaf.className = 'leaf';
      leaf.textContent = label;
      return leaf;
    }
    const details = document.createElement('details');
    details.open = depth < 2;
    const summary = document.createElement('summary');
    summary.textContent = label;
    details.append(summary, ...r.subregions.map((c) => region(c, depth + 1)));
    return details;
  };
  for (const as of mtree.addressSpaces) {
    const details = document.createElement('details');
    details.open = true;
    const summary = document.createElement('summary');
    summary.className = 'strong';
    summary.textContent = `address-space: ${as.name}`;
    details.append(summary);
    if (as.tree) details.append(region(as.tree, 0));
    root.append(details);
  }
  return root;
}
