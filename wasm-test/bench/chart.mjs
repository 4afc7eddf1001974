// make bench: the ratios as a bar chart (SVG), for the README beside the table. Written by hand:
// a few rectangles and labels need no plotting library.

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/**
 * Horizontal bars, one per row: `{label, value, lo, hi, kind}` where value is a ratio (median),
 * lo–hi its range over rounds, kind 'gatehouse' | 'seeds' | 'native' | 'floor' (the colour).
 * Rows are drawn in groups, each with a heading: [[heading, rows], ...].
 */
export function ratioChart(groups, { title, note }) {
  const colours = {
    gatehouse: '#2f6fb5', seeds: '#c0504d', native: '#7f7f7f', floor: '#b7b7b7',
  };
  const labelW = 430;
  const plotW = 420;
  const rowH = 22;
  const max = Math.max(1.05, ...groups.flatMap(([, rows]) => rows.map((r) => r.hi ?? r.value)));
  const x = (v) => labelW + (v / max) * plotW;
  let y = 44;
  const parts = [];
  for (const [heading, rows] of groups) {
    parts.push(`<text x="8" y="${y + 14}" font-weight="bold">${esc(heading)}</text>`);
    y += rowH;
    for (const r of rows) {
      const w = Math.max(1, x(r.value) - labelW);
      parts.push(
        `<text x="${labelW - 8}" y="${y + 15}" text-anchor="end">${esc(r.label)}</text>`,
        `<rect x="${labelW}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="${colours[r.kind] ?? '#999'}"/>`,
      );
      if (Number.isFinite(r.lo) && Number.isFinite(r.hi)) {
        parts.push(`<line x1="${x(r.lo).toFixed(1)}" x2="${x(r.hi).toFixed(1)}" y1="${y + rowH / 2}" y2="${y + rowH / 2}" stroke="#222" stroke-width="1"/>`);
      }
      parts.push(`<text x="${(x(r.value) + 6).toFixed(1)}" y="${y + 15}">${r.value.toFixed(2)}</text>`);
      y += rowH;
    }
    y += 8;
  }
  const height = y + 40;
  const width = labelW + plotW + 60;
  const one = x(1);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#fff"/>
<text x="8" y="22" font-size="15" font-weight="bold">${esc(title)}</text>
<line x1="${one.toFixed(1)}" x2="${one.toFixed(1)}" y1="36" y2="${y}" stroke="#444" stroke-dasharray="4 3"/>
<text x="${one.toFixed(1)}" y="${y + 14}" text-anchor="middle">1.0 = no filter</text>
${parts.join('\n')}
<text x="8" y="${height - 10}" fill="#555">${esc(note)}</text>
</svg>
`;
}
