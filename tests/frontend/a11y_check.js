// In-page accessibility check of the dashboard (axe is not available offline).
// Evaluated by tests/frontend/test_dashboard.py; returns {unnamed, lowContrast}.
() => {
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length)
    && getComputedStyle(el).visibility !== 'hidden';
  const nameOf = (el) => {
    const by = el.getAttribute('aria-labelledby');
    if (by) return by.split(/\s+/).map((id) => document.getElementById(id)?.textContent || '').join(' ').trim();
    if (el.getAttribute('aria-label')) return el.getAttribute('aria-label').trim();
    const labels = el.labels ? [...el.labels].map((l) => l.textContent).join(' ').trim() : '';
    if (labels) return labels;
    if (el.tagName === 'BUTTON' || el.tagName === 'A') return el.textContent.trim();
    return (el.getAttribute('title') || '').trim();
  };
  const describe = (el) => el.id ? `#${el.id}` : `${el.tagName.toLowerCase()}[${el.getAttribute('name') || el.className || ''}]`;
  const unnamed = [...document.querySelectorAll('input, select, textarea, button, a[href], [tabindex]:not([tabindex="-1"])')]
    .filter((el) => visible(el) && !(el instanceof SVGElement) && !el.classList.contains('skip') && !nameOf(el))
    .map(describe);
  const namedSvg = [...document.querySelectorAll('svg [tabindex]')].filter((el) => !nameOf(el)).map((el) => el.outerHTML.slice(0, 80));

  const rgba = (text) => { const v = text.match(/[\d.]+/g).map(Number); return [v[0], v[1], v[2], v.length > 3 ? v[3] : 1]; };
  const lum = ([r, g, b]) => { const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const behind = (el) => {
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
      const c = rgba(getComputedStyle(node).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let colour = [255, 255, 255];
    for (const [r, g, b, a] of layers.reverse()) colour = [r * a + colour[0] * (1 - a), g * a + colour[1] * (1 - a), b * a + colour[2] * (1 - a)];
    return colour;
  };
  const low = [];
  for (const el of document.querySelectorAll('body *')) {
    if (el instanceof SVGElement || !visible(el) || el.closest(':disabled')) continue;
    const text = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join('').trim();
    if (!text) continue;
    const fg = rgba(getComputedStyle(el).color), bg = behind(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    if (ratio < 4.5) low.push(`${describe(el)} "${text.slice(0, 30)}" ${ratio.toFixed(2)}:1`);
  }
  return {unnamed: unnamed.concat(namedSvg), lowContrast: low};
}
